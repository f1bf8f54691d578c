"""Imperative machine commands (frozen structs); ids, nonces and time are chosen by the caller."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec


class RegisterMachine(msgspec.Struct, frozen=True, kw_only=True):
    machine_id: uuid.UUID
    account_id: uuid.UUID
    name: str
    description: str
    public_key: str
    labels: dict[str, str]


class IssueIdentityChallenge(msgspec.Struct, frozen=True, kw_only=True):
    challenge_id: uuid.UUID
    nonce: str
    expires_at: datetime


class VerifyIdentity(msgspec.Struct, frozen=True, kw_only=True):
    challenge_id: uuid.UUID
    signature: str


class ReviseProfile(msgspec.Struct, frozen=True, kw_only=True):
    name: str | None = None
    description: str | None = None
    labels: dict[str, str] | None = None


class ChangeStatus(msgspec.Struct, frozen=True, kw_only=True):
    reason: str | None = None
