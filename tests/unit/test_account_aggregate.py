"""Account aggregate, given/when/then on events: opening accounts, issuing and revoking API keys."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import msgspec
import pytest

from app.api.schemas_accounts import IssueKeyRequest, OpenAccountRequest
from app.store.mapper import event_type, rebuild, to_data
from app.store.types import RecordedEvent
from domain.accounts.aggregate import Account
from domain.accounts.errors import ApiKeyNotFound
from domain.shared.errors import InvalidTransition, ValidationFailed
from tests.factories import (
    FIXED_AT,
    IssueKeyArgsFactory,
    IssueKeyPayloadFactory,
    OpenAccountArgsFactory,
    OpenAccountPayloadFactory,
)

T0 = FIXED_AT
T1 = T0 + timedelta(minutes=1)
T2 = T0 + timedelta(minutes=2)


def given(events: list[Any]) -> Account:
    account: Any = None
    for event in events:
        account = event.mutate(account)
    assert isinstance(account, Account)
    return account


def opened_with(*keys: dict[str, Any], revoked: tuple[uuid.UUID, ...] = ()) -> list[Any]:
    """Past events: an account opened, these keys issued, then these key ids revoked."""
    account = Account.open(**OpenAccountArgsFactory())
    for key in keys:
        account.issue_key(**key)
    for key_id in revoked:
        account.revoke_key(key_id, T1)
    return account.collect_events()


def then(account: Account, *types: type) -> list[Any]:
    events = account.collect_events()
    assert [type(e) for e in events] == list(types)
    return events


def test_open_records_opened() -> None:
    args = OpenAccountArgsFactory(is_admin=True)
    account = Account.open(**args)
    [event] = then(account, Account.Opened)
    assert (event.originator_id, event.originator_version, event.timestamp) == (args["account_id"], 1, T0)
    assert (event.name, event.is_admin) == (args["name"], True)
    assert (account.name, account.is_admin, account.keys) == (args["name"], True, {})


@pytest.mark.parametrize("name", ["", "  ", "\n"])
def test_open_refuses_a_blank_name(name: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        Account.open(**OpenAccountArgsFactory(name=name))
    assert caught.value.code == "VALIDATION_ERROR"
    assert caught.value.extra == {"field": "name"}


def test_issue_key_records_the_hash_never_a_plaintext() -> None:
    account = given(opened_with())
    key = IssueKeyArgsFactory(at=T1)
    account.issue_key(**key)
    [event] = then(account, Account.ApiKeyIssued)
    assert (event.key_id, event.key_hash, event.prefix, event.label) == (
        key["key_id"], key["key_hash"], key["prefix"], key["label"],
    )
    assert (event.timestamp, event.originator_version) == (T1, 2)
    assert len(event.key_hash) == 64  # a sha256 hex digest
    assert account.keys == {key["key_id"]: {
        "hash": key["key_hash"], "prefix": key["prefix"], "label": key["label"], "revoked": False,
    }}


def test_the_same_key_under_another_id_records_nothing() -> None:
    # The read model keeps one row per key hash: a second record of one key would stop its projection.
    account = given(opened_with())
    key = IssueKeyArgsFactory(at=T1)
    account.issue_key(**key)
    account.collect_events()
    account.issue_key(**{**key, "key_id": uuid.uuid4()})
    assert account.collect_events() == []


def test_issuing_the_same_key_id_again_is_a_retry_and_records_nothing() -> None:
    key = IssueKeyArgsFactory()
    account = given(opened_with(key))
    account.issue_key(**{**key, "label": "retried", "at": T2})
    then(account)
    assert account.keys[key["key_id"]]["hash"] == key["key_hash"]


def test_reissuing_a_revoked_key_id_does_not_bring_it_back() -> None:
    key = IssueKeyArgsFactory()
    account = given(opened_with(key, revoked=(key["key_id"],)))
    account.issue_key(**{**key, "at": T2})
    then(account)
    assert account.keys[key["key_id"]]["revoked"] is True


def test_revoke_key_records_revocation() -> None:
    first, second = IssueKeyArgsFactory(), IssueKeyArgsFactory()
    account = given(opened_with(first, second))
    account.revoke_key(first["key_id"], T2)
    [event] = then(account, Account.ApiKeyRevoked)
    assert (event.key_id, event.timestamp, event.originator_version) == (first["key_id"], T2, 4)
    assert account.keys[first["key_id"]]["revoked"] is True
    assert account.keys[second["key_id"]]["revoked"] is False


def test_revoke_an_unknown_key_is_not_found() -> None:
    account = given(opened_with(IssueKeyArgsFactory()))
    with pytest.raises(ApiKeyNotFound) as caught:
        account.revoke_key(uuid.uuid4(), T2)
    assert caught.value.code == "NOT_FOUND"
    then(account)


def test_revoke_twice_is_an_invalid_transition() -> None:
    key = IssueKeyArgsFactory()
    account = given(opened_with(key, revoked=(key["key_id"],)))
    with pytest.raises(InvalidTransition) as caught:
        account.revoke_key(key["key_id"], T2)
    assert caught.value.code == "INVALID_STATE_TRANSITION"
    then(account)


def test_replay_through_the_mapper_rebuilds_the_same_state() -> None:
    first, second = IssueKeyArgsFactory(), IssueKeyArgsFactory()
    events = opened_with(first, second, revoked=(second["key_id"],))
    original = given(events)
    stored = [
        RecordedEvent(
            position=i + 1, tx_id=3, event_id=uuid.uuid4(), stream_id=e.originator_id, stream_type=Account.TOPIC,
            version=e.originator_version, type=event_type(e), metadata={}, recorded_at=T2,
            data=msgspec.json.decode(msgspec.json.encode(to_data(e))),
        )
        for i, e in enumerate(events)
    ]
    rebuilt = rebuild(stored)
    assert isinstance(rebuilt, Account)
    assert (rebuilt.id, rebuilt.version, rebuilt.name, rebuilt.is_admin, rebuilt.keys, rebuilt.modified_on) == (
        original.id, original.version, original.name, original.is_admin, original.keys, original.modified_on,
    )
    assert all(isinstance(k, uuid.UUID) for k in rebuilt.keys)  # not the JSON strings


def test_account_payload_factories_match_the_api_schemas() -> None:
    opened = msgspec.convert(OpenAccountPayloadFactory(isAdmin=True), OpenAccountRequest)
    assert opened.is_admin is True
    assert msgspec.convert(IssueKeyPayloadFactory(), IssueKeyRequest).label
