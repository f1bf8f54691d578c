"""Imperative runtime commands (frozen structs); ids, time and token digests are chosen by the caller."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec

MANUAL, AGENT = "manual", "agent"


class UpsertEndpoint(msgspec.Struct, frozen=True, kw_only=True):
    url: str
    auth_token: str | None = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    source: str = MANUAL
    agent_id: uuid.UUID | None = None
    lease_expires_at: datetime | None = None


class EnrollAgent(msgspec.Struct, frozen=True, kw_only=True):
    agent_id: uuid.UUID
    account_id: uuid.UUID
    machine_id: uuid.UUID
    name: str
    allowed_provider_keys: list[str]
    lease_seconds: int
    token_hash: str


class RecordHeartbeat(msgspec.Struct, frozen=True, kw_only=True):
    provider_keys: list[str]
    lease_expires_at: datetime
