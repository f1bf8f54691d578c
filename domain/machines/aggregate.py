"""The Machine aggregate: registration, proof of identity, and its lifecycle (decide, then evolve)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate

from domain.machines import rules
from domain.machines.commands import (
    ChangeStatus,
    IssueIdentityChallenge,
    RegisterMachine,
    ReviseProfile,
    VerifyIdentity,
)
from domain.machines.errors import (
    ChallengeExpired,
    ChallengeMissing,
    IdentityAlreadyVerified,
    MachineNotActivated,
    MachineNotActive,
)
from domain.shared.errors import InvalidTransition, ValidationFailed

REGISTERED, ACTIVE, SUSPENDED, RETIRED = "registered", "active", "suspended", "retired"

# (public key base64, message, signature) -> valid?  Injected so the domain stays free of crypto libraries.
SignatureCheck = Callable[[str, bytes, bytes], bool]


class Machine(Aggregate):
    TOPIC = "machines:Machine"

    class Created(Aggregate.Created):
        TOPIC = "machines:Machine.Created"  # required by eventsourcing once TOPIC is set; never triggered

    class Event(Aggregate.Event):
        TOPIC = "machines:Machine.Event"

    class Registered(Aggregate.Created):
        TOPIC = "machines:Machine.Registered"
        account_id: uuid.UUID
        name: str
        description: str
        public_key: str
        labels: dict[str, str]

    class IdentityChallengeIssued(Aggregate.Event):
        TOPIC = "machines:Machine.IdentityChallengeIssued"
        challenge_id: uuid.UUID
        nonce: str
        expires_at: datetime

        def apply(self, aggregate: Any) -> None:
            aggregate.challenge = {"id": self.challenge_id, "nonce": self.nonce, "expires_at": self.expires_at}

    class IdentityChallengeExpired(Aggregate.Event):
        TOPIC = "machines:Machine.IdentityChallengeExpired"
        challenge_id: uuid.UUID

        def apply(self, aggregate: Any) -> None:
            aggregate.challenge = None

    class IdentityVerificationFailed(Aggregate.Event):
        TOPIC = "machines:Machine.IdentityVerificationFailed"
        challenge_id: uuid.UUID
        reason: str

        def apply(self, aggregate: Any) -> None:
            aggregate.challenge = None  # a nonce is good for one attempt only

    class IdentityVerified(Aggregate.Event):
        TOPIC = "machines:Machine.IdentityVerified"
        challenge_id: uuid.UUID

        def apply(self, aggregate: Any) -> None:
            aggregate.challenge = None
            aggregate.identity_verified_at = self.timestamp

    class ProfileRevised(Aggregate.Event):
        TOPIC = "machines:Machine.ProfileRevised"
        name: str | None
        description: str | None
        labels: dict[str, str] | None

        def apply(self, aggregate: Any) -> None:
            if self.name is not None:
                aggregate.name = self.name
            if self.description is not None:
                aggregate.description = self.description
            if self.labels is not None:
                aggregate.labels = dict(self.labels)

    class Activated(Aggregate.Event):
        TOPIC = "machines:Machine.Activated"

        def apply(self, aggregate: Any) -> None:
            aggregate.status = ACTIVE

    class Suspended(Aggregate.Event):
        TOPIC = "machines:Machine.Suspended"
        reason: str | None

        def apply(self, aggregate: Any) -> None:
            aggregate.status = SUSPENDED

    class Reactivated(Aggregate.Event):
        TOPIC = "machines:Machine.Reactivated"

        def apply(self, aggregate: Any) -> None:
            aggregate.status = ACTIVE

    class Retired(Aggregate.Event):
        TOPIC = "machines:Machine.Retired"
        reason: str | None

        def apply(self, aggregate: Any) -> None:
            aggregate.status = RETIRED

    def __init__(
        self, account_id: uuid.UUID, name: str, description: str, public_key: str, labels: dict[str, str]
    ) -> None:
        self.account_id = account_id
        self.name = name
        self.description = description
        self.public_key = public_key
        self.labels = dict(labels)
        self.status = REGISTERED
        self.challenge: dict[str, Any] | None = None
        self.identity_verified_at: datetime | None = None

    # --- decisions -------------------------------------------------------------------------------

    @classmethod
    def register(cls, cmd: RegisterMachine, at: datetime) -> Machine:
        rules.check_name(cmd.name)
        rules.check_description(cmd.description)
        rules.decode_public_key(cmd.public_key)
        rules.check_labels(cmd.labels)
        return cls._create(
            cls.Registered,
            id=cmd.machine_id,
            timestamp=at,
            account_id=cmd.account_id,
            name=cmd.name,
            description=cmd.description,
            public_key=cmd.public_key,
            labels=dict(cmd.labels),
        )

    @property
    def identity_verified(self) -> bool:
        return self.identity_verified_at is not None

    def issue_challenge(self, cmd: IssueIdentityChallenge, at: datetime) -> None:
        self._not_retired()
        if self.identity_verified:
            raise IdentityAlreadyVerified("this machine's identity is already verified")
        self.trigger_event(
            self.IdentityChallengeIssued,
            timestamp=at,
            challenge_id=cmd.challenge_id,
            nonce=cmd.nonce,
            expires_at=cmd.expires_at,
        )

    def verify_identity(self, cmd: VerifyIdentity, at: datetime, check: SignatureCheck) -> None:
        """Records success or failure; the caller saves, then raises `SignatureInvalid` after a failure."""
        self._not_retired()
        if self.identity_verified:
            raise IdentityAlreadyVerified("this machine's identity is already verified")
        challenge = self.challenge
        if challenge is None or challenge["id"] != cmd.challenge_id:
            raise ChallengeMissing("no open identity challenge with this id; request a new one")
        if at >= challenge["expires_at"]:
            raise ChallengeExpired("the identity challenge has expired; request a new one")
        try:
            signature = rules.decode_signature(cmd.signature)
            valid = check(self.public_key, challenge["nonce"].encode(), signature)
        except ValidationFailed:
            valid = False
        if valid:
            self.trigger_event(self.IdentityVerified, timestamp=at, challenge_id=cmd.challenge_id)
        else:
            self.trigger_event(
                self.IdentityVerificationFailed,
                timestamp=at,
                challenge_id=cmd.challenge_id,
                reason="signature does not verify against the registered public key",
            )

    def expire_challenge(self, challenge_id: uuid.UUID, at: datetime) -> bool:
        """Idempotent: only an open, overdue challenge with this id expires. Returns whether it did."""
        challenge = self.challenge
        if challenge is None or challenge["id"] != challenge_id or at < challenge["expires_at"]:
            return False
        self.trigger_event(self.IdentityChallengeExpired, timestamp=at, challenge_id=challenge_id)
        return True

    def revise_profile(self, cmd: ReviseProfile, at: datetime) -> None:
        """Records only what actually changes; a PATCH that changes nothing records nothing."""
        self._not_retired()
        if cmd.name is not None:
            rules.check_name(cmd.name)
        if cmd.description is not None:
            rules.check_description(cmd.description)
        if cmd.labels is not None:
            rules.check_labels(cmd.labels)
        name = cmd.name if cmd.name is not None and cmd.name != self.name else None
        description = cmd.description if cmd.description is not None and cmd.description != self.description else None
        labels = dict(cmd.labels) if cmd.labels is not None and cmd.labels != self.labels else None
        if name is None and description is None and labels is None:
            return
        self.trigger_event(self.ProfileRevised, timestamp=at, name=name, description=description, labels=labels)

    def activate(self, at: datetime) -> None:
        if not self.identity_verified:
            raise MachineNotActivated("verify this machine's identity before activating it")
        self._from({REGISTERED}, "activate")
        self.trigger_event(self.Activated, timestamp=at)

    def suspend(self, cmd: ChangeStatus, at: datetime) -> None:
        self._from({ACTIVE}, "suspend")
        self.trigger_event(self.Suspended, timestamp=at, reason=cmd.reason)

    def reactivate(self, at: datetime) -> None:
        self._from({SUSPENDED}, "reactivate")
        self.trigger_event(self.Reactivated, timestamp=at)

    def retire(self, cmd: ChangeStatus, at: datetime) -> None:
        self._from({REGISTERED, ACTIVE, SUSPENDED}, "retire")
        self.trigger_event(self.Retired, timestamp=at, reason=cmd.reason)

    # --- guards ----------------------------------------------------------------------------------

    def ensure_operational(self) -> None:
        """The shared guard for every machine-scoped endpoint."""
        if not self.identity_verified:
            raise MachineNotActivated("this machine has not verified its identity")
        if self.status != ACTIVE:
            raise MachineNotActive(f"this machine is {self.status}, not active", status=self.status)

    def _not_retired(self) -> None:
        if self.status == RETIRED:
            raise InvalidTransition("this machine is retired")

    def _from(self, allowed: set[str], action: str) -> None:
        if self.status not in allowed:
            raise InvalidTransition(
                f"cannot {action} a machine that is {self.status}", status=self.status, action=action
            )
