"""HTTP routes for webhook endpoints: register, list, read, update (If-Match), delete, rotate the secret."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter

from app.api.consistency import etag, expected_version, honour_min_position, read_your_writes, write_headers
from app.api.context import AUTHENTICATED, Principal, container_of, provide_ctx, provide_principal
from app.api.openapi_headers import CACHE_CONTROL, ETAG, IF_MATCH, LOCATION, LOG_POSITION, MIN_POSITION, headers
from app.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_time_cursor, encode_cursor
from app.api.problems import problems
from app.api.schemas_webhooks import (
    CreateWebhookEndpointRequest,
    UpdateWebhookEndpointRequest,
    WebhookEndpointPage,
    WebhookEndpointSecretView,
    WebhookEndpointView,
)
from app.services.webhooks import WebhookOutcome
from domain.shared.context import CommandContext
from domain.webhooks.aggregate import WebhookEndpoint
from domain.webhooks.commands import ReviseWebhookEndpoint
from domain.webhooks.errors import WebhookEndpointNotFound
from projections.webhooks_reader import get_endpoint, list_endpoints

PROJECTION = "webhooks"
BASE = "/v1/webhook-endpoints"


def _fields(e: WebhookEndpoint) -> dict[str, Any]:
    expires = datetime.fromisoformat(e.previous_valid_until) if e.previous_valid_until else None
    return {"id": e.id, "account_id": e.account_id, "url": e.url, "types": list(e.types),
            "description": e.description, "enabled": e.enabled, "version": e.version, "created_at": e.created_on,
            "updated_at": e.modified_on, "previous_secret_expires_at": expires}


def _respond(outcome: WebhookOutcome, status: int = 200, **extra: str) -> Response[Any]:
    e = outcome.endpoint
    body: Any = (WebhookEndpointSecretView(**_fields(e), secret=outcome.secret) if outcome.secret is not None
                 else WebhookEndpointView(**_fields(e)))
    if outcome.secret is not None:
        # Shown once: never cached, and kept sealed in the idempotency store for a retry's replay.
        extra["Cache-Control"] = "no-store"
    return Response(body, status_code=status, headers=write_headers(e.version, outcome.position, **extra))


def _tenant(principal: Principal) -> uuid.UUID | None:
    return None if principal.is_admin else principal.account_id


class WebhookEndpointsController(Controller):
    path = BASE
    tags = ["webhooks"]
    security = AUTHENTICATED
    dependencies = {"principal": Provide(provide_principal), "ctx": Provide(provide_ctx)}

    @post("/", operation_id="createWebhookEndpoint",
          opt=headers(sends=[ETAG, LOG_POSITION, LOCATION, CACHE_CONTROL]),
          status_code=201, summary="Register a webhook endpoint",
          description="Audit events of your account whose type matches `types` are POSTed to `url` as CloudEvents,"
                      " signed with `MM-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, t + \".\" + body)>`. The"
                      " answer carries the signing `secret`: it is shown this once and never again.",
          responses=problems(400, 401, 409, 422, 503))
    async def create(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                     data: JSONBody[CreateWebhookEndpointRequest]) -> Response[WebhookEndpointSecretView]:
        outcome = await container_of(request).webhooks.register(
            ctx, url=data.url, types=list(data.types), description=data.description, enabled=data.enabled)
        return _respond(outcome, 201, Location=f"{BASE}/{outcome.endpoint.id}")

    @get("/", operation_id="listWebhookEndpoints", opt=headers(honours=[MIN_POSITION]),
         summary="List webhook endpoints", description="Your account's endpoints, oldest first; never a secret.",
         responses=problems(400, 401, 503))
    async def list_(
        self, request: Request[Any, Any, Any], principal: NamedDependency[Principal],
        enabled: Annotated[bool | None, QueryParameter()] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
    ) -> WebhookEndpointPage:
        c = container_of(request)
        after = decode_time_cursor(cursor) if cursor else None
        await honour_min_position(request, c.pool, PROJECTION, c.settings.read_your_writes_timeout_s)
        rows = await list_endpoints(c.pool, account_id=_tenant(principal), enabled=enabled, after=after,
                                    limit=limit + 1)
        more, rows = len(rows) > limit, rows[:limit]
        next_cursor = encode_cursor(rows[-1]["created_at"].isoformat(), str(rows[-1]["id"])) if more else None
        return WebhookEndpointPage(data=[WebhookEndpointView(**r) for r in rows], next_cursor=next_cursor)

    @get("/{endpoint_id:uuid}", operation_id="getWebhookEndpoint", opt=headers(honours=[MIN_POSITION], sends=[ETAG]),
         summary="Get a webhook endpoint (never its secret)", responses=problems(400, 401, 404, 503))
    async def get_one(self, request: Request[Any, Any, Any], principal: NamedDependency[Principal],
                      endpoint_id: FromPath[uuid.UUID]) -> Response[WebhookEndpointView]:
        c = container_of(request)
        await honour_min_position(request, c.pool, PROJECTION, c.settings.read_your_writes_timeout_s)
        await read_your_writes(c.pool, PROJECTION, endpoint_id, c.settings.read_your_writes_timeout_s)
        row = await get_endpoint(c.pool, endpoint_id, _tenant(principal))
        if row is None:
            raise WebhookEndpointNotFound(f"webhook endpoint {endpoint_id} not found")
        return Response(WebhookEndpointView(**row), headers={"ETag": etag(row["version"])})

    @patch("/{endpoint_id:uuid}", operation_id="updateWebhookEndpoint",
           opt=headers(honours=[IF_MATCH], sends=[ETAG, LOG_POSITION]), summary="Update a webhook endpoint",
           description="Fields left out stay; `types` replaces the list. A change that changes nothing records"
                       " nothing.",
           responses=problems(400, 401, 404, 409, 412))
    async def update(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                     endpoint_id: FromPath[uuid.UUID],
                     data: JSONBody[UpdateWebhookEndpointRequest]) -> Response[WebhookEndpointView]:
        cmd = ReviseWebhookEndpoint(url=data.url, types=list(data.types) if data.types is not None else None,
                                    description=data.description, enabled=data.enabled)
        outcome = await container_of(request).webhooks.revise(ctx, endpoint_id, cmd, expected_version(request))
        return _respond(outcome)

    @delete("/{endpoint_id:uuid}", operation_id="deleteWebhookEndpoint",
            opt=headers(honours=[IF_MATCH], sends=[LOG_POSITION]), status_code=204,
            summary="Delete a webhook endpoint (no further deliveries)", responses=problems(400, 401, 404, 409, 412))
    async def delete_one(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                         endpoint_id: FromPath[uuid.UUID]) -> Response[None]:
        outcome = await container_of(request).webhooks.delete(ctx, endpoint_id, expected_version(request))
        return Response(None, status_code=204, headers=write_headers(None, outcome.position))

    @post("/{endpoint_id:uuid}/rotate-secret", operation_id="rotateWebhookEndpointSecret", status_code=200,
          opt=headers(honours=[IF_MATCH], sends=[ETAG, LOG_POSITION, CACHE_CONTROL]),
          summary="Rotate the signing secret (the new one is shown once)",
          description="The previous secret stays valid for 24 hours: meanwhile every delivery carries two `v1=`"
                      " signatures, by the new secret and by the old one.",
          responses=problems(400, 401, 404, 409, 412, 422, 503))
    async def rotate(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                     endpoint_id: FromPath[uuid.UUID]) -> Response[WebhookEndpointSecretView]:
        outcome = await container_of(request).webhooks.rotate_secret(ctx, endpoint_id, expected_version(request))
        return _respond(outcome)
