"""The RuntimeEndpoint aggregate: where a machine serves one provider key, set by hand or leased by an agent."""

from __future__ import annotations

import functools
import uuid
from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate

from domain.runtime import rules
from domain.runtime.commands import AGENT, MANUAL, UpsertEndpoint
from domain.runtime.errors import EndpointNotFound
from domain.shared.errors import ValidationFailed
from domain.shared.ids import derived_id

ACTIVE, EXPIRED, DELETED = "active", "expired", "deleted"
# The token arrives sealed by the application (AES-GCM, see app/sealing.py): the domain never sees plaintext.
# A 4 KiB token seals to under 5.5 KiB.
MAX_SEALED_TOKEN_LENGTH = 8192


@functools.lru_cache(maxsize=8192)  # a pure derivation, asked for several times per heartbeat
def endpoint_id(machine_id: uuid.UUID, provider_key: str) -> uuid.UUID:
    """One stream per (machine, provider key): a manual PUT and an agent's heartbeat meet on the same stream."""
    return derived_id("runtime-endpoint", machine_id, provider_key)


class RuntimeEndpoint(Aggregate):
    TOPIC = "runtime:RuntimeEndpoint"
    # Every heartbeat appends here, so loads start from a snapshot and replay at most this many events.
    SNAPSHOT_EVERY = 20

    class Created(Aggregate.Created):
        TOPIC = "runtime:RuntimeEndpoint.Created"  # required by eventsourcing once TOPIC is set; never triggered

    class Event(Aggregate.Event):
        TOPIC = "runtime:RuntimeEndpoint.Event"

    class Opened(Aggregate.Created):
        """The first upsert of this provider key on this machine (public name: runtime-endpoint.upserted)."""

        TOPIC = "runtime:RuntimeEndpoint.Opened"
        account_id: uuid.UUID
        machine_id: uuid.UUID
        provider_key: str
        url: str
        auth_token: str | None
        metadata: dict[str, Any]
        source: str
        agent_id: uuid.UUID | None
        lease_expires_at: datetime | None

    class Upserted(Aggregate.Event):
        TOPIC = "runtime:RuntimeEndpoint.Upserted"
        url: str
        auth_token: str | None
        metadata: dict[str, Any]
        source: str
        agent_id: uuid.UUID | None
        lease_expires_at: datetime | None

        def apply(self, aggregate: Any) -> None:
            aggregate.url, aggregate.auth_token, aggregate.metadata = self.url, self.auth_token, dict(self.metadata)
            aggregate.source, aggregate.agent_id = self.source, self.agent_id
            aggregate.lease_expires_at, aggregate.status = self.lease_expires_at, ACTIVE

    class Expired(Aggregate.Event):
        TOPIC = "runtime:RuntimeEndpoint.Expired"
        lease_expires_at: datetime

        def apply(self, aggregate: Any) -> None:
            aggregate.status = EXPIRED

    class Deleted(Aggregate.Event):
        TOPIC = "runtime:RuntimeEndpoint.Deleted"

        def apply(self, aggregate: Any) -> None:
            aggregate.status = DELETED
            aggregate.auth_token = None  # a deleted endpoint keeps no secret in memory or snapshots

    def __init__(self, account_id: uuid.UUID, machine_id: uuid.UUID, provider_key: str, url: str,
                 auth_token: str | None, metadata: dict[str, Any], source: str, agent_id: uuid.UUID | None,
                 lease_expires_at: datetime | None) -> None:
        self.account_id, self.machine_id, self.provider_key = account_id, machine_id, provider_key
        self.url, self.auth_token, self.metadata = url, auth_token, dict(metadata)
        self.source, self.agent_id, self.lease_expires_at = source, agent_id, lease_expires_at
        self.status = ACTIVE

    # --- decisions -------------------------------------------------------------------------------

    @classmethod
    def open(cls, account_id: uuid.UUID, machine_id: uuid.UUID, provider_key: str, cmd: UpsertEndpoint,
             at: datetime) -> RuntimeEndpoint:
        key = rules.provider_key(provider_key)
        _check(cmd)
        return cls._create(
            cls.Opened, id=endpoint_id(machine_id, key), timestamp=at, account_id=account_id, machine_id=machine_id,
            provider_key=key, url=cmd.url, auth_token=cmd.auth_token, metadata=dict(cmd.metadata),
            source=cmd.source, agent_id=cmd.agent_id, lease_expires_at=cmd.lease_expires_at,
        )

    def upsert(self, cmd: UpsertEndpoint, at: datetime) -> None:
        """A heartbeat always records (it renews the lease even when nothing else changed); a manual PUT
        that would change nothing records nothing, so a retried PUT is not a second change."""
        _check(cmd)
        if cmd.source == MANUAL and self.status == ACTIVE and self.source == MANUAL and (
                self.url, self.auth_token, self.metadata) == (cmd.url, cmd.auth_token, dict(cmd.metadata)):
            return
        self.trigger_event(
            self.Upserted, timestamp=at, url=cmd.url, auth_token=cmd.auth_token, metadata=dict(cmd.metadata),
            source=cmd.source, agent_id=cmd.agent_id, lease_expires_at=cmd.lease_expires_at,
        )

    def delete(self, at: datetime) -> None:
        if not self.exists:
            raise EndpointNotFound(f"no runtime endpoint for provider key {self.provider_key!r}")
        self.trigger_event(self.Deleted, timestamp=at)

    def expire(self, at: datetime) -> bool:
        """Idempotent: only a live agent lease that has run out expires. Returns whether it did."""
        lease = self.lease_expires_at
        if self.status != ACTIVE or self.source != AGENT or lease is None or at < lease:
            return False
        self.trigger_event(self.Expired, timestamp=at, lease_expires_at=lease)
        return True

    @property
    def exists(self) -> bool:
        return self.status != DELETED

    @property
    def has_auth_token(self) -> bool:
        return self.auth_token is not None


def _check(cmd: UpsertEndpoint) -> None:
    rules.check_url(cmd.url)
    rules.check_metadata(cmd.metadata)
    if cmd.auth_token is not None and not 1 <= len(cmd.auth_token) <= MAX_SEALED_TOKEN_LENGTH:
        raise ValidationFailed("authToken is too long", field="authToken")
    if cmd.source == MANUAL:
        if cmd.agent_id is not None or cmd.lease_expires_at is not None:
            raise ValidationFailed("a manual endpoint has no agent and no lease")
    elif cmd.source == AGENT:
        if cmd.agent_id is None or cmd.lease_expires_at is None:
            raise ValidationFailed("an agent-reported endpoint needs its agent and a lease")
    else:
        raise ValidationFailed(f"source must be {MANUAL!r} or {AGENT!r}", field="source")
