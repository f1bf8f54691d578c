"""The workers' order commands: hold escrow (or fail the payment), record the execution, auto-confirm.

Each loads the order, decides, and saves the order with the wallets and the task it moved in one append; a
redelivered message finds the order moved on and records nothing.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Any

from eventsourcing.domain import Aggregate

from app.crypto import verify_ed25519
from app.services.orders import OrderOutcome, OrdersService
from domain.machines.aggregate import Machine
from domain.market.errors import InsufficientFunds
from domain.market.ledger import Wallet
from domain.market.order import Order
from domain.market.order_commands import Execution
from domain.market.order_states import EXECUTING, PAID
from domain.runtime.endpoint import endpoint_id
from domain.shared.context import CommandContext
from domain.shared.errors import ConcurrencyConflict, NotFound
from domain.shared.ids import derived_id
from domain.tasks.aggregate import CANCELLED, FAILED, FINISHED, SUCCEEDED, Task
from domain.tasks.commands import RunResult, StartRun

MAX_RECEIPT_CHARS = 256


class OrderSettlement:
    def __init__(self, orders: OrdersService) -> None:
        self.orders = orders
        self.repo, self.escrow = orders.repo, orders.escrow

    async def hold(self, ctx: CommandContext, order_id: uuid.UUID) -> OrderOutcome:
        """available -> escrow and the task's execution requested, in one append with the order; or the payment
        failed (INSUFFICIENT_FUNDS), the task cancelled and its spend reservations released. The task's first run
        is started in that append too (before any call, as advance_auto does): `outcome.first` is (task, run) when
        this call recorded it, for the executor to call at once without another load and append."""
        box: dict[str, Any] = {}

        async def decide(ctx: CommandContext, order: Order) -> list[Aggregate]:
            box.clear()
            if order.status != PAID:
                return []
            # The buyer's wallet and the order's task, both moved by the hold, in one statement.
            wallet, task = await self.repo.get_many([(Wallet, self.escrow.wallet_id(order)), (Task, order.task_id)])
            if not isinstance(task, Task):
                raise NotFound(f"task {order.task_id} not found")
            try:
                wallets = await self.escrow.hold(ctx, order, wallet if isinstance(wallet, Wallet) else None)
            except InsufficientFunds as exc:
                order.fail_payment(exc.code, exc.detail, ctx.at)
                return await self.orders.abandon_task(ctx, order, task)
            order.hold(ctx.at)
            task.request_execution(ctx.at)
            assert task.route is not None
            step = task.route["steps"][0]
            # The run id the tasks service would give attempt 1, so a redelivery finds this run open.
            run = task.next_run(StartRun(run_id=derived_id("run", task.id, 1),
                                         endpoint_id=endpoint_id(step.seller_machine_id, step.provider_key)), ctx.at)
            box["first"] = (task, run)
            return [*wallets, task]

        # Every hold of one buyer commits on the buyer's wallet: the losers re-judge on fresh balances.
        outcome = await self.orders.change(ctx, order_id, decide)
        if outcome.position is not None and not outcome.duplicate:
            outcome.first = box.get("first")
        return outcome

    async def record_execution(self, ctx: CommandContext, order_id: uuid.UUID,
                               held: Order | None = None) -> OrderOutcome | None:
        """The task's outcome on the order (None: the task has not finished); a failure refunds at once.
        `held`: the order as this worker's hold left it (saved, unchanged since), decided on without a reload;
        had anything else moved it meanwhile, its append loses on the version and the retry reloads."""
        order = held if held is not None else await self.orders.load(order_id)
        if order.status != EXECUTING:
            return OrderOutcome(order, None)
        task = await self.repo.get(Task, order.task_id, what="task")
        if task.status not in FINISHED:
            return None
        execution = await self.execution_of(order, task)

        async def decide(ctx: CommandContext, order: Order) -> list[Aggregate]:
            split = order.record_execution(execution, ctx.at)
            return await self.escrow.settle(ctx, order, split)

        return await self.orders.change(ctx, order_id, decide, loaded=order)

    async def finish_first_run(self, ctx: CommandContext, held: OrderOutcome,
                               result: RunResult) -> OrderOutcome | None:
        """The first run's result (the one the hold started) and, as it settles the task, the execution on the
        order, in ONE append on the task and the order as the hold left them (a failure's refund and released
        spend reservations with it): one append, no reload of either, where finish_run + record_execution took
        two appends and three loads. None when nothing settled here (the run was not the open one, a lost race,
        a retry of a recorded command): the caller then goes the general way (run_task, record_execution), which
        reloads and re-decides, as a redelivered message does."""
        assert held.first is not None
        task, order = held.first[0], held.order
        before = task.status
        if order.status != EXECUTING or not task.finish_run(result, ctx.at):
            return None
        extras: list[Aggregate] = []
        guard = self.orders.tasks.guard
        if guard is not None and task.status != before and task.status in (FAILED, CANCELLED):
            extras += await guard.release(ctx, task.id)  # as TasksService.finish_run: nothing was spent
        if task.status in FINISHED:
            split = order.record_execution(await self.execution_of(order, task), ctx.at)
            extras += await self.escrow.settle(ctx, order, split)
        try:
            saved = await self.repo.save_all([order, task, *extras], ctx)
        except ConcurrencyConflict:
            return None
        if saved is None or saved.duplicate or task.status not in FINISHED:
            return None
        return OrderOutcome(order, saved)

    async def auto_confirm(self, ctx: CommandContext, order_id: uuid.UUID) -> OrderOutcome:
        async def decide(ctx: CommandContext, order: Order) -> list[Aggregate]:
            split = order.confirm(False, ctx.at)
            return await self.escrow.settle(ctx, order, split)

        return await self.orders.change(ctx, order_id, decide)

    async def execution_of(self, order: Order, task: Task) -> Execution:
        """The outcome, the finishing run's digest and receipt (from its RunFinished), the receipt checked against
        the seller machine's registered key: Ed25519 over the hex digest's ASCII bytes."""
        outcome = task.outcome or {}
        run_id = outcome.get("run_id")
        finished: dict[str, Any] = next((r for r in task.runs if r["run_id"] == run_id), {}) if run_id else {}
        digest, receipt = finished.get("response_digest"), finished.get("receipt")
        verified = False
        if digest and receipt and len(receipt) <= MAX_RECEIPT_CHARS:
            try:
                seller = await self.repo.get(Machine, order.seller_machine_id, what="machine")
            except NotFound:
                seller = None
            if seller is not None:
                verified = _verify_receipt(seller.public_key, digest, receipt)
        return Execution(run_id=run_id, succeeded=task.status == SUCCEEDED, code=outcome.get("code"),
                         http_status=outcome.get("http_status"), result_digest=digest,
                         receipt=receipt if receipt and len(receipt) <= MAX_RECEIPT_CHARS else None,
                         receipt_verified=verified)


def _verify_receipt(public_key: str, digest: str, receipt: str) -> bool:
    try:
        signature = base64.b64decode(receipt, validate=True)
    except (binascii.Error, ValueError):
        return False
    return verify_ed25519(public_key, digest.encode(), signature)
