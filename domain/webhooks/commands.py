"""Imperative webhook-endpoint commands (frozen structs); ids, time and the sealed secret come from the caller."""

from __future__ import annotations

import uuid

import msgspec


class RegisterWebhookEndpoint(msgspec.Struct, frozen=True, kw_only=True):
    endpoint_id: uuid.UUID
    account_id: uuid.UUID
    url: str
    types: list[str]
    description: str
    enabled: bool
    sealed_secret: str  # sealed by the application: the domain never sees the plaintext


class ReviseWebhookEndpoint(msgspec.Struct, frozen=True, kw_only=True):
    """None leaves a field as it is; `types` replaces the whole list."""

    url: str | None = None
    types: list[str] | None = None
    description: str | None = None
    enabled: bool | None = None


class RotateWebhookSecret(msgspec.Struct, frozen=True, kw_only=True):
    sealed_secret: str
    previous_valid_until: str  # RFC 3339: until then deliveries are signed with both secrets
