"""Task command service: submit, discover, resolve (or preview), request execution, runs, cancel."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec
from eventsourcing.domain import Aggregate

from app.services.machines import MachinesService, owned_machine
from app.services.policy_guard import PolicyGuard, refusal
from app.services.retries import RETRIES, retry_conflicts
from app.services.task_discovery import OfferSource, ReputationSource, screen
from app.services.task_memo import RememberedPolicies, RememberedReputation
from app.services.task_policies import policy_check, policy_screen, task_action
from app.store.repository import Repository
from app.store.types import AppendResult, LogPosition
from domain.machines.aggregate import Machine
from domain.policies.errors import PolicyDenied
from domain.policies.values import DENY, ActionKind, Decision, PolicyVersion
from domain.runtime.endpoint import endpoint_id
from domain.shared.context import CommandContext
from domain.shared.errors import NotFound
from domain.shared.ids import derived_id, new_id
from domain.tasks.aggregate import CANCELLED, DISCOVERED, EXECUTING, FAILED, FINISHED, QUEUED, RESOLVED, Task
from domain.tasks.commands import Candidate, Constraints, CreateTask, PolicyCheck, RunResult, StartRun
from domain.tasks.errors import NoRoute
from domain.tasks.scoring import Ranking, rank

# Enough attempts for 64 concurrent commits on one budget to each be judged on fresh state (see the test).
BUDGET_RETRIES, BUDGET_JITTER_S = 64, 0.005


class TaskOutcome:
    """The task after the command, and where its last event sits in the log (None: nothing recorded)."""

    def __init__(self, task: Task, result: AppendResult | None) -> None:
        self.task = task
        self.position: LogPosition | None = result.last if result else None


class RoutePreview:
    """What resolve would record, without recording it (?dryRun=true), and the policies' decision on it."""

    def __init__(self, task: Task, steps: list[Candidate], ranking: Ranking, decision: Decision | None = None,
                 evaluated_at: datetime | None = None) -> None:
        self.task, self.steps, self.ranking, self.decision = task, steps, ranking, decision
        self.evaluated_at = evaluated_at


