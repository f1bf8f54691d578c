"""Order command service (the client's commands): place, pay, confirm, dispute, resolve, cancel, read."""

from __future__ import annotations

import base64
import binascii
import contextlib
import uuid
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import asyncpg
from eventsourcing.domain import Aggregate

from app.crypto import new_nonce, verify_ed25519
from app.services.ledger import LEDGER_JITTER_S, LEDGER_RETRIES
from app.services.order_money import Escrow
from app.services.order_placement import constraints_for_listing, priced_task
from app.services.retries import retry_conflicts
from app.services.tasks import TasksService
from app.store.mapper import rebuild
from app.store.repository import Repository, stream_type_of
from app.store.types import AppendResult, LogPosition, RecordedEvent
from domain.machines.aggregate import Machine
from domain.market.credits import SellerCredits, credit_shard, credits_id
from domain.market.errors import EscrowAlreadyHeld, EscrowNotHeld
from domain.market.ledger import Wallet, wallet_id
from domain.market.order import Order
from domain.market.order_commands import PlaceOrder, ProofOfPayment
from domain.market.order_errors import OrderNotFound, PaymentProofInvalid
from domain.market.order_states import CANCELLED, PAYMENT_FAILED
from domain.market.order_terms import DEFAULT_CONFIRM_WINDOW_S
from domain.shared.context import CommandContext
from domain.shared.errors import ConcurrencyConflict, PermissionDenied
from domain.shared.ids import derived_id, new_id
from domain.tasks.aggregate import Task
from domain.tasks.commands import Constraints

MAX_SIGNATURE_BYTES = 256
_ORDER_STREAM = stream_type_of(Order)
MAX_FACTS = 16_384  # orders whose facts a process remembers (~300 bytes each)


class OrderFacts(NamedTuple):
    """What an order's Placed event fixes for good: enough to name, before the order is read, the other streams
    a command on it reads (the buyer machine; the buyer's wallet and the seller's credit shard), so they come in
    the same statement as the order (one round trip where there were two)."""

    account_id: uuid.UUID
    machine_id: uuid.UUID
    seller_account_id: uuid.UUID
    currency: str


# The streams a command reads besides its order, as its facts name them; what they loaded, by stream id (None:
# the stream does not exist). A decision looks its streams up by the ids the loaded order names, so a wrong or
# missing guess only costs the read it would have made anyway.
Related = Callable[[OrderFacts], Sequence[tuple[type[Aggregate], uuid.UUID]]]
Prefetched = dict[uuid.UUID, Aggregate | None]


class OrderOutcome:
    """The order after the command, and where its last event sits in the log (None: nothing recorded)."""

    def __init__(self, order: Order, result: AppendResult | None) -> None:
        self.order = order
        self.position: LogPosition | None = result.last if result else None
        self.duplicate = bool(result and result.duplicate)
        self.first: tuple[Task, dict[str, Any] | None] | None = None  # a hold's first run, recorded with it
        # The order's stream as loaded before the command (None: not loaded): a view needs only its tail then.
        self.events: list[RecordedEvent] | None = None


