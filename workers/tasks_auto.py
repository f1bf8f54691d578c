"""Auto tasks: one actor drives a task from submission to its outcome (discover -> resolve -> request execution
-> execute), each step recorded as its own event and each idempotent.

The relay sends it once, for an auto task's Submitted. Every step starts from the task's recorded state, so a
redelivery (after a crash anywhere) resumes where the stream stands, and a step a client already took is not
taken again. One message per task, not one per step: each hop through the relay and the broker costs a wake-up,
a claim and an ack, which under load queue behind every other task's (measured: ~4 hops of ~3 s each with a
busy worker, see ops/bench `tasks`). A step that cannot go on (NO_ROUTE, the buyer machine no longer active)
fails the task on the record instead of raising: an auto task never waits forever.
"""

from __future__ import annotations

import logging
import uuid

import dramatiq

from app.services.tasks import TaskOutcome, TasksService
from domain.machines.errors import MachineNotActivated, MachineNotActive
from domain.shared.errors import DomainError, InvalidTransition, NotFound
from domain.tasks.aggregate import DISCOVERED, EXECUTING, NO_ROUTE, QUEUED, RESOLVED, Task
from domain.tasks.errors import NoRoute
from workers.tasks import TIME_LIMIT_MS, Cause, cause_of, context, run_task, service

log = logging.getLogger("mm.workers.tasks")
ACTOR = "advance_auto_task"
# Refusals that end an auto task: recorded as its failure with the refusal's code.
_FINAL = (NoRoute, MachineNotActive, MachineNotActivated)


async def _next_step(tasks: TasksService, task: Task, cause: Cause) -> Task | None:
    """Take the step the task's state calls for; the task after it, or None when there is nothing more to do."""
    ctx = context(ACTOR, cause, f"{task.status}:{cause.event_id}")
    step = {QUEUED: tasks.discover, DISCOVERED: tasks.resolve, RESOLVED: tasks.request_execution}.get(task.status)
    if step is None:
        return None
    try:
        outcome: TaskOutcome = await step(ctx, task.machine_id, task.id)
    except _FINAL as exc:
        await _give_up(tasks, task.id, cause, exc)
        return None
    except InvalidTransition:
        return await tasks.load(task.id)  # moved on meanwhile (a client took the step, or cancelled): look again
    return outcome.task


async def _give_up(tasks: TasksService, task_id: uuid.UUID, cause: Cause, exc: DomainError) -> None:
    code = NO_ROUTE if isinstance(exc, NoRoute) else exc.code
    log.info("%s: task %s cannot go on: %s", ACTOR, task_id, code)
    await tasks.give_up(context(ACTOR, cause, f"give-up:{cause.event_id}"), task_id, code, exc.detail)


async def advance_job(task_id: str, event_id: str, correlation_id: str | None = None) -> None:
    tasks, cause = await service(), await cause_of(event_id, correlation_id)
    try:
        task: Task | None = await tasks.load(uuid.UUID(task_id))
    except NotFound:
        log.warning("%s: task %s is gone; nothing to do", ACTOR, task_id)
        return
    while task is not None and task.auto:
        if task.status == EXECUTING:
            await run_task(task.id, cause, ACTOR)
            return
        task = await _next_step(tasks, task, cause)


advance_auto_task = dramatiq.actor(
    actor_name=ACTOR,
    queue_name="tasks",
    max_retries=20,
    time_limit=TIME_LIMIT_MS,  # it executes the task too
    min_backoff=500,
    max_backoff=60_000,
)(advance_job)
