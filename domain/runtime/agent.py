"""The MachineAgent aggregate: an on-machine agent paired by a one-time token, reporting by heartbeat."""

from __future__ import annotations

import hmac
import uuid
from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate

from domain.runtime import rules
from domain.runtime.commands import EnrollAgent, RecordHeartbeat
from domain.runtime.errors import AgentAuthInvalid, AgentPairingInactive, AgentPolicyDenied
from domain.shared.errors import InvalidTransition, ValidationFailed

ENROLLED, ACTIVE, REVOKED = "enrolled", "active", "revoked"
MAX_ALLOWED_KEYS = 64


class MachineAgent(Aggregate):
    TOPIC = "runtime:MachineAgent"
    # One event per heartbeat, forever: loads start from a snapshot and replay at most this many events.
    SNAPSHOT_EVERY = 20

    class Created(Aggregate.Created):
        TOPIC = "runtime:MachineAgent.Created"  # required by eventsourcing once TOPIC is set; never triggered

    class Event(Aggregate.Event):
        TOPIC = "runtime:MachineAgent.Event"

    class Enrolled(Aggregate.Created):
        TOPIC = "runtime:MachineAgent.Enrolled"
        account_id: uuid.UUID
        machine_id: uuid.UUID
        name: str
        allowed_provider_keys: list[str]
        lease_seconds: int
        token_hash: str

    class HeartbeatReceived(Aggregate.Event):
        TOPIC = "runtime:MachineAgent.HeartbeatReceived"
        provider_keys: list[str]
        lease_expires_at: datetime

        def apply(self, aggregate: Any) -> None:
            aggregate.status = ACTIVE
            aggregate.last_seen_at = self.timestamp
            aggregate.last_lease_expires_at = self.lease_expires_at

    class Revoked(Aggregate.Event):
        TOPIC = "runtime:MachineAgent.Revoked"
        reason: str | None

        def apply(self, aggregate: Any) -> None:
            aggregate.status = REVOKED

    def __init__(self, account_id: uuid.UUID, machine_id: uuid.UUID, name: str, allowed_provider_keys: list[str],
                 lease_seconds: int, token_hash: str) -> None:
        self.account_id, self.machine_id, self.name = account_id, machine_id, name
        self.allowed_provider_keys = list(allowed_provider_keys)
        self.lease_seconds, self.token_hash = lease_seconds, token_hash
        self.status = ENROLLED
        self.last_seen_at: datetime | None = None
        self.last_lease_expires_at: datetime | None = None

    # --- decisions -------------------------------------------------------------------------------

    @classmethod
    def enroll(cls, cmd: EnrollAgent, at: datetime) -> MachineAgent:
        rules.check_agent_name(cmd.name)
        rules.check_lease_seconds(cmd.lease_seconds)
        if len(cmd.allowed_provider_keys) > MAX_ALLOWED_KEYS:
            raise ValidationFailed(f"at most {MAX_ALLOWED_KEYS} allowedProviderKeys", field="allowedProviderKeys")
        keys = sorted({rules.provider_key(k) for k in cmd.allowed_provider_keys})
        return cls._create(
            cls.Enrolled, id=cmd.agent_id, timestamp=at, account_id=cmd.account_id, machine_id=cmd.machine_id,
            name=cmd.name, allowed_provider_keys=keys, lease_seconds=cmd.lease_seconds, token_hash=cmd.token_hash,
        )

    def authenticate(self, presented_hash: str) -> None:
        """The token first, then the pairing: a revoked agent's status is only told to its token's holder."""
        if not hmac.compare_digest(self.token_hash.encode(), presented_hash.encode()):
            raise AgentAuthInvalid("the agent token is not valid")
        if self.status == REVOKED:
            raise AgentPairingInactive("this agent has been revoked; enroll a new one", agentId=str(self.id))

    def permit(self, provider_keys: list[str]) -> None:
        denied = sorted(set(provider_keys) - set(self.allowed_provider_keys))
        if denied:
            raise AgentPolicyDenied(
                f"this agent may not report provider keys {', '.join(denied)}",
                denied=denied, allowedProviderKeys=list(self.allowed_provider_keys),
            )

    def record_heartbeat(self, cmd: RecordHeartbeat, at: datetime) -> None:
        if self.status == REVOKED:
            raise AgentPairingInactive("this agent has been revoked; enroll a new one", agentId=str(self.id))
        self.permit(cmd.provider_keys)
        self.trigger_event(
            self.HeartbeatReceived, timestamp=at, provider_keys=list(cmd.provider_keys),
            lease_expires_at=cmd.lease_expires_at,
        )

    def revoke(self, reason: str | None, at: datetime) -> None:
        if self.status == REVOKED:
            raise InvalidTransition("this agent is already revoked", status=self.status, action="revoke")
        self.trigger_event(self.Revoked, timestamp=at, reason=reason)
