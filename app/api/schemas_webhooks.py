"""Request and response bodies of webhook endpoints (camelCase, unknown fields refused; secrets shown once)."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

import msgspec

from app.api.schema_types import UtcTime
from app.api.schemas_runtime import Url
from domain.webhooks.rules import MAX_DESCRIPTION, MAX_TYPES, TYPE_PATTERN

TypePattern = Annotated[str, msgspec.Meta(pattern=TYPE_PATTERN, max_length=200, examples=["market.*"],
                                          description="`*`, a prefix like `market.*`, or an exact audit type")]
Types = Annotated[list[TypePattern], msgspec.Meta(min_length=1, max_length=MAX_TYPES)]
Description = Annotated[str, msgspec.Meta(max_length=MAX_DESCRIPTION)]


class CreateWebhookEndpointRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True,
                                   kw_only=True):
    url: Url
    types: Types
    description: Description = ""
    enabled: bool = True


class UpdateWebhookEndpointRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True,
                                   kw_only=True):
    """Fields left out stay as they are; `types` replaces the whole list."""

    url: Url | None = None
    types: Types | None = None
    description: Description | None = None
    enabled: bool | None = None


class WebhookEndpointView(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    id: uuid.UUID
    account_id: uuid.UUID
    url: str
    types: list[str]
    description: str
    enabled: bool
    version: int
    created_at: UtcTime
    updated_at: UtcTime
    previous_secret_expires_at: Annotated[UtcTime | None, msgspec.Meta(
        description="after a rotation: until then deliveries carry a second `v1=` signature by the old secret")
    ] = None


class WebhookEndpointSecretView(WebhookEndpointView, frozen=True, kw_only=True):
    """The answer of a create or a rotation: the only time the signing secret is shown."""

    secret: Annotated[str, msgspec.Meta(description="HMAC-SHA256 signing secret; shown once, never again")]


class WebhookEndpointPage(msgspec.Struct, rename="camel", frozen=True):
    """One page of a list; nextCursor fetches the next (null on the last page)."""

    data: list[WebhookEndpointView]
    next_cursor: str | None = None


class DeliveryAttemptView(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    attempt: int
    at: UtcTime
    status_code: Annotated[int | None, msgspec.Meta(description="the receiver's HTTP status; null: no answer")]
    error_class: Annotated[str | None, msgspec.Meta(
        description="null when delivered; http-status, or the outbound error (connect, timeout, ssrf-refused...)")]
    duration_ms: int


class WebhookDeliveryView(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    id: Annotated[uuid.UUID, msgspec.Meta(description="also the Idempotency-Key the receiver is sent")]
    endpoint_id: uuid.UUID
    event_id: Annotated[uuid.UUID, msgspec.Meta(description="the audit record's id (the CloudEvent's id)")]
    type: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: UtcTime | None
    last_status: int | None
    last_error: str | None
    created_at: UtcTime
    delivered_at: UtcTime | None
    attempt_log: list[DeliveryAttemptView]


class WebhookDeliveryPage(msgspec.Struct, rename="camel", frozen=True):
    """One page of a list; nextCursor fetches the next (null on the last page)."""

    data: list[WebhookDeliveryView]
    next_cursor: str | None = None
