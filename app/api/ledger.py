"""HTTP routes for the ledger: the caller's balances and entries, admin deposits, and withdrawals."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter

from app.api.consistency import honour_min_position, write_headers
from app.api.context import AUTHENTICATED, Principal, container_of, provide_ctx, provide_principal, require_admin
from app.api.openapi_headers import LOG_POSITION, MIN_POSITION, headers
from app.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, encode_cursor
from app.api.problems import ApiError, problems
from app.api.schemas_ledger import (
    CURRENCY_PATTERN,
    BalanceMoney,
    BalancesView,
    BalanceView,
    LedgerEntryPage,
    LedgerEntryView,
    LedgerName,
    MovementRequest,
    MovementView,
    SignedMoney,
)
from app.services.ledger import LedgerOutcome
from domain.shared.context import CommandContext
from domain.shared.money import Money
from projections.ledger_reader import balances, entries

PROJECTION = "ledger"
# A filter: an ISO 4217 code; empty means no filter (a query string cannot say null otherwise). The msgspec Meta
# documents the pattern, QueryParameter's enforces it (Litestar checks a scalar query value only by the latter).
_FILTER_PATTERN = CURRENCY_PATTERN.replace(")$", ")?$")
CurrencyFilter = Annotated[Annotated[str, msgspec.Meta(pattern=_FILTER_PATTERN)] | None,
                           QueryParameter(pattern=_FILTER_PATTERN, description="ISO 4217 code; empty: every currency")]


def _after(cursor: str) -> tuple[int, int, int]:
    values = decode_cursor(cursor, 3)
    if not all(type(v) is int and v >= 0 for v in values):
        raise ApiError(400, "VALIDATION_ERROR", "cursor is not valid; use nextCursor from a previous page")
    return values[0], values[1], values[2]


def _entry(r: dict[str, Any]) -> LedgerEntryView:
    currency = r["currency"]
    return LedgerEntryView(
        cursor=encode_cursor(r["tx_id"], r["position"], r["line"]), event_id=r["event_id"], type=r["type"],
        ledger=r["ledger"], amount=SignedMoney(r["amount"], currency),
        balance_after=BalanceMoney(r["balance_after"], currency), order_id=r["order_id"],
        counterparty_account_id=r["counterparty"], occurred_at=r["recorded_at"])


def _moved(kind: str, ctx: CommandContext, account_id: uuid.UUID, data: MovementRequest,
           outcome: LedgerOutcome) -> Response[MovementView]:
    view = MovementView(type=kind, account_id=account_id,  # type: ignore[arg-type]
                        amount=BalanceMoney(data.amount.amount, data.amount.currency), reference=data.reference,
                        occurred_at=ctx.at)
    return Response(view, status_code=201, headers=write_headers(None, outcome.position))


class LedgerController(Controller):
    path = "/v1/accounts"
    tags = ["ledger"]
    security = AUTHENTICATED
    dependencies = {"principal": Provide(provide_principal), "ctx": Provide(provide_ctx)}

    @get("/me/balance", operation_id="getMyBalance", opt=headers(honours=[MIN_POSITION]),
         summary="The caller's balances, per currency",
         description="Available and escrow (held for open orders) per currency the account has ever moved. A read"
                     " model of the ledger's postings: send X-Min-Position to include a write you just made.",
         responses=problems(400, 401, 503))
    async def balance(self, request: Request[Any, Any, Any], principal: NamedDependency[Principal],
                      currency: CurrencyFilter = None) -> BalancesView:
        c = container_of(request)
        await honour_min_position(request, c.pool, PROJECTION, c.settings.read_your_writes_timeout_s)
        rows = await balances(c.pool, principal.account_id, currency or None)
        return BalancesView(data=[BalanceView(currency=r["currency"],
                                              available=BalanceMoney(r["available"], r["currency"]),
                                              escrow=BalanceMoney(r["escrow"], r["currency"])) for r in rows])

    @get("/me/ledger", operation_id="listMyLedgerEntries", opt=headers(honours=[MIN_POSITION]),
         summary="The caller's ledger entries",
         description="One entry per posting to the account's available or escrow ledger account, in log order,"
                     " each with that ledger account's balance after it.",
         responses=problems(400, 401, 503))
    async def ledger(
        self, request: Request[Any, Any, Any], principal: NamedDependency[Principal],
        currency: CurrencyFilter = None,
        ledger: Annotated[LedgerName | None, QueryParameter()] = None,
        order_id: Annotated[uuid.UUID | None, QueryParameter(name="orderId")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
    ) -> LedgerEntryPage:
        c = container_of(request)
        after = _after(cursor) if cursor else None
        await honour_min_position(request, c.pool, PROJECTION, c.settings.read_your_writes_timeout_s)
        rows = await entries(c.pool, principal.account_id, currency=currency or None, ledger=ledger, order_id=order_id,
                             after=after, limit=limit + 1)
        more, rows = len(rows) > limit, rows[:limit]
        next_cursor = encode_cursor(rows[-1]["tx_id"], rows[-1]["position"], rows[-1]["line"]) if more else None
        return LedgerEntryPage(data=[_entry(r) for r in rows], next_cursor=next_cursor)

    @post("/{account_id:uuid}/deposits", operation_id="depositFunds", opt=headers(sends=[LOG_POSITION]),
          status_code=201, summary="Deposit into an account (admin)",
          description="Money entering the platform: external -> the account's available balance. Safe to retry"
                      " with the same Idempotency-Key (one deposit is recorded).",
          responses=problems(400, 401, 403, 404, 409, 422))
    async def deposit(self, request: Request[Any, Any, Any], principal: NamedDependency[Principal],
                      ctx: NamedDependency[CommandContext], account_id: FromPath[uuid.UUID],
                      data: JSONBody[MovementRequest]) -> Response[MovementView]:
        require_admin(principal)
        amount = Money(data.amount.amount, data.amount.currency)
        outcome = await container_of(request).ledger.deposit(ctx, account_id, amount, data.reference)
        return _moved("ledger.deposited", ctx, account_id, data, outcome)

    @post("/me/withdrawals", operation_id="withdrawFunds", opt=headers(sends=[LOG_POSITION]),
          status_code=201, summary="Withdraw from the caller's available balance",
          description="Money leaving the platform: available -> external. Never below zero: a withdrawal the"
                      " available balance does not cover is 409 INSUFFICIENT_FUNDS and records nothing.",
          responses=problems(400, 401, 409, 422))
    async def withdraw(self, request: Request[Any, Any, Any], principal: NamedDependency[Principal],
                       ctx: NamedDependency[CommandContext], data: JSONBody[MovementRequest]) -> Response[MovementView]:
        amount = Money(data.amount.amount, data.amount.currency)
        outcome = await container_of(request).ledger.withdraw(ctx, principal.account_id, amount, data.reference)
        return _moved("ledger.withdrawn", ctx, principal.account_id, data, outcome)