class TasksService:
    def __init__(self, repo: Repository, machines: MachinesService, offers: OfferSource,
                 reputation: ReputationSource, guard: PolicyGuard | None = None) -> None:
        self.repo, self.machines, self.offers, self.reputation = repo, machines, offers, reputation
        self.guard = guard  # None: no policies enforced (tests of the pipeline alone)

    async def submit(self, ctx: CommandContext, machine_id: uuid.UUID, *, capability: str, input: Any,
                     constraints: Constraints, auto: bool) -> TaskOutcome:
        machine = await self.machines.require_operational(ctx, machine_id)
        # A retried request must land on the same stream, so its id derives from the idempotency key.
        task_id = derived_id("task", machine_id, ctx.idempotency_key) if ctx.idempotency_key else new_id()
        cmd = CreateTask(task_id=task_id, account_id=machine.account_id, machine_id=machine_id,
                         capability=capability, input=input, constraints=constraints, auto=auto)

        async def attempt() -> TaskOutcome:
            task = Task.submit(cmd, ctx.at)  # the checks first: a refused input is no policy's business
            extras: list[Aggregate] = []
            if self.guard is not None:
                action = task_action("create-task", task, machine.labels, ctx.at)
                auth = await self.guard.authorize(ctx, action, task.id)
                # The decision travels in task.created; a shadow objection and the rate windows' counts are
                # recorded with the task, atomically.
                check = policy_check(auth.decision, action, auth.governing)
                task, extras = Task.submit(msgspec.structs.replace(cmd, decision=check), ctx.at), auth.extras
            result = await self.repo.save_all([task, *extras], ctx)
            if result is not None and result.duplicate:
                task = await self.repo.get(Task, task_id, what="task")
            return TaskOutcome(task, result)

        # Creates race on a shared rate window: the loser re-judges on fresh state (as commits on a budget do).
        return await retry_conflicts(attempt, attempts=BUDGET_RETRIES if self.guard else RETRIES,
                                     jitter_s=BUDGET_JITTER_S if self.guard else 0)

    async def get(self, ctx: CommandContext, machine_id: uuid.UUID, task_id: uuid.UUID) -> Task:
        """The task if it is this machine's and the caller's account owns it; otherwise NOT_FOUND, never 403."""
        return _machines_task(ctx, machine_id, task_id, await self.load(task_id))

    async def load(self, task_id: uuid.UUID) -> Task:
        return await self.repo.get(Task, task_id, what="task")

    async def _operational_with_task(self, ctx: CommandContext, machine_id: uuid.UUID,
                                     task_id: uuid.UUID) -> tuple[Machine, Task]:
        """require_operational(machine) then get(task), with the same checks in the same order, on one read of
        both streams (a statement and a round trip less for every command on a task)."""
        machine, task = await self.repo.get_many([(Machine, machine_id), (Task, task_id)])
        owned = owned_machine(ctx, machine_id, machine)
        owned.ensure_operational()
        return owned, _machines_task(ctx, machine_id, task_id, task)

    async def discover(self, ctx: CommandContext, machine_id: uuid.UUID, task_id: uuid.UUID) -> TaskOutcome:
        machine, task = await self._operational_with_task(ctx, machine_id, task_id)

        async def decide(ctx: CommandContext, task: Task) -> None:
            await self._discover(ctx, task, machine.labels)

        return await self._change(ctx, task_id, decide, machine_id, loaded=task)

    async def _discover(self, ctx: CommandContext, task: Task, labels: dict[str, str]) -> None:
        k = task.constraints
        reading = self.offers.offers(capability=task.capability, provider_keys=k.provider_keys,
                                     max_price=k.max_price, sellers_allow=k.sellers_allow,
                                     sellers_deny=k.sellers_deny, exclude_machine_id=task.machine_id)
        governing: list[PolicyVersion] = []
        if self.guard is None:
            offers = await reading
        else:  # both reads at once: one round trip less on discover's path
            offers, governing = await asyncio.gather(
                reading, self.guard.governing(task_action("resolve", task, labels, ctx.at)))
        if isinstance(self.reputation, RememberedReputation):  # one decision (an auto task): read once
            self.reputation.remember({o.candidate.seller_machine_id: o.record for o in offers
                                      if o.record != "unknown"})
        candidates, dropped = screen(offers, task.input, task.machine_id, k)
        if governing and candidates:
            records = await self.reputation.records(list({c.seller_machine_id for c in candidates}))
            candidates, forbidden = policy_screen(task, labels, candidates, records, governing, ctx.at)
            dropped = [*dropped, *forbidden]
        task.discover(candidates, dropped, ctx.at)

    async def preview_route(self, ctx: CommandContext, machine_id: uuid.UUID, task_id: uuid.UUID) -> RoutePreview:
        """Judged by the policies as resolve would judge it (POLICY_DENIED for an enforced refusal); records
        nothing, not even the refusal."""
        machine = await self.machines.require_operational(ctx, machine_id)
        task = await self.get(ctx, machine_id, task_id)
        ranking = await self._rank(task)
        steps = task.plan_route(ranking)
        decision = None
        if self.guard is not None:
            step = steps[0]
            record = (await self.reputation.records([step.seller_machine_id])).get(step.seller_machine_id)
            decision, _ = await self.guard.check(ctx, task_action("resolve", task, machine.labels, ctx.at, step,
                                                                  record), task.id)
            if decision.effect == DENY:
                raise refusal(decision, dry_run=True)
        return RoutePreview(task, steps, ranking, decision, ctx.at)

    async def resolve(self, ctx: CommandContext, machine_id: uuid.UUID, task_id: uuid.UUID) -> TaskOutcome:
        machine, loaded = await self._operational_with_task(ctx, machine_id, task_id)

        async def decide(ctx: CommandContext, task: Task) -> list[Aggregate]:
            ranking = await self._rank(task)
            steps = task.plan_route(ranking)
            extras, check = await self._authorize(ctx, "resolve", task, machine.labels, steps[0])
            task.resolve(derived_id("route", task.id, task.version), ranking, ctx.at, check)
            return extras

        # Commits race on a shared spend budget: the loser re-judges on fresh state, so allow more attempts.
        return await self._change(ctx, task_id, decide, machine_id, attempts=BUDGET_RETRIES, loaded=loaded)

    async def _authorize(self, ctx: CommandContext, kind: ActionKind, task: Task, labels: dict[str, str],
                         step: Candidate) -> tuple[list[Aggregate], PolicyCheck | None]:
        """POLICY_DENIED for an enforced refusal; otherwise what to save with the command (a shadow objection,
        budget reservations) and the decision its event carries."""
        if self.guard is None:
            return [], None
        record = (await self.reputation.records([step.seller_machine_id])).get(step.seller_machine_id)
        action = task_action(kind, task, labels, ctx.at, step, record)
        auth = await self.guard.authorize(ctx, action, task.id)
        return auth.extras, policy_check(auth.decision, action, auth.governing)

    async def _rank(self, task: Task) -> Ranking:
        sellers = list(dict.fromkeys(c.seller_machine_id for c in task.candidates))
        records = await self.reputation.records(sellers) if sellers else {}
        return rank(task.candidates, records, task.constraints.strategy)

    async def request_execution(self, ctx: CommandContext, machine_id: uuid.UUID,
                                task_id: uuid.UUID) -> TaskOutcome:
        machine, loaded = await self._operational_with_task(ctx, machine_id, task_id)

        async def decide(ctx: CommandContext, task: Task) -> list[Aggregate]:
            # Judged again at execution: a policy may have changed since the route was resolved. Only a request
            # that will record anything is judged (a repeat waits on the same outcome).
            extras: list[Aggregate] = []
            check = None
            if task.status == RESOLVED and task.route is not None:
                extras, check = await self._authorize(ctx, "execute", task, machine.labels, task.route["steps"][0])
            task.request_execution(ctx.at, check)
            return extras

        return await self._change(ctx, task_id, decide, machine_id, loaded=loaded)

    async def cancel(self, ctx: CommandContext, machine_id: uuid.UUID, task_id: uuid.UUID,
                     reason: str | None) -> TaskOutcome:
        _, loaded = await self._operational_with_task(ctx, machine_id, task_id)

        async def decide(ctx: CommandContext, task: Task) -> None:
            task.cancel(reason, ctx.at)

        return await self._change(ctx, task_id, decide, machine_id, loaded=loaded)

    # --- the executor's commands (workers: no tenant check, the task id came from the log) ---------------

    async def next_run(self, ctx: CommandContext, task_id: uuid.UUID) -> tuple[Task, dict[str, Any] | None]:
        """The run to call now (a redelivery gets the open run again, same id), recorded before any call."""
        box: dict[str, Any] = {}

        async def decide(ctx: CommandContext, task: Task) -> None:
            box["run"] = _next_run(ctx, task)

        outcome = await self._change(ctx, task_id, decide)
        return outcome.task, box.get("run")

    async def advance_auto(self, ctx: CommandContext, task_id: uuid.UUID,
                           machine_id: uuid.UUID | None = None) -> tuple[Task, dict[str, Any] | None]:
        """An auto task's steps from where its stream stands up to its next run, decided one after the other on
        one load and recorded in one append: discover, resolve, request execution, start the run (before any
        call). NO_ROUTE fails the task in that same append. Raises MACHINE_NOT_ACTIVE/ACTIVATED for the caller
        to record. Returns the task and the run to call (None: a manual task, or nothing left to run).
        `machine_id`: the buyer's, when the caller knows it: the first attempt reads it with the task."""
        box: dict[str, Any] = {}
        loaded: Task | None = None
        if machine_id is not None:
            found, machine = await self.repo.get_many([(Task, task_id), (Machine, machine_id)])
            if not isinstance(found, Task):
                raise NotFound(f"task {task_id} not found")
            loaded = found
            if isinstance(machine, Machine) and machine.id == found.machine_id:
                box["machine"] = machine

        async def decide(ctx: CommandContext, task: Task) -> list[Aggregate]:
            # Each attempt reads the policies and the sellers' records afresh, once for all of its steps (a retry
            # reads the buyer machine again too).
            box["run"], extras = await self._remembering()._advance(ctx, task, box.pop("machine", None))
            return extras

        outcome = await self._change(ctx, task_id, decide, loaded=loaded)
        return outcome.task, box.get("run")

    async def _advance(self, ctx: CommandContext, task: Task,
                       buyer: Machine | None) -> tuple[dict[str, Any] | None, list[Aggregate]]:
        if not task.auto or task.status in FINISHED:
            return None, []
        extras: list[Aggregate] = []
        check = None
        if task.status != EXECUTING:  # a run under way goes on, as a client's execute would
            if buyer is None or buyer.id != task.machine_id:
                buyer = await self.machines.require_operational(ctx, task.machine_id)
            else:  # read with the task: require_operational's check (the worker's context is an admin's)
                buyer.ensure_operational()
            labels = buyer.labels
            was_resolved = task.status == RESOLVED
            if task.status == QUEUED:
                await self._discover(ctx, task, labels)
            try:
                if task.status == DISCOVERED:
                    try:
                        ranking = await self._rank(task)
                        steps = task.plan_route(ranking)
                    except NoRoute as exc:
                        task.give_up(NoRoute.code, exc.detail, ctx.at)
                        return None, []
                    # Policies judge an auto task's resolve as they judge a client's: the spend reservation
                    # is saved with the route, and a refusal fails the task on the record.
                    more, resolved_by = await self._authorize(ctx, "resolve", task, labels, steps[0])
                    extras += more
                    task.resolve(derived_id("route", task.id, task.version), ranking, ctx.at, resolved_by)
                if was_resolved and task.route is not None:
                    # Resolved earlier (not in this decision): judged again at execution, as for a client.
                    more, check = await self._authorize(ctx, "execute", task, labels, task.route["steps"][0])
                    extras += more
            except PolicyDenied as exc:  # already recorded as policy.denied by the guard
                task.give_up(PolicyDenied.code, exc.detail, ctx.at)
                return None, []
            if task.status == RESOLVED:
                task.request_execution(ctx.at, check)
        return _next_run(ctx, task), extras

    def _remembering(self) -> TasksService:
        """This service with the policies and the sellers' records read once (for one decision)."""
        guard = self.guard and PolicyGuard(self.guard.repo, RememberedPolicies(self.guard.policies), self.guard.counts)
        return TasksService(self.repo, self.machines, self.offers, RememberedReputation(self.reputation), guard)

    async def finish_run(self, ctx: CommandContext, task_id: uuid.UUID, result: RunResult,
                         loaded: Task | None = None) -> TaskOutcome:
        """`loaded`: the task as this worker last saved it, decided on without reading it again (if the stream
        has moved since, the append conflicts and the retry reads it)."""
        async def decide(ctx: CommandContext, task: Task) -> None:
            task.finish_run(result, ctx.at)

        return await self._change(ctx, task_id, decide, loaded=loaded)

    async def give_up(self, ctx: CommandContext, task_id: uuid.UUID, code: str, detail: str) -> TaskOutcome:
        async def decide(ctx: CommandContext, task: Task) -> None:
            task.give_up(code, detail, ctx.at)

        return await self._change(ctx, task_id, decide)

    async def _change(self, ctx: CommandContext, task_id: uuid.UUID,
                      decide: Callable[[CommandContext, Task], Any],
                      machine_id: uuid.UUID | None = None, attempts: int = RETRIES,
                      loaded: Task | None = None) -> TaskOutcome:
        # `loaded` has passed get()'s checks when machine_id is given (_operational_with_task); a retry reloads.
        first = [loaded] if loaded is not None and loaded.id == task_id else []

        async def attempt() -> TaskOutcome:
            if first:
                task = first.pop()
            else:
                task = await (self.get(ctx, machine_id, task_id) if machine_id is not None else self.load(task_id))
            before = task.status
            extras = list(await decide(ctx, task) or [])
            if self.guard is not None and task.status != before and task.status in (FAILED, CANCELLED):
                extras += await self.guard.release(ctx, task.id)  # nothing was spent: free the reservations
            # Aggregates a decision adds (a shadow policy's objection) are saved with the task, atomically.
            result = await self.repo.save_all([task, *extras], ctx)
            if result is not None and result.duplicate:
                # A retry of a command already recorded: answer with what was stored.
                task = await self.load(task_id)
            return TaskOutcome(task, result)

        return await retry_conflicts(attempt, attempts=attempts, jitter_s=BUDGET_JITTER_S if attempts > RETRIES else 0)


def _next_run(ctx: CommandContext, task: Task) -> dict[str, Any] | None:
    attempt = len(task.runs) + 1
    step = task.route["steps"][attempt - 1] if task.route and attempt <= len(task.route["steps"]) else None
    endpoint = endpoint_id(step.seller_machine_id, step.provider_key) if step is not None else None
    # The run id derives from the task and attempt: a retried command lands on the same run.
    return task.next_run(StartRun(run_id=derived_id("run", task.id, attempt), endpoint_id=endpoint), ctx.at)


def _machines_task(ctx: CommandContext, machine_id: uuid.UUID, task_id: uuid.UUID, task: object) -> Task:
    """`task` as loaded if it is this machine's and the caller's account owns it; otherwise NOT_FOUND, never 403."""
    if not isinstance(task, Task) or task.machine_id != machine_id or (
            not ctx.is_admin and task.account_id != ctx.account_id):
        raise NotFound(f"task {task_id} not found")
    return task
