"""HTTP routes for market orders: place, list, read, pay (mandate), confirm, dispute, resolve, cancel."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter

from app.api.consistency import honour_min_position, write_headers
from app.api.context import AUTHENTICATED, container_of, provide_ctx, provide_principal
from app.api.openapi_headers import ETAG, LOCATION, LOG_POSITION, MIN_POSITION, headers
from app.api.order_views import order_of, order_row
from app.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_time_cursor, encode_cursor
from app.api.problems import problems
from app.api.schemas_orders import (
    CancelOrderRequest,
    CreateOrderRequest,
    DisputeRequest,
    OrderPage,
    OrderRole,
    OrderStatus,
    OrderView,
    PaymentRequest,
    ResolutionRequest,
)
from app.api.schemas_tasks import ConstraintsBody
from app.container import Container
from app.services.orders import OrderOutcome
from app.store.types import RecordedEvent
from domain.market.order import Order
from domain.shared.context import CommandContext
from domain.shared.errors import ValidationFailed
from projections.orders_reader import list_orders

_ORDER = "/{order_id:uuid}"

SIGNING_DOC = (
    "`paymentIntent.signingPayload` is the exact string the buyer machine signs (Ed25519, the UTF-8 bytes, with"
    " the key it registered): ten lines joined by `\\n`, no trailing newline -- `mm-payment-v1`,"
    " `order:<orderId>`, `intent:<intentId>`, `payer:<buyerMachineId>`, `payee:<sellerAccountId>`,"
    " `amount:<minor units>`, `currency:<ISO 4217>`, `fee:<platform fee, minor units>`,"
    " `expires:<RFC 3339 UTC, e.g. 2026-01-01T00:00:00.123456Z>`, `nonce:<nonce>`. Sign it as given; do not"
    " rebuild it."
)


async def _view(c: Container, order: Order, events: list[RecordedEvent] | None = None) -> OrderView:
    """The view with the timeline: the stream as the command loaded it plus what it appended (read back for
    the times the log recorded), or the whole stream when the command loaded none."""
    if not events:
        events = await c.store.load(order.id)
    elif events[-1].version < order.version:
        events = [*events, *await c.store.load(order.id, after_version=events[-1].version)]
    return order_of(order, events)


async def _respond(c: Container, outcome: OrderOutcome, status: int = 200, **extra: str) -> Response[OrderView]:
    return Response(await _view(c, outcome.order, outcome.events), status_code=status,
                    headers=write_headers(outcome.order.version, outcome.position, **extra))


class OrdersController(Controller):
    path = "/v1/market/orders"
    tags = ["market"]
    security = AUTHENTICATED
    dependencies = {"principal": Provide(provide_principal), "ctx": Provide(provide_ctx)}
    request_max_body_size = 128 * 1024

    @post("/", operation_id="createOrder", opt=headers(honours=[MIN_POSITION], sends=[ETAG, LOG_POSITION, LOCATION]),
          status_code=201, summary="Place an order: the price fixed from the listing, a payment intent to sign",
          description="Give `listingId`, or `capability` (and task `constraints`) to have the best listing picked"
                      " as a task's resolve would. The order's task is created, discovered and resolved to that"
                      " one seller (it executes only once escrow is held); policies judge the action `order`"
                      " (403 POLICY_DENIED) and spend limits reserve the price. The payment intent names the"
                      " amount, the payee, the platform fee (MM_PLATFORM_FEE_BPS of the price, rounded down) and"
                      " its expiry; an intent not paid by then is cancelled. " + SIGNING_DOC + " 409"
                      " LISTING_UNAVAILABLE when the listing is not in the catalogue or cannot serve this input;"
                      " 409 NO_ROUTE when no listing of the capability can.",
          responses=problems(400, 401, 403, 404, 409, 413, 422, 503))
    async def create(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                     data: JSONBody[CreateOrderRequest]) -> Response[OrderView]:
        if (data.listing_id is None) == (data.capability is None):
            raise ValidationFailed("give exactly one of listingId and capability")
        c = container_of(request)
        await honour_min_position(request, c.pool, "catalogue", c.settings.read_your_writes_timeout_s)
        constraints = (data.constraints or ConstraintsBody()).command()
        outcome = await c.orders.place(ctx, data.buyer_machine_id, listing_id=data.listing_id,
                                       capability=data.capability, constraints=constraints, input=data.input,
                                       confirm_window_s=data.confirm_window_seconds)
        return await _respond(c, outcome, 201, Location=f"/v1/market/orders/{outcome.order.id}")

    @get("/", operation_id="listOrders", opt=headers(honours=[MIN_POSITION]),
         summary="List the caller's orders as buyer (default) or seller",
         description="Oldest first. Filters: role, status (several allowed), machineId (the buyer machine for"
                     " role buyer, the seller machine for role seller). An admin key lists every order.",
         responses=problems(400, 401, 409, 503))
    async def list_(
        self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
        role: Annotated[OrderRole, QueryParameter(name="role")] = OrderRole.BUYER,
        status: Annotated[list[OrderStatus] | None, QueryParameter(name="status")] = None,
        machine_id: Annotated[uuid.UUID | None, QueryParameter(name="machineId")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
    ) -> OrderPage:
        after = decode_time_cursor(cursor) if cursor else None
        c = container_of(request)
        await honour_min_position(request, c.pool, "orders", c.settings.read_your_writes_timeout_s)
        rows = await list_orders(c.pool, None if ctx.is_admin else ctx.account_id, role=role.value,
                                 status=[s.value for s in status or []] or None, machine_id=machine_id, after=after,
                                 limit=limit + 1)
        more, rows = len(rows) > limit, rows[:limit]
        return OrderPage(data=[order_row(r) for r in rows],
                         next_cursor=encode_cursor(rows[-1]["created_at"].isoformat(), str(rows[-1]["id"]))
                         if more else None)

    @get(_ORDER, operation_id="getOrder", opt=headers(sends=[ETAG]),
         summary="Get an order with its payment, escrow, execution, dispute and timeline",
         description="Read from the order's own stream (no projection lag). Visible to the buyer's and the"
                     " seller's accounts.", responses=problems(400, 401, 404, 503))
    async def get_one(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                      order_id: FromPath[uuid.UUID]) -> Response[OrderView]:
        c = container_of(request)
        order, events = await c.orders.get_stream(ctx, order_id)
        return Response(order_of(order, events), headers=write_headers(order.version, None))

    @post(_ORDER + "/payment", operation_id="payOrder", opt=headers(sends=[ETAG, LOG_POSITION]), status_code=200,
          summary="Pay: the buyer machine's signed mandate for exactly this payment intent",
          description="`proof.signature`: base64 of the buyer machine's Ed25519 signature of"
                      " `paymentIntent.signingPayload` (see createOrder). Verified against the machine's registered"
                      " key, then recorded (status `paid`); a worker then holds the price in escrow (available ->"
                      " escrow, the task's execution requested with it: `executing`) or fails the payment with"
                      " INSUFFICIENT_FUNDS"
                      " (`payment-failed`). The same proof again records nothing. 422 PAYMENT_PROOF_INVALID"
                      " (a bad signature records nothing); 409 PAYMENT_INTENT_EXPIRED; 409 ORDER_STATE_CONFLICT"
                      " once paid or cancelled; 403 for the seller's account.",
          responses=problems(400, 401, 403, 404, 409, 422))
    async def pay(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                  order_id: FromPath[uuid.UUID], data: JSONBody[PaymentRequest]) -> Response[OrderView]:
        c = container_of(request)
        return await _respond(c, await c.orders.pay(ctx, order_id, data.proof.signature))

    @post(_ORDER + "/confirm", operation_id="confirmOrder", opt=headers(sends=[ETAG, LOG_POSITION]),
          status_code=200, summary="Confirm the execution: the escrow is released to the seller (minus the fee)",
          description="The buyer, after `executed` and within the confirm window. Confirm, dispute and the"
                      " auto-confirm timer race safely: exactly one wins; the others answer 409"
                      " ORDER_STATE_CONFLICT (or CONFIRM_WINDOW_CLOSED once the window has passed).",
          responses=problems(400, 401, 403, 404, 409, 422))
    async def confirm(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                      order_id: FromPath[uuid.UUID]) -> Response[OrderView]:
        c = container_of(request)
        return await _respond(c, await c.orders.confirm(ctx, order_id))

    @post(_ORDER + "/dispute", operation_id="disputeOrder", opt=headers(sends=[ETAG, LOG_POSITION]),
          status_code=200, summary="Dispute the execution within the confirm window (escrow stays held)",
          description="The task's runs are attached as evidence. An admin resolves it (refund, release or split)."
                      " 409 ORDER_STATE_CONFLICT unless `executed`; 409 CONFIRM_WINDOW_CLOSED after the window.",
          responses=problems(400, 401, 403, 404, 409, 422))
    async def dispute(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                      order_id: FromPath[uuid.UUID], data: JSONBody[DisputeRequest]) -> Response[OrderView]:
        c = container_of(request)
        return await _respond(c, await c.orders.dispute(ctx, order_id, data.reason))

    @post(_ORDER + "/dispute/resolution", operation_id="resolveOrderDispute",
          opt=headers(sends=[ETAG, LOG_POSITION]), status_code=200,
          summary="Resolve a dispute (admin): refund, release, or split the escrow",
          description="`refund`: all back to the buyer; `release`: to the seller minus the fee; `split`:"
                      " `sellerShare` minor units released (the fee taken pro rata from them, rounded down), the"
                      " rest refunded. 403 for a non-admin key; 409 ORDER_STATE_CONFLICT unless disputed.",
          responses=problems(400, 401, 403, 404, 409, 422))
    async def resolve(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                      order_id: FromPath[uuid.UUID], data: JSONBody[ResolutionRequest]) -> Response[OrderView]:
        c = container_of(request)
        outcome = await c.orders.resolve_dispute(ctx, order_id, data.outcome.value, data.seller_share, data.note)
        return await _respond(c, outcome)

    @post(_ORDER + "/cancel", operation_id="cancelOrder", opt=headers(sends=[ETAG, LOG_POSITION]),
          status_code=200, summary="Cancel an order before it is paid",
          description="Its task is cancelled and spend reservations released. 409 ORDER_STATE_CONFLICT once a"
                      " proof of payment is recorded; cancelling a cancelled order changes nothing.",
          responses=problems(400, 401, 403, 404, 409, 422))
    async def cancel(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                     order_id: FromPath[uuid.UUID],
                     data: JSONBody[CancelOrderRequest | None] = None) -> Response[OrderView]:
        c = container_of(request)
        return await _respond(c, await c.orders.cancel(ctx, order_id, data.reason if data else None))
