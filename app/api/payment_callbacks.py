"""POST /v1/payments/callbacks/{rail}: a payment rail's signed confirmation, recorded as the order's proof.

Signed like Stripe webhooks: `MM-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`
with MM_PAYMENT_WEBHOOK_SECRET; several v1 values are allowed (secret rotation). A timestamp more than 300 s
from now, a signature that does not match, or one already recorded (a replay) is a 400 and records nothing.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, post
from litestar.params import FromPath, JSONBody

from app.api.consistency import write_headers
from app.api.context import container_of
from app.api.openapi_headers import ETAG, LOG_POSITION, headers
from app.api.order_views import order_of
from app.api.problems import ApiError, problems
from app.api.schemas_orders import OrderView, RailCallback
from domain.shared.context import CommandContext
from domain.webhooks.signing import HEADER, matching_signature

TOLERANCE_S = 300
Rail = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$", description="the payment rail's name")]


def _bad(detail: str) -> ApiError:
    return ApiError(400, "PAYMENT_CALLBACK_INVALID", detail)


class PaymentCallbacksController(Controller):
    path = "/v1/payments/callbacks"
    tags = ["market"]
    security = [{}]  # the MM-Signature header authenticates the rail

    @post("/{rail:str}", operation_id="recordPaymentCallback", opt=headers(sends=[ETAG, LOG_POSITION]),
          status_code=200, summary="A payment rail confirms an order's payment (signed callback)",
          description="Body: `{orderId, intentId, amount, currency, reference}`; amount and currency must equal"
                      " the intent's. Header `MM-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of"
                      " \"<t>.<raw body>\" with MM_PAYMENT_WEBHOOK_SECRET>`, at most 300 s old. Recorded as the"
                      " order's proof of payment (then escrow is held as for a mandate). 400"
                      " PAYMENT_CALLBACK_INVALID for a missing, stale, wrong or replayed signature, or terms that"
                      " do not match the intent: nothing is recorded. 404 for an unknown order; 409"
                      " ORDER_STATE_CONFLICT when the order is no longer awaiting payment.",
          responses=problems(400, 401, 404, 409, 422))
    async def callback(self, request: Request[Any, Any, Any], rail: FromPath[Rail],
                       data: JSONBody[RailCallback]) -> Response[OrderView]:
        c = container_of(request)
        secret = c.settings.payment_webhook_secret
        if not secret:
            raise _bad("payment callbacks are not configured on this platform (MM_PAYMENT_WEBHOOK_SECRET)")
        signature = matching_signature(request.headers.get(HEADER, ""), secret, await request.body(), time.time(),
                                       TOLERANCE_S)
        if signature is None:
            raise _bad("MM-Signature is missing, stale (over 300 s) or does not match the body")
        order = await c.orders.load(data.order_id)
        if order.proof is not None and order.proof["signature"] == signature:
            raise _bad("this callback was already recorded (a replay)")
        intent = order.intent
        if (data.intent_id, data.amount, data.currency) != (intent["intent_id"], intent["amount"].amount,
                                                            intent["amount"].currency):
            raise _bad("the callback's intentId, amount or currency do not match the order's payment intent")
        state = request.scope.get("state", {})
        ctx = CommandContext(at=datetime.now(UTC), actor=f"rail:{rail}", request_id=state.get("request_id"),
                             correlation_id=state.get("request_id"), causation_id=None)
        outcome = await c.orders.record_rail_proof(ctx, data.order_id, rail, data.reference, signature)
        view = order_of(outcome.order, await c.store.load(outcome.order.id))
        return Response(view, headers=write_headers(outcome.order.version, outcome.position))


__all__ = ["PaymentCallbacksController"]
