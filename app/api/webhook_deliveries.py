"""HTTP routes for an endpoint's webhook deliveries: every attempt logged, and a client's retry of one."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, QueryParameter

from app.api.consistency import read_your_writes, write_headers
from app.api.context import AUTHENTICATED, Principal, container_of, provide_ctx, provide_principal
from app.api.openapi_headers import LOG_POSITION, headers
from app.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, encode_cursor
from app.api.problems import ApiError, problems
from app.api.schemas_webhooks import DeliveryAttemptView, WebhookDeliveryPage, WebhookDeliveryView
from app.services import webhook_deliveries as store
from domain.shared.context import CommandContext
from domain.shared.errors import InvalidTransition, NotFound
from domain.webhooks.errors import WebhookEndpointNotFound
from projections.webhooks_reader import get_endpoint


def _view(r: dict[str, Any]) -> WebhookDeliveryView:
    return WebhookDeliveryView(
        id=r["id"], endpoint_id=r["endpoint_id"], event_id=r["event_id"], type=r["type"], status=r["status"],
        attempts=r["attempts"], next_attempt_at=r["next_attempt_at"] if r["status"] == "pending" else None,
        last_status=r["last_status"], last_error=r["last_error"], created_at=r["created_at"],
        delivered_at=r["delivered_at"],
        attempt_log=[DeliveryAttemptView(attempt=a["attempt"], at=a["at"], status_code=a["status_code"],
                                         error_class=a["error_class"], duration_ms=a["duration_ms"])
                     for a in r["attempt_log"]])


def _after(cursor: str) -> tuple[int, int]:
    values = decode_cursor(cursor, 2)
    if not all(type(v) is int and v >= 0 for v in values):
        raise ApiError(400, "VALIDATION_ERROR", "cursor is not valid; use nextCursor from a previous page")
    return values[0], values[1]


async def _owned(request: Request[Any, Any, Any], principal: Principal, endpoint_id: uuid.UUID) -> None:
    c = container_of(request)
    await read_your_writes(c.pool, "webhooks", endpoint_id, c.settings.read_your_writes_timeout_s)
    tenant = None if principal.is_admin else principal.account_id
    if await get_endpoint(c.pool, endpoint_id, tenant) is None:
        raise WebhookEndpointNotFound(f"webhook endpoint {endpoint_id} not found")


class WebhookDeliveriesController(Controller):
    path = "/v1/webhook-endpoints/{endpoint_id:uuid}/deliveries"
    tags = ["webhooks"]
    security = AUTHENTICATED
    dependencies = {"principal": Provide(provide_principal), "ctx": Provide(provide_ctx)}

    @get("/", operation_id="listWebhookDeliveries", summary="List an endpoint's deliveries and their attempts",
         description="In log order (the order they are sent in), each with every attempt made: status code or"
                     " error class, and duration.",
         responses=problems(400, 401, 404, 503))
    async def list_(
        self, request: Request[Any, Any, Any], principal: NamedDependency[Principal],
        endpoint_id: FromPath[uuid.UUID],
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
    ) -> WebhookDeliveryPage:
        after = _after(cursor) if cursor else None
        await _owned(request, principal, endpoint_id)
        rows = await store.list_deliveries(container_of(request).pool, endpoint_id, after, limit + 1)
        more, rows = len(rows) > limit, rows[:limit]
        next_cursor = encode_cursor(rows[-1]["tx_id"], rows[-1]["position"]) if more else None
        return WebhookDeliveryPage(data=[_view(r) for r in rows], next_cursor=next_cursor)

    @post("/{delivery_id:uuid}/retry", operation_id="retryWebhookDelivery", status_code=202,
          opt=headers(sends=[LOG_POSITION]), summary="Send a pending or failed delivery again, now",
          description="Records the request; the delivery worker makes the delivery due now and sends it (still in"
                      " order: earlier pending deliveries of the endpoint go first). A delivered one is 409.",
          responses=problems(400, 401, 404, 409, 422, 503))
    async def retry(self, request: Request[Any, Any, Any], principal: NamedDependency[Principal],
                    ctx: NamedDependency[CommandContext], endpoint_id: FromPath[uuid.UUID],
                    delivery_id: FromPath[uuid.UUID]) -> Response[WebhookDeliveryView]:
        c = container_of(request)
        await _owned(request, principal, endpoint_id)
        row = await store.get_delivery(c.pool, endpoint_id, delivery_id)
        if row is None:
            raise NotFound(f"delivery {delivery_id} not found")
        if row["status"] == "delivered":
            # Unless this very request (its Idempotency-Key) recorded the retry, whose answer was lost: the
            # delivery it asked for has happened since.
            if (done := await c.repo.recorded(ctx, endpoint_id)) is not None:
                return Response(_view(row), status_code=202, headers=write_headers(None, done.last))
            raise InvalidTransition(f"delivery {delivery_id} was delivered; each event is sent once per endpoint")
        outcome = await c.webhooks.request_delivery_retry(ctx, endpoint_id, delivery_id)
        return Response(_view(row), status_code=202, headers=write_headers(None, outcome.position))
