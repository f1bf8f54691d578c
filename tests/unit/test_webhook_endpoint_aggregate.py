"""WebhookEndpoint aggregate and type patterns, given/when/then on events (no I/O)."""

from __future__ import annotations

import uuid

import pytest

from domain.shared.errors import ValidationFailed
from domain.webhooks import rules
from domain.webhooks.aggregate import WebhookEndpoint
from domain.webhooks.commands import RegisterWebhookEndpoint, ReviseWebhookEndpoint, RotateWebhookSecret
from domain.webhooks.errors import WebhookEndpointNotFound
from tests.factories import FIXED_AT

T0 = FIXED_AT


def registered(**fields: object) -> WebhookEndpoint:
    cmd = RegisterWebhookEndpoint(**{"endpoint_id": uuid.uuid4(), "account_id": uuid.uuid4(),  # type: ignore[arg-type]
                                     "url": " https://h.example/x ", "types": ["market.*"], "description": "",
                                     "enabled": True, "sealed_secret": "mmseal1.k.s0", **fields})
    return WebhookEndpoint.register(cmd, T0)


def test_register_records_one_event_with_normalised_fields() -> None:
    e = registered(types=["market.*", " task.created ", "market.*"])
    (event,) = e.collect_events()
    assert isinstance(event, WebhookEndpoint.Registered)
    assert e.url == "https://h.example/x" and e.types == ["market.*", "task.created"] and e.version == 1


@pytest.mark.parametrize("field,value", [
    ("url", "ftp://h.example"), ("url", "https://"), ("url", "https://a:b@h.example"), ("url", "https://h:99999"),
    ("types", []), ("types", ["Market"]), ("types", ["market*"]), ("types", ["*.market"]),
    ("description", "x" * 2001),
])
def test_invalid_definitions_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationFailed):
        registered(**{field: value})


def test_a_revision_that_changes_nothing_records_nothing() -> None:
    e = registered()
    e.collect_events()
    e.revise(ReviseWebhookEndpoint(enabled=True, url="https://h.example/x"), T0)
    assert e.collect_events() == []
    e.revise(ReviseWebhookEndpoint(enabled=False), T0)
    (event,) = e.collect_events()
    assert isinstance(event, WebhookEndpoint.Revised) and event.changed == ["enabled"] and not e.enabled


def test_rotation_keeps_the_previous_sealed_secret_until_the_given_time() -> None:
    e = registered()
    e.rotate_secret(RotateWebhookSecret(sealed_secret="mmseal1.k.s1", previous_valid_until="2030-01-01T00:00:00+00:00"),
                    T0)
    assert e.sealed_secret == "mmseal1.k.s1" and e.previous_sealed_secret == "mmseal1.k.s0"
    assert e.previous_valid_until == "2030-01-01T00:00:00+00:00"


def test_disabling_for_failures_is_idempotent_and_a_deleted_endpoint_refuses_commands() -> None:
    e = registered()
    e.collect_events()
    e.disable_for_failures("failing since ...", T0)
    e.disable_for_failures("again", T0)
    assert len(e.collect_events()) == 1 and not e.enabled
    e.delete(T0)
    with pytest.raises(WebhookEndpointNotFound):
        e.revise(ReviseWebhookEndpoint(enabled=True), T0)
    with pytest.raises(WebhookEndpointNotFound):
        e.delete(T0)


@pytest.mark.parametrize("types,name,hit", [
    (["*"], "task.created", True), (["market.*"], "market.order.created", True),
    (["market.*"], "marketing.x", False), (["market.payment.*"], "market.order.created", False),
    (["task.created"], "task.created", True), (["task.created"], "task.created-x", False),
])
def test_type_patterns(types: list[str], name: str, hit: bool) -> None:
    assert rules.matches(types, name) is hit
