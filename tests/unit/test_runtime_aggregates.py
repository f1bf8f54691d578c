"""Runtime aggregates, given/when/then on events: endpoints (manual and leased) and machine agents."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from app.crypto import agent_id_in, digest, new_agent_token
from domain.runtime import rules
from domain.runtime.agent import ACTIVE as AGENT_ACTIVE
from domain.runtime.agent import REVOKED, MachineAgent
from domain.runtime.commands import AGENT, MANUAL, EnrollAgent, RecordHeartbeat, UpsertEndpoint
from domain.runtime.endpoint import ACTIVE, DELETED, EXPIRED, RuntimeEndpoint, endpoint_id
from domain.runtime.errors import AgentAuthInvalid, AgentPairingInactive, AgentPolicyDenied, EndpointNotFound
from domain.shared.errors import InvalidTransition, ValidationFailed
from tests.factories import FIXED_AT

T0, T1, T2 = FIXED_AT, FIXED_AT + timedelta(seconds=10), FIXED_AT + timedelta(seconds=60)
ACCOUNT, MACHINE, AGENT_ID = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def manual(url: str = "https://node.example.net", **kw: object) -> UpsertEndpoint:
    return UpsertEndpoint(url=url, source=MANUAL, **kw)  # type: ignore[arg-type]


def leased(until: object = T1 + timedelta(seconds=30)) -> UpsertEndpoint:
    return UpsertEndpoint(url="https://agent.example.net", source=AGENT, agent_id=AGENT_ID,
                          lease_expires_at=until)  # type: ignore[arg-type]


def events_of(aggregate: object) -> list[str]:
    return [type(e).__name__ for e in aggregate.collect_events()]  # type: ignore[attr-defined]


# --- endpoints -----------------------------------------------------------------------------------


def test_open_lower_cases_the_key_and_derives_the_stream_id() -> None:
    e = RuntimeEndpoint.open(ACCOUNT, MACHINE, "OpenAI", manual(auth_token="t"), T0)
    assert e.id == endpoint_id(MACHINE, "openai") and e.provider_key == "openai"
    assert e.status == ACTIVE and e.has_auth_token and e.source == MANUAL
    assert events_of(e) == ["Opened"]


def test_every_upsert_records_even_when_only_the_lease_moves() -> None:
    e = RuntimeEndpoint.open(ACCOUNT, MACHINE, "gpu", leased(), T0)
    e.collect_events()
    e.upsert(leased(), T1)
    e.upsert(leased(T2 + timedelta(seconds=30)), T2)
    assert events_of(e) == ["Upserted", "Upserted"] and e.lease_expires_at == T2 + timedelta(seconds=30)


def test_expire_only_a_live_lease_that_ran_out() -> None:
    e = RuntimeEndpoint.open(ACCOUNT, MACHINE, "gpu", leased(until=T1), T0)
    e.collect_events()
    assert e.expire(T1 - timedelta(microseconds=1)) is False  # not yet
    assert e.expire(T1) is True and e.status == EXPIRED
    assert e.expire(T2) is False  # already expired: nothing twice
    assert events_of(e) == ["Expired"]
    e.upsert(leased(until=T2 + timedelta(seconds=5)), T2)  # a later heartbeat revives it
    assert e.status == ACTIVE


def test_a_manual_endpoint_never_expires() -> None:
    e = RuntimeEndpoint.open(ACCOUNT, MACHINE, "gpu", manual(), T0)
    e.collect_events()
    assert e.expire(T2 + timedelta(days=365)) is False and events_of(e) == []


def test_delete_then_not_found_then_revive() -> None:
    e = RuntimeEndpoint.open(ACCOUNT, MACHINE, "gpu", manual(auth_token="secret"), T0)
    e.delete(T1)
    assert e.status == DELETED and e.auth_token is None and not e.exists
    with pytest.raises(EndpointNotFound):
        e.delete(T2)
    e.upsert(manual(), T2)
    assert e.exists and events_of(e) == ["Opened", "Deleted", "Upserted"]


@pytest.mark.parametrize("cmd", [
    UpsertEndpoint(url="https://x.example", source=MANUAL, agent_id=AGENT_ID),
    UpsertEndpoint(url="https://x.example", source=AGENT),
    UpsertEndpoint(url="https://x.example", source="other"),
    UpsertEndpoint(url="https://x.example", source=MANUAL, auth_token=""),
    UpsertEndpoint(url="https://x.example", source=MANUAL, metadata={f"k{i}": i for i in range(33)}),
], ids=["manual-with-agent", "agent-without-lease", "unknown-source", "empty-token", "too-much-metadata"])
def test_inconsistent_upserts_are_refused(cmd: UpsertEndpoint) -> None:
    with pytest.raises(ValidationFailed):
        RuntimeEndpoint.open(ACCOUNT, MACHINE, "gpu", cmd, T0)


@pytest.mark.parametrize("url", ["http://localhost:8080/x", "https://10.0.0.1", "https://[::1]:443/run",
                                 "https://a-b.example.co.uk/path?q=1#f"])
def test_good_urls_pass(url: str) -> None:
    rules.check_url(url)


# --- agents --------------------------------------------------------------------------------------


def enrolled(keys: list[str] | None = None, token: str = "mma_x") -> MachineAgent:
    agent = MachineAgent.enroll(EnrollAgent(
        agent_id=AGENT_ID, account_id=ACCOUNT, machine_id=MACHINE, name="edge", lease_seconds=30,
        allowed_provider_keys=keys if keys is not None else ["OpenAI", "gpu", "gpu"], token_hash=digest(token),
    ), T0)
    return agent


def test_enrol_normalises_allowed_keys() -> None:
    agent = enrolled()
    assert agent.allowed_provider_keys == ["gpu", "openai"] and agent.status == "enrolled"
    assert events_of(agent) == ["Enrolled"]


def test_authenticate_checks_the_token_before_the_pairing() -> None:
    agent = enrolled(token="right")
    agent.authenticate(digest("right"))
    with pytest.raises(AgentAuthInvalid):
        agent.authenticate(digest("wrong"))
    agent.revoke("gone", T1)
    with pytest.raises(AgentAuthInvalid):  # a stranger learns nothing about the pairing
        agent.authenticate(digest("wrong"))
    with pytest.raises(AgentPairingInactive):
        agent.authenticate(digest("right"))


def test_heartbeat_marks_active_and_policy_limits_keys() -> None:
    agent = enrolled()
    agent.collect_events()
    agent.record_heartbeat(RecordHeartbeat(provider_keys=["gpu"], lease_expires_at=T2), T1)
    assert agent.status == AGENT_ACTIVE and agent.last_seen_at == T1 and agent.last_lease_expires_at == T2
    with pytest.raises(AgentPolicyDenied) as refused:
        agent.record_heartbeat(RecordHeartbeat(provider_keys=["gpu", "other"], lease_expires_at=T2), T2)
    assert refused.value.extra["denied"] == ["other"]
    assert events_of(agent) == ["HeartbeatReceived"]


def test_revoked_agent_cannot_beat_or_be_revoked_again() -> None:
    agent = enrolled()
    agent.revoke(None, T1)
    assert agent.status == REVOKED
    with pytest.raises(AgentPairingInactive):
        agent.record_heartbeat(RecordHeartbeat(provider_keys=[], lease_expires_at=T2), T2)
    with pytest.raises(InvalidTransition):
        agent.revoke(None, T2)


@pytest.mark.parametrize("seconds", [0, 86_401])
def test_lease_bounds(seconds: int) -> None:
    with pytest.raises(ValidationFailed):
        rules.check_lease_seconds(seconds)


def test_agent_tokens_name_their_agent_and_nothing_else_parses() -> None:
    agent_id = uuid.uuid4()
    token = new_agent_token(agent_id)
    assert agent_id_in(token) == agent_id and token != new_agent_token(agent_id)
    for bad in ["", "mma_", f"mma_{agent_id.hex}", f"mma_{agent_id.hex}_", "mm_abc_def", f"mma_{'z' * 32}_s",
                "mma_" + "a" * 300]:
        assert agent_id_in(bad) is None, bad


def test_a_manual_put_that_changes_nothing_records_nothing() -> None:
    e = RuntimeEndpoint.open(ACCOUNT, MACHINE, "gpu", manual(auth_token="t", metadata={"a": 1}), T0)
    e.collect_events()
    e.upsert(manual(auth_token="t", metadata={"a": 1}), T1)
    assert events_of(e) == []
    e.upsert(manual(auth_token="other", metadata={"a": 1}), T1)  # a new token is a change
    assert events_of(e) == ["Upserted"]
