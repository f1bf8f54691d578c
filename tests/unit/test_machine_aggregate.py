"""Machine aggregate, given/when/then on events: given past events, when a decision runs, then these events."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import msgspec
import pytest
from eventsourcing.domain import Aggregate

from app.api.schemas_machines import RegisterMachineRequest
from app.crypto import verify_ed25519
from app.store.mapper import event_type, rebuild, to_data, to_domain_event
from app.store.types import RecordedEvent
from domain.machines.aggregate import ACTIVE, REGISTERED, RETIRED, SUSPENDED, Machine
from domain.machines.commands import ChangeStatus, RegisterMachine, VerifyIdentity
from domain.machines.errors import (
    ChallengeExpired,
    ChallengeMissing,
    IdentityAlreadyVerified,
    MachineNotActivated,
    MachineNotActive,
)
from domain.machines.rules import MAX_LABELS
from domain.shared.errors import DomainError, InvalidTransition, ValidationFailed
from tests.factories import (
    FIXED_AT,
    ChangeStatusCommandFactory,
    IssueIdentityChallengeFactory,
    MachineKeyFactory,
    MachineRegistrationFactory,
    RegisterMachineCommandFactory,
    RegisterMachinePayloadFactory,
    ReviseProfileCommandFactory,
    VerifyIdentityCommandFactory,
)

T0 = FIXED_AT
T1 = T0 + timedelta(minutes=1)
T2 = T0 + timedelta(minutes=2)
CHALLENGE = IssueIdentityChallengeFactory(expires_at=T0 + timedelta(minutes=5))
SIGNATURE = base64.b64encode(b"\x07" * 64).decode()  # well-formed; only the fake check decides if it is valid


class FakeCheck:
    """A SignatureCheck stand-in that answers `result` and remembers what it was asked."""

    def __init__(self, result: bool) -> None:
        self.result = result
        self.calls: list[tuple[str, bytes, bytes]] = []

    def __call__(self, public_key: str, message: bytes, signature: bytes) -> bool:
        self.calls.append((public_key, message, signature))
        return self.result


# --- given: past events, built by running decisions and collecting what they record ---------------


def issue(m: Machine) -> None:
    m.issue_challenge(CHALLENGE, T0)


def verify(m: Machine) -> None:
    m.verify_identity(VerifyIdentity(challenge_id=CHALLENGE.challenge_id, signature=SIGNATURE), T1, FakeCheck(True))


def activate(m: Machine) -> None:
    m.activate(T1)


def suspend(m: Machine) -> None:
    m.suspend(ChangeStatus(reason="maintenance"), T1)


def retire(m: Machine) -> None:
    m.retire(ChangeStatus(), T1)


def history(*decisions: Callable[[Machine], None], cmd: RegisterMachine | None = None) -> list[Any]:
    machine = Machine.register(cmd or RegisterMachineCommandFactory(), T0)
    for decide in decisions:
        decide(machine)
    return machine.collect_events()


def given(events: list[Any]) -> Machine:
    """Replay past events into a fresh aggregate with nothing pending, as a load from the store would."""
    machine: Any = None
    for event in events:
        machine = event.mutate(machine)
    assert isinstance(machine, Machine)
    return machine


VERIFIED = (issue, verify)
ACTIVE_ = (*VERIFIED, activate)
SUSPENDED_ = (*ACTIVE_, suspend)


def then(machine: Machine, *types: type) -> list[Any]:
    events = machine.collect_events()
    assert [type(e) for e in events] == list(types)
    return events


def raises(error: type[DomainError], code: str, machine: Machine, decide: Callable[[], object]) -> DomainError:
    """The decision is refused with `code` and records nothing."""
    with pytest.raises(error) as caught:
        decide()
    assert caught.value.code == code
    assert machine.collect_events() == []
    return caught.value


# --- register -------------------------------------------------------------------------------------


def test_register_records_registered_with_the_command_fields() -> None:
    cmd = RegisterMachineCommandFactory()
    machine = Machine.register(cmd, T0)
    [event] = then(machine, Machine.Registered)
    assert event.originator_id == cmd.machine_id
    assert event.originator_version == 1
    assert event.timestamp == T0
    assert (event.account_id, event.name, event.description, event.public_key, event.labels) == (
        cmd.account_id, cmd.name, cmd.description, cmd.public_key, cmd.labels,
    )
    assert machine.status == REGISTERED
    assert machine.challenge is None
    assert not machine.identity_verified


def test_register_copies_labels_so_the_command_cannot_alias_state() -> None:
    cmd = RegisterMachineCommandFactory()
    machine = Machine.register(cmd, T0)
    cmd.labels["injected"] = "later"
    assert "injected" not in machine.labels


@pytest.mark.parametrize("name", ["", "   ", "\t\n"])
def test_register_refuses_a_blank_name(name: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        Machine.register(RegisterMachineCommandFactory(name=name), T0)
    assert caught.value.code == "VALIDATION_ERROR"
    assert caught.value.extra["field"] == "name"


@pytest.mark.parametrize(
    ("public_key", "message"),
    [
        ("not base64!", "publicKey must be base64"),
        ("A" * 43, "publicKey must be base64"),  # bad padding
        (base64.urlsafe_b64encode(b"\xfb" * 32).decode(), "publicKey must be base64"),  # not standard base64
        (base64.b64encode(b"k" * 31).decode(), "publicKey must be a 32-byte Ed25519 key"),
        (base64.b64encode(b"k" * 33).decode(), "publicKey must be a 32-byte Ed25519 key"),
        ("", "publicKey must be a 32-byte Ed25519 key"),
    ],
)
def test_register_refuses_a_key_that_is_not_32_bytes_of_standard_base64(public_key: str, message: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        Machine.register(RegisterMachineCommandFactory(public_key=public_key), T0)
    assert caught.value.code == "VALIDATION_ERROR"
    assert caught.value.extra["field"] == "publicKey"
    assert caught.value.detail == message


@pytest.mark.parametrize("key", ["Region", "-region", "region-", "has space", "", "k" * 64, "a" * 62 + "_"])
def test_register_refuses_a_bad_label_key(key: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        Machine.register(RegisterMachineCommandFactory(labels={key: "v"}), T0)
    assert caught.value.code == "VALIDATION_ERROR"
    assert caught.value.extra["field"] == "labels"


def test_register_accepts_label_keys_at_the_limits() -> None:
    labels = {"a": "", "k" * 63: "v" * 256, "team.io/owner_1": "x"}
    [event] = then(Machine.register(RegisterMachineCommandFactory(labels=labels), T0), Machine.Registered)
    assert event.labels == labels


def test_register_refuses_a_label_value_over_256_characters() -> None:
    with pytest.raises(ValidationFailed) as caught:
        Machine.register(RegisterMachineCommandFactory(labels={"notes": "v" * 257}), T0)
    assert caught.value.extra["field"] == "labels"


def test_register_refuses_too_many_labels_but_accepts_the_maximum() -> None:
    at_limit = {f"k{i}": "v" for i in range(MAX_LABELS)}
    then(Machine.register(RegisterMachineCommandFactory(labels=at_limit), T0), Machine.Registered)
    with pytest.raises(ValidationFailed) as caught:
        Machine.register(RegisterMachineCommandFactory(labels={**at_limit, "one-more": "v"}), T0)
    assert caught.value.code == "VALIDATION_ERROR"
    assert caught.value.extra["field"] == "labels"


def test_payload_factories_produce_bodies_the_api_schema_accepts() -> None:
    registration = MachineRegistrationFactory()
    for payload in (RegisterMachinePayloadFactory(), registration.payload):
        body = msgspec.convert(payload, RegisterMachineRequest)
        Machine.register(RegisterMachineCommandFactory(public_key=body.public_key, labels=body.labels), T0)
    assert registration.payload["publicKey"] == MachineKeyFactory(private_key=registration.private_key).public_key


# --- issue challenge ------------------------------------------------------------------------------


def test_issue_challenge_records_the_challenge_and_opens_it() -> None:
    machine = given(history())
    machine.issue_challenge(CHALLENGE, T1)
    [event] = then(machine, Machine.IdentityChallengeIssued)
    assert (event.challenge_id, event.nonce, event.expires_at) == (
        CHALLENGE.challenge_id, CHALLENGE.nonce, CHALLENGE.expires_at,
    )
    assert (event.originator_version, event.timestamp) == (2, T1)
    assert machine.challenge == {"id": CHALLENGE.challenge_id, "nonce": CHALLENGE.nonce,
                                 "expires_at": CHALLENGE.expires_at}


def test_a_new_challenge_replaces_the_open_one() -> None:
    machine = given(history(issue))
    newer = IssueIdentityChallengeFactory()
    machine.issue_challenge(newer, T1)
    then(machine, Machine.IdentityChallengeIssued)
    assert machine.challenge is not None and machine.challenge["id"] == newer.challenge_id
    stale = VerifyIdentity(challenge_id=CHALLENGE.challenge_id, signature=SIGNATURE)
    raises(ChallengeMissing, "IDENTITY_CHALLENGE_MISSING", machine,
           lambda: machine.verify_identity(stale, T1, FakeCheck(True)))


def test_issue_challenge_refused_once_verified() -> None:
    machine = given(history(*VERIFIED))
    raises(IdentityAlreadyVerified, "IDENTITY_ALREADY_VERIFIED", machine,
           lambda: machine.issue_challenge(IssueIdentityChallengeFactory(), T2))


def test_issue_challenge_refused_when_retired() -> None:
    machine = given(history(retire))
    raises(InvalidTransition, "INVALID_STATE_TRANSITION", machine,
           lambda: machine.issue_challenge(IssueIdentityChallengeFactory(), T2))


# --- verify identity ------------------------------------------------------------------------------


def test_verify_with_a_good_signature_records_identity_verified() -> None:
    machine = given(history(issue))
    check = FakeCheck(True)
    machine.verify_identity(VerifyIdentity(challenge_id=CHALLENGE.challenge_id, signature=SIGNATURE), T1, check)
    [event] = then(machine, Machine.IdentityVerified)
    assert (event.challenge_id, event.timestamp, event.originator_version) == (CHALLENGE.challenge_id, T1, 3)
    assert check.calls == [(machine.public_key, CHALLENGE.nonce.encode(), base64.b64decode(SIGNATURE))]
    assert machine.identity_verified and machine.identity_verified_at == T1
    assert machine.challenge is None
    assert machine.status == REGISTERED  # verification does not activate


def test_verify_with_a_wrong_signature_records_failure_and_burns_the_challenge() -> None:
    machine = given(history(issue))
    cmd = VerifyIdentity(challenge_id=CHALLENGE.challenge_id, signature=SIGNATURE)
    machine.verify_identity(cmd, T1, FakeCheck(False))
    [event] = then(machine, Machine.IdentityVerificationFailed)
    assert event.challenge_id == CHALLENGE.challenge_id
    assert event.reason == "signature does not verify against the registered public key"
    assert machine.challenge is None
    assert not machine.identity_verified
    # a nonce is good for one attempt: the right signature now finds no open challenge
    raises(ChallengeMissing, "IDENTITY_CHALLENGE_MISSING", machine,
           lambda: machine.verify_identity(cmd, T1, FakeCheck(True)))


@pytest.mark.parametrize(
    "signature", ["not base64!", base64.b64encode(b"s" * 63).decode(), base64.b64encode(b"s" * 65).decode()]
)
def test_verify_with_a_malformed_signature_records_failure_without_checking(signature: str) -> None:
    machine = given(history(issue))
    check = FakeCheck(True)
    machine.verify_identity(VerifyIdentity(challenge_id=CHALLENGE.challenge_id, signature=signature), T1, check)
    then(machine, Machine.IdentityVerificationFailed)
    assert check.calls == []
    assert machine.challenge is None


def test_verify_with_an_unknown_challenge_id_is_refused() -> None:
    machine = given(history(issue))
    cmd = VerifyIdentityCommandFactory(signature=SIGNATURE)  # a random challenge id
    raises(ChallengeMissing, "IDENTITY_CHALLENGE_MISSING", machine,
           lambda: machine.verify_identity(cmd, T1, FakeCheck(True)))
    assert machine.challenge is not None  # the open challenge is untouched


def test_verify_without_any_challenge_is_refused() -> None:
    machine = given(history())
    cmd = VerifyIdentityCommandFactory(challenge_id=CHALLENGE.challenge_id)
    raises(ChallengeMissing, "IDENTITY_CHALLENGE_MISSING", machine,
           lambda: machine.verify_identity(cmd, T1, FakeCheck(True)))


@pytest.mark.parametrize("late", [timedelta(0), timedelta(microseconds=1), timedelta(hours=1)])
def test_verify_at_or_after_expiry_is_refused_and_records_nothing(late: timedelta) -> None:
    machine = given(history(issue))
    check = FakeCheck(True)
    cmd = VerifyIdentity(challenge_id=CHALLENGE.challenge_id, signature=SIGNATURE)
    raises(ChallengeExpired, "IDENTITY_CHALLENGE_EXPIRED", machine,
           lambda: machine.verify_identity(cmd, CHALLENGE.expires_at + late, check))
    assert check.calls == []
    assert machine.challenge is not None  # left for expire_challenge to close


def test_verify_just_before_expiry_succeeds() -> None:
    machine = given(history(issue))
    cmd = VerifyIdentity(challenge_id=CHALLENGE.challenge_id, signature=SIGNATURE)
    machine.verify_identity(cmd, CHALLENGE.expires_at - timedelta(microseconds=1), FakeCheck(True))
    then(machine, Machine.IdentityVerified)


def test_verify_when_already_verified_is_refused() -> None:
    machine = given(history(*VERIFIED))
    cmd = VerifyIdentity(challenge_id=CHALLENGE.challenge_id, signature=SIGNATURE)
    raises(IdentityAlreadyVerified, "IDENTITY_ALREADY_VERIFIED", machine,
           lambda: machine.verify_identity(cmd, T2, FakeCheck(True)))


def test_verify_when_retired_is_refused() -> None:
    machine = given(history(issue, retire))
    cmd = VerifyIdentity(challenge_id=CHALLENGE.challenge_id, signature=SIGNATURE)
    raises(InvalidTransition, "INVALID_STATE_TRANSITION", machine,
           lambda: machine.verify_identity(cmd, T1, FakeCheck(True)))


def test_verify_with_a_real_ed25519_signature() -> None:
    key = MachineKeyFactory()
    other = MachineKeyFactory()
    machine = given(history(issue, cmd=RegisterMachineCommandFactory(public_key=key.public_key)))

    forged = VerifyIdentity(challenge_id=CHALLENGE.challenge_id, signature=other.sign(CHALLENGE.nonce))
    machine.verify_identity(forged, T1, verify_ed25519)
    then(machine, Machine.IdentityVerificationFailed)

    fresh = IssueIdentityChallengeFactory(expires_at=T2 + timedelta(minutes=5))
    machine.issue_challenge(fresh, T2)
    signed = VerifyIdentity(challenge_id=fresh.challenge_id, signature=key.sign(fresh.nonce))
    machine.verify_identity(signed, T2, verify_ed25519)
    _, verified = then(machine, Machine.IdentityChallengeIssued, Machine.IdentityVerified)
    assert verified.challenge_id == fresh.challenge_id
    assert machine.identity_verified_at == T2


# --- expire challenge -----------------------------------------------------------------------------


@pytest.mark.parametrize("late", [timedelta(0), timedelta(days=1)])
def test_expire_challenge_when_due_records_expiry(late: timedelta) -> None:
    machine = given(history(issue))
    assert machine.expire_challenge(CHALLENGE.challenge_id, CHALLENGE.expires_at + late) is True
    [event] = then(machine, Machine.IdentityChallengeExpired)
    assert event.challenge_id == CHALLENGE.challenge_id
    assert event.timestamp == CHALLENGE.expires_at + late
    assert machine.challenge is None


def test_expire_challenge_before_due_does_nothing() -> None:
    machine = given(history(issue))
    assert machine.expire_challenge(CHALLENGE.challenge_id, CHALLENGE.expires_at - timedelta(microseconds=1)) is False
    then(machine)
    assert machine.challenge is not None


def test_expire_challenge_twice_does_nothing_the_second_time() -> None:
    events = history(issue)
    machine = given(events)
    assert machine.expire_challenge(CHALLENGE.challenge_id, CHALLENGE.expires_at)
    machine = given(events + machine.collect_events())
    assert machine.expire_challenge(CHALLENGE.challenge_id, CHALLENGE.expires_at) is False
    then(machine)


@pytest.mark.parametrize("past", [(), (*VERIFIED,), (issue, lambda m: m.verify_identity(
    VerifyIdentity(challenge_id=CHALLENGE.challenge_id, signature=SIGNATURE), T1, FakeCheck(False)))])
def test_expire_challenge_when_the_challenge_is_gone_does_nothing(past: tuple[Callable[[Machine], None], ...]) -> None:
    machine = given(history(*past))
    assert machine.expire_challenge(CHALLENGE.challenge_id, CHALLENGE.expires_at + timedelta(hours=1)) is False
    then(machine)


def test_expire_challenge_for_another_id_does_nothing() -> None:
    machine = given(history(issue))
    assert machine.expire_challenge(uuid.uuid4(), CHALLENGE.expires_at + timedelta(hours=1)) is False
    then(machine)
    assert machine.challenge is not None and machine.challenge["id"] == CHALLENGE.challenge_id


# --- revise profile -------------------------------------------------------------------------------


def test_revise_profile_records_all_given_fields() -> None:
    machine = given(history())
    cmd = ReviseProfileCommandFactory()
    machine.revise_profile(cmd, T1)
    [event] = then(machine, Machine.ProfileRevised)
    assert (event.name, event.description, event.labels, event.timestamp) == (
        cmd.name, cmd.description, cmd.labels, T1,
    )
    assert (machine.name, machine.description, machine.labels) == (cmd.name, cmd.description, cmd.labels)


def test_revise_profile_leaves_omitted_fields_alone() -> None:
    register = RegisterMachineCommandFactory()
    machine = given(history(cmd=register))
    machine.revise_profile(ReviseProfileCommandFactory(name=None, labels=None, description="new words"), T1)
    [event] = then(machine, Machine.ProfileRevised)
    assert (event.name, event.labels) == (None, None)
    assert (machine.name, machine.description, machine.labels) == (register.name, "new words", register.labels)


def test_revise_profile_can_clear_labels() -> None:
    machine = given(history())
    machine.revise_profile(ReviseProfileCommandFactory(name=None, description=None, labels={}), T1)
    [event] = then(machine, Machine.ProfileRevised)
    assert event.labels == {}
    assert machine.labels == {}


@pytest.mark.parametrize(
    ("fields", "field"),
    [({"name": " "}, "name"), ({"labels": {"Bad": "x"}}, "labels"),
     ({"labels": {f"k{i}": "v" for i in range(MAX_LABELS + 1)}}, "labels")],
)
def test_revise_profile_validates_like_register(fields: dict[str, Any], field: str) -> None:
    machine = given(history())
    error = raises(ValidationFailed, "VALIDATION_ERROR", machine,
                   lambda: machine.revise_profile(ReviseProfileCommandFactory(**fields), T1))
    assert error.extra["field"] == field


def test_revise_profile_refused_when_retired() -> None:
    machine = given(history(retire))
    raises(InvalidTransition, "INVALID_STATE_TRANSITION", machine,
           lambda: machine.revise_profile(ReviseProfileCommandFactory(), T2))


# --- lifecycle ------------------------------------------------------------------------------------


def test_activate_requires_a_verified_identity() -> None:
    for past in [(), (issue,)]:
        machine = given(history(*past))
        raises(MachineNotActivated, "MACHINE_NOT_ACTIVATED", machine, lambda m=machine: m.activate(T2))


def test_activate_after_verification_records_activated() -> None:
    machine = given(history(*VERIFIED))
    machine.activate(T2)
    [event] = then(machine, Machine.Activated)
    assert (event.timestamp, event.originator_version) == (T2, 4)
    assert machine.status == ACTIVE


def test_suspend_an_active_machine_records_the_reason() -> None:
    machine = given(history(*ACTIVE_))
    cmd = ChangeStatusCommandFactory()
    machine.suspend(cmd, T2)
    [event] = then(machine, Machine.Suspended)
    assert (event.reason, event.timestamp) == (cmd.reason, T2)
    assert machine.status == SUSPENDED


def test_reactivate_a_suspended_machine() -> None:
    machine = given(history(*SUSPENDED_))
    machine.reactivate(T2)
    then(machine, Machine.Reactivated)
    assert machine.status == ACTIVE


@pytest.mark.parametrize("past", [(), VERIFIED, ACTIVE_, SUSPENDED_], ids=["registered", "verified", "active",
                                                                          "suspended"])
def test_retire_from_any_live_status(past: tuple[Callable[[Machine], None], ...]) -> None:
    machine = given(history(*past))
    machine.retire(ChangeStatus(reason="decommissioned"), T2)
    [event] = then(machine, Machine.Retired)
    assert (event.reason, event.timestamp) == ("decommissioned", T2)
    assert machine.status == RETIRED


INVALID_TRANSITIONS = [
    ("activate", ACTIVE_, ACTIVE),
    ("activate", SUSPENDED_, SUSPENDED),
    ("activate", (*VERIFIED, retire), RETIRED),
    ("suspend", (), REGISTERED),
    ("suspend", VERIFIED, REGISTERED),
    ("suspend", SUSPENDED_, SUSPENDED),
    ("suspend", (retire,), RETIRED),
    ("reactivate", (), REGISTERED),
    ("reactivate", ACTIVE_, ACTIVE),
    ("reactivate", (*ACTIVE_, retire), RETIRED),
    ("retire", (retire,), RETIRED),
    ("retire", (*ACTIVE_, retire), RETIRED),
]
DECISIONS: dict[str, Callable[[Machine], None]] = {
    "activate": lambda m: m.activate(T2),
    "suspend": lambda m: m.suspend(ChangeStatus(), T2),
    "reactivate": lambda m: m.reactivate(T2),
    "retire": lambda m: m.retire(ChangeStatus(), T2),
}


@pytest.mark.parametrize(("action", "past", "status"), INVALID_TRANSITIONS,
                         ids=[f"{a}-from-{s}" for a, _, s in INVALID_TRANSITIONS])
def test_invalid_transitions_are_refused(action: str, past: tuple[Callable[[Machine], None], ...],
                                         status: str) -> None:
    machine = given(history(*past))
    assert machine.status == status
    error = raises(InvalidTransition, "INVALID_STATE_TRANSITION", machine, lambda: DECISIONS[action](machine))
    assert error.extra == {"status": status, "action": action}
    assert machine.status == status


# --- ensure_operational ---------------------------------------------------------------------------


@pytest.mark.parametrize(("past", "error", "code"), [
    ((), MachineNotActivated, "MACHINE_NOT_ACTIVATED"),
    ((issue,), MachineNotActivated, "MACHINE_NOT_ACTIVATED"),
    ((retire,), MachineNotActivated, "MACHINE_NOT_ACTIVATED"),
    (VERIFIED, MachineNotActive, "MACHINE_NOT_ACTIVE"),
    (SUSPENDED_, MachineNotActive, "MACHINE_NOT_ACTIVE"),
    ((*ACTIVE_, retire), MachineNotActive, "MACHINE_NOT_ACTIVE"),
], ids=["registered", "challenged", "retired-unverified", "verified-not-activated", "suspended", "retired"])
def test_ensure_operational_refuses(past: tuple[Callable[[Machine], None], ...], error: type[DomainError],
                                    code: str) -> None:
    machine = given(history(*past))
    raised = raises(error, code, machine, machine.ensure_operational)
    if error is MachineNotActive:
        assert raised.extra == {"status": machine.status}


def test_ensure_operational_passes_for_an_active_verified_machine() -> None:
    for past in (ACTIVE_, (*SUSPENDED_, lambda m: m.reactivate(T2))):
        given(history(*past)).ensure_operational()


# --- replay determinism through the store mapper ---------------------------------------------------


def recorded(events: list[Any]) -> list[RecordedEvent]:
    """Events as the store hands them back: data through JSON (as jsonb would), positions assigned."""
    return [
        RecordedEvent(
            position=100 + i, tx_id=7, event_id=uuid.uuid4(), stream_id=e.originator_id,
            stream_type=Machine.TOPIC, version=e.originator_version, type=event_type(e),
            data=msgspec.json.decode(msgspec.json.encode(to_data(e))), metadata={}, recorded_at=T2,
        )
        for i, e in enumerate(events)
    ]


def state(m: Machine) -> tuple[Any, ...]:
    return (m.id, m.version, m.account_id, m.name, m.description, m.public_key, m.labels, m.status, m.challenge,
            m.identity_verified_at, m.created_on, m.modified_on)


@pytest.mark.parametrize("past", [
    (),
    (issue,),
    (issue, lambda m: m.verify_identity(VerifyIdentity(challenge_id=CHALLENGE.challenge_id, signature=SIGNATURE),
                                        T1, FakeCheck(False))),
    (issue, lambda m: m.expire_challenge(CHALLENGE.challenge_id, CHALLENGE.expires_at)),
    (*SUSPENDED_, lambda m: m.reactivate(T2), lambda m: m.revise_profile(ReviseProfileCommandFactory(), T2)),
    (*ACTIVE_, lambda m: m.revise_profile(ReviseProfileCommandFactory(name=None, labels={}), T2), retire),
], ids=["registered", "challenged", "failed", "expired", "full-life", "retired"])
def test_replay_through_the_mapper_rebuilds_the_same_state(past: tuple[Callable[[Machine], None], ...]) -> None:
    original = Machine.register(RegisterMachineCommandFactory(), T0)
    for decide in past:
        decide(original)
    events = original.collect_events()

    rebuilt = rebuild(recorded(events))

    assert isinstance(rebuilt, Machine)
    assert state(rebuilt) == state(original)
    assert rebuilt.collect_events() == []
    assert rebuild(recorded(events)) == rebuilt  # and replaying again is deterministic


def test_replayed_aggregate_continues_at_the_next_version() -> None:
    events = history(*VERIFIED)
    machine = rebuild(recorded(events))
    assert isinstance(machine, Machine)
    machine.activate(T2)
    [event] = then(machine, Machine.Activated)
    assert event.originator_version == len(events) + 1


# --- upcasting: events stored by an older class version are upgraded on load -----------------------


class Gadget(Aggregate):
    """A throwaway aggregate whose events have evolved: Made v1 -> v2, Renamed v1 -> v2 -> v3."""

    TOPIC = "tests.unit.upcasting:Gadget"

    class Created(Aggregate.Created):
        TOPIC = "tests.unit.upcasting:Gadget.Created"

    class Event(Aggregate.Event):
        TOPIC = "tests.unit.upcasting:Gadget.Event"

    class Made(Aggregate.Created):
        TOPIC = "tests.unit.upcasting:Gadget.Made"
        class_version = 2
        name: str
        colour: str  # added in v2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["colour"] = "grey"

    class Renamed(Aggregate.Event):
        TOPIC = "tests.unit.upcasting:Gadget.Renamed"
        class_version = 3
        name: str
        by: str  # added in v2
        shouted: bool  # added in v3

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["by"] = "unknown"

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            state["shouted"] = state["name"].isupper()

        def apply(self, aggregate: Any) -> None:
            aggregate.name = self.name
            aggregate.renamed_by = self.by
            aggregate.shouted = self.shouted

    def __init__(self, name: str, colour: str) -> None:
        self.name = name
        self.colour = colour
        self.renamed_by: str | None = None
        self.shouted = False


def stored(stream_id: uuid.UUID, version: int, topic: str, data: dict[str, Any]) -> RecordedEvent:
    return RecordedEvent(position=version, tx_id=1, event_id=uuid.uuid4(), stream_id=stream_id,
                         stream_type=Gadget.TOPIC, version=version, type=topic, data=data, metadata={},
                         recorded_at=T0)


def test_v1_events_are_upcast_on_load() -> None:
    gadget_id = uuid.uuid4()
    v1_made = {"originator_topic": Gadget.TOPIC, "name": "widget", "timestamp": "2025-03-01T09:00:00Z"}
    v1_renamed = {"name": "WIDGET", "timestamp": "2025-03-01T09:01:00Z"}  # neither carries _classVersion

    made = to_domain_event(stored(gadget_id, 1, Gadget.Made.TOPIC, v1_made))
    assert isinstance(made, Gadget.Made) and made.colour == "grey"

    gadget = rebuild([stored(gadget_id, 1, Gadget.Made.TOPIC, v1_made),
                      stored(gadget_id, 2, Gadget.Renamed.TOPIC, v1_renamed)])
    assert isinstance(gadget, Gadget)
    assert (gadget.id, gadget.version, gadget.colour) == (gadget_id, 2, "grey")
    assert (gadget.name, gadget.renamed_by, gadget.shouted) == ("WIDGET", "unknown", True)  # v1 -> v2 -> v3
    assert gadget.modified_on == T1


def test_a_v2_event_only_runs_the_remaining_upcasters() -> None:
    v2_renamed = {"name": "quiet", "by": "ops", "timestamp": "2025-03-01T09:01:00Z", "_classVersion": 2}
    renamed = to_domain_event(stored(uuid.uuid4(), 2, Gadget.Renamed.TOPIC, v2_renamed))
    assert (renamed.name, renamed.by, renamed.shouted) == ("quiet", "ops", False)


def test_current_events_are_stored_with_their_class_version_and_load_unchanged() -> None:
    gadget = Gadget._create(Gadget.Made, id=uuid.uuid4(), timestamp=T0, name="widget", colour="teal")
    gadget.trigger_event(Gadget.Renamed, timestamp=T1, name="sprocket", by="alice", shouted=False)
    events = gadget.collect_events()
    data = [to_data(e) for e in events]
    assert [d["_classVersion"] for d in data] == [2, 3]
    assert "_classVersion" not in to_data(history()[0])  # v1 events carry no marker

    pairs = zip(events, data, strict=True)
    rebuilt = rebuild([stored(gadget.id, e.originator_version, event_type(e), d) for e, d in pairs])
    assert isinstance(rebuilt, Gadget)
    assert (rebuilt.name, rebuilt.colour, rebuilt.renamed_by, rebuilt.version) == ("sprocket", "teal", "alice", 2)


def test_revise_profile_that_changes_nothing_records_nothing() -> None:
    register = RegisterMachineCommandFactory()
    machine = given(history(cmd=register))
    version = machine.version
    same = ReviseProfileCommandFactory(name=register.name, description=None, labels=register.labels)
    machine.revise_profile(same, T1)
    machine.revise_profile(ReviseProfileCommandFactory(name=None, description=None, labels=None), T1)
    assert machine.collect_events() == [] and machine.version == version


def test_revise_profile_records_only_the_fields_that_change() -> None:
    register = RegisterMachineCommandFactory()
    machine = given(history(cmd=register))
    machine.revise_profile(ReviseProfileCommandFactory(name=register.name, description="changed", labels=None), T1)
    [event] = then(machine, Machine.ProfileRevised)
    assert (event.name, event.description, event.labels) == (None, "changed", None)