class OrdersService:
    def __init__(self, repo: Repository, pool: asyncpg.Pool, tasks: TasksService, escrow: Escrow, *,
                 fee_bps: int, intent_ttl_s: int) -> None:
        self.repo, self.pool, self.tasks, self.escrow = repo, pool, tasks, escrow
        self.fee_bps, self.intent_ttl_s = fee_bps, intent_ttl_s
        self._facts: dict[uuid.UUID, OrderFacts] = {}

    async def place(self, ctx: CommandContext, buyer_id: uuid.UUID, *, listing_id: uuid.UUID | None,
                    capability: str | None, constraints: Constraints | None, input: Any,
                    confirm_window_s: int | None) -> OrderOutcome:
        buyer = await self.tasks.machines.require_operational(ctx, buyer_id)
        # A retried request must land on the same streams, so the ids derive from the idempotency key.
        order_id = derived_id("order", buyer_id, ctx.idempotency_key) if ctx.idempotency_key else new_id()
        task_id = derived_id("order-task", order_id)
        listing = None
        if listing_id is not None:
            timeout = constraints.timeout_ms if constraints else Constraints().timeout_ms
            listing, constraints = await constraints_for_listing(self.pool, listing_id, timeout)
            capability = listing.capability
        assert capability is not None
        k = constraints or Constraints()
        # One seller, no fallbacks: the intent names its payee, and a fallback would pay someone else.
        k = Constraints(max_price=k.max_price, provider_keys=k.provider_keys, sellers_allow=k.sellers_allow,
                        sellers_deny=k.sellers_deny, strategy=k.strategy, fallbacks=0, timeout_ms=k.timeout_ms)
        task, step, extras = await priced_task(ctx, self.tasks, buyer, task_id, capability=capability, input=input,
                                               constraints=k, listing=listing)
        order = Order.place(PlaceOrder(
            order_id=order_id, account_id=buyer.account_id, machine_id=buyer.id, task_id=task.id,
            listing_id=step.listing_id, capability=task.capability, seller_machine_id=step.seller_machine_id,
            seller_account_id=step.seller_account_id, provider_key=step.provider_key, price=step.price,
            fee_bps=self.fee_bps, confirm_window_s=confirm_window_s or DEFAULT_CONFIRM_WINDOW_S,
            intent_id=derived_id("intent", order_id), intent_ttl_s=self.intent_ttl_s, nonce=new_nonce()), ctx.at)
        result = await self.repo.save_all([order, task, *extras], ctx)
        if result is not None and result.duplicate:
            order = await self.load(order_id)
        outcome = OrderOutcome(order, result)
        if result is not None and not result.duplicate:  # the whole new stream, as the log recorded it
            outcome.events = _of(order.id, result)
        self._remember(order)
        return outcome

    async def load(self, order_id: uuid.UUID) -> Order:
        return (await self.load_stream(order_id))[0]

    async def load_stream(self, order_id: uuid.UUID, related: Related | None = None,
                          prefetched: Prefetched | None = None) -> tuple[Order, list[RecordedEvent]]:
        """The order and the events it was folded from (an order's stream is short: no snapshots), so a view
        can show its timeline without reading the stream a second time. `related`: the other streams the
        caller will read, loaded in the same statement into `prefetched` when this process knows the order's
        facts (it placed or read the order before)."""
        facts = self._facts.get(order_id) if related is not None else None
        if prefetched is not None:
            prefetched.clear()
        if related is None or facts is None:
            events = await self.repo.store.load(order_id)
            if not events or events[0].stream_type != _ORDER_STREAM:
                raise OrderNotFound(f"order {order_id} not found")
            order = rebuild(events)
        else:
            wanted: list[tuple[type[Aggregate], uuid.UUID]] = [(Order, order_id), *related(facts)]
            streams: dict[uuid.UUID, list[RecordedEvent]] = {}
            found = await self.repo.get_many(wanted, streams)
            if not isinstance(found[0], Order):
                raise OrderNotFound(f"order {order_id} not found")
            order, events = found[0], streams[order_id]
            if prefetched is not None:
                prefetched.update((aggregate_id, aggregate) for (_, aggregate_id), aggregate
                                  in zip(wanted[1:], found[1:], strict=True))
        assert isinstance(order, Order)
        self._remember(order)
        return order, events

    def facts_of(self, order_id: uuid.UUID) -> OrderFacts | None:
        """The order's facts if this process remembers them."""
        return self._facts.get(order_id)

    def forget(self, order_id: uuid.UUID) -> None:
        """Drop what this process remembers of the order (its next command reads the order first, as after a
        restart)."""
        self._facts.pop(order_id, None)

    def _remember(self, order: Order) -> None:
        if order.id in self._facts:
            return
        if len(self._facts) >= MAX_FACTS:
            # The oldest remembered. Worker threads may share this service: two may pick the same oldest key.
            with contextlib.suppress(StopIteration, RuntimeError):
                self._facts.pop(next(iter(self._facts)), None)
        self._facts[order.id] = OrderFacts(order.account_id, order.machine_id, order.seller_account_id,
                                           order.price.currency)

    async def get(self, ctx: CommandContext, order_id: uuid.UUID) -> Order:
        """The order if the caller's account is its buyer or seller (or an admin); otherwise NOT_FOUND."""
        return (await self.get_stream(ctx, order_id))[0]

    async def get_stream(self, ctx: CommandContext, order_id: uuid.UUID, related: Related | None = None,
                         prefetched: Prefetched | None = None) -> tuple[Order, list[RecordedEvent]]:
        """`get`, with the order's events (see load_stream)."""
        order, events = await self.load_stream(order_id, related, prefetched)
        if not ctx.is_admin and ctx.account_id not in (order.account_id, order.seller_account_id):
            raise OrderNotFound(f"order {order_id} not found")
        return order, events

    async def pay(self, ctx: CommandContext, order_id: uuid.UUID, signature_b64: str) -> OrderOutcome:
        """The buyer machine's Ed25519 signature of the intent's signing payload: a mandate for this payment."""
        signature = _signature(signature_b64)
        pre: Prefetched = {}

        async def decide(ctx: CommandContext, order: Order) -> None:
            order.ensure_buyer(ctx.account_id, ctx.is_admin, "pay")
            machine = pre.get(order.machine_id)
            if not isinstance(machine, Machine):
                machine = await self.repo.get(Machine, order.machine_id, what="machine")
            machine.ensure_operational()
            if not verify_ed25519(machine.public_key, order.signing_payload.encode(), signature):
                raise PaymentProofInvalid("the signature does not verify against the buyer machine's key over"
                                          " the payment intent's signingPayload")
            order.record_proof(ProofOfPayment(method="mandate", signature=signature_b64), ctx.at)

        return await self.change(ctx, order_id, decide, visible=True, related=_buyer_machine, prefetched=pre)

    async def record_rail_proof(self, ctx: CommandContext, order_id: uuid.UUID, rail: str, reference: str,
                                signature: str) -> OrderOutcome:
        """A payment rail's confirmation, its callback signature already checked (app/api/payment_callbacks)."""

        async def decide(ctx: CommandContext, order: Order) -> None:
            order.record_proof(ProofOfPayment(method="rail", rail=rail, reference=reference, signature=signature),
                               ctx.at)

        return await self.change(ctx, order_id, decide)

    async def confirm(self, ctx: CommandContext, order_id: uuid.UUID) -> OrderOutcome:
        pre: Prefetched = {}

        async def decide(ctx: CommandContext, order: Order) -> list[Aggregate]:
            order.ensure_buyer(ctx.account_id, ctx.is_admin, "confirm")
            return await self.escrow.settle(ctx, order, order.confirm(True, ctx.at), pre)

        return await self.change(ctx, order_id, decide, visible=True, related=settlement_streams(order_id),
                                 prefetched=pre)

    async def dispute(self, ctx: CommandContext, order_id: uuid.UUID, reason: str) -> OrderOutcome:
        async def decide(ctx: CommandContext, order: Order) -> None:
            order.ensure_buyer(ctx.account_id, ctx.is_admin, "dispute")
            task = await self.repo.get(Task, order.task_id, what="task")
            order.open_dispute(reason, [r["run_id"] for r in task.runs], ctx.at)

        return await self.change(ctx, order_id, decide, visible=True)

    async def resolve_dispute(self, ctx: CommandContext, order_id: uuid.UUID, outcome: str,
                              seller_share: int | None, note: str | None) -> OrderOutcome:
        if not ctx.is_admin:
            raise PermissionDenied("only an admin key may resolve a dispute")

        async def decide(ctx: CommandContext, order: Order) -> list[Aggregate]:
            return await self.escrow.settle(ctx, order, order.resolve_dispute(outcome, seller_share, note, ctx.at))

        return await self.change(ctx, order_id, decide)

    async def cancel(self, ctx: CommandContext, order_id: uuid.UUID, reason: str | None,
                     expired: bool = False) -> OrderOutcome:
        async def decide(ctx: CommandContext, order: Order) -> list[Aggregate]:
            if not expired:
                order.ensure_buyer(ctx.account_id, ctx.is_admin, "cancel")
            if not order.cancel(reason, ctx.at, expired=expired):
                return []
            return await self.abandon_task(ctx, order)

        return await self.change(ctx, order_id, decide, visible=not expired)

    async def abandon_task(self, ctx: CommandContext, order: Order, task: Task | None = None) -> list[Aggregate]:
        """An order that will never be paid: its task (`task`: as the caller has just read it) is cancelled and
        its spend reservations released."""
        assert order.status in (CANCELLED, PAYMENT_FAILED)
        if task is None:
            task = await self.repo.get(Task, order.task_id, what="task")
        task.cancel("order " + order.status, ctx.at)
        released = await self.tasks.guard.release(ctx, task.id) if self.tasks.guard is not None else []
        return [task, *released]

    async def change(self, ctx: CommandContext, order_id: uuid.UUID,
                      decide: Callable[[CommandContext, Order], Any], *, visible: bool = False,
                      attempts: int = LEDGER_RETRIES, loaded: Order | None = None, related: Related | None = None,
                      prefetched: Prefetched | None = None) -> OrderOutcome:
        """Load, decide, save with what the decision moved (wallets, the task), retried on a lost race: the loser
        decides again on fresh state, where the winner's change usually makes its command a clear 409.
        `loaded`: the order as the caller already has it (not yet changed), decided on first instead of a load.
        `related`/`prefetched`: streams `decide` reads, loaded with the order (see load_stream), each attempt."""

        first = [loaded] if loaded is not None else []

        async def attempt() -> OrderOutcome:
            events: list[RecordedEvent] | None = None
            if first:  # the caller's order, as it loaded it a moment ago: a lost race reloads below
                order = first.pop()
                if prefetched is not None:
                    prefetched.clear()
            elif visible:
                order, events = await self.get_stream(ctx, order_id, related, prefetched)
            else:
                order, events = await self.load_stream(order_id, related, prefetched)
            loaded_version = order.version  # decide's events move the in-memory version on
            try:
                extras = list(await decide(ctx, order) or [])
            except (EscrowNotHeld, EscrowAlreadyHeld):
                # The wallet is read after the order: a settlement that committed in between leaves this order
                # stale, not the escrow wrong. Decide again on the fresh order (usually a clear 409 then).
                if await self.repo.store.stream_version(order.id) != loaded_version:
                    raise ConcurrencyConflict("the order moved on while its escrow was read") from None
                raise
            result = await self.repo.save_all([order, *extras], ctx)
            if result is not None and result.duplicate:
                order, events = await self.load_stream(order_id)
            elif result is not None and events is not None:  # what was loaded and what was just appended
                events = [*events, *_of(order.id, result)]
            outcome = OrderOutcome(order, result)
            outcome.events = events
            return outcome

        async def replay() -> OrderOutcome | None:
            # Refused, but this very request (its Idempotency-Key) was recorded before: answer as it did.
            if (done := await self.repo.recorded(ctx, order_id)) is None:
                return None
            order, events = await (self.get_stream(ctx, order_id) if visible else self.load_stream(order_id))
            outcome = OrderOutcome(order, done)
            outcome.events = events
            return outcome

        # Settlements commit on shared streams (the buyer's wallet, the seller's credit shard): as many attempts
        # as the ledger's own commands, spaced by jitter.
        return await retry_conflicts(attempt, attempts=attempts, jitter_s=LEDGER_JITTER_S, replay=replay)


def _buyer_machine(facts: OrderFacts) -> Sequence[tuple[type[Aggregate], uuid.UUID]]:
    return [(Machine, facts.machine_id)]


def settlement_streams(order_id: uuid.UUID) -> Related:
    """The streams a settlement of the order moves: the buyer's wallet and the seller's credit shard."""

    def streams(facts: OrderFacts) -> Sequence[tuple[type[Aggregate], uuid.UUID]]:
        return [(Wallet, wallet_id(facts.account_id, facts.currency)),
                (SellerCredits, credits_id(facts.seller_account_id, facts.currency, credit_shard(order_id)))]

    return streams


def _of(stream_id: uuid.UUID, result: AppendResult) -> list[RecordedEvent]:
    return [e for e in result.events if e.stream_id == stream_id]


def _signature(value: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PaymentProofInvalid("proof.signature is not valid base64") from exc
    if not raw or len(raw) > MAX_SIGNATURE_BYTES:
        raise PaymentProofInvalid("proof.signature is not an Ed25519 signature")
    return raw
