"""Auto tasks: one actor drives a task from submission to its outcome (discover -> resolve -> request execution
-> execute), each step recorded as its own event and idempotent.

The relay sends it once, for an auto task's Submitted. Every step starts from the task's recorded state, so a
redelivery (after a crash anywhere) resumes where the stream stands, and a step a client already took is not
taken again. One message per task, not one per step: each hop through the relay and the broker costs a wake-up,
a claim and an ack, which under load queue behind every other task's (measured: ~4 hops of ~3 s each with a
busy worker). And the steps up to the first run are decided on one load and recorded in one append
(TasksService.advance_auto): the first run's RunStarted is committed, before the call, with the decisions that
led to it. A step that cannot go on (NO_ROUTE, the buyer machine no longer active) fails the task on the record
instead of raising: an auto task never waits forever.
"""

from __future__ import annotations

import logging
import uuid

import dramatiq

from domain.machines.errors import MachineNotActivated, MachineNotActive
from domain.shared.context import CommandContext
from domain.shared.errors import DomainError, NotFound
from domain.tasks.aggregate import EXECUTING
from projections.relay import AUTO_ACTOR
from workers.tasks import TIME_LIMIT_MS, cause_of, context, run_task, service

log = logging.getLogger("mm.workers.tasks")
ACTOR = AUTO_ACTOR


async def advance_job(task_id: str, event_id: str, correlation_id: str | None = None,
                      machine_id: str | None = None) -> None:
    """`machine_id`: the buyer's, as the relay sends it (messages sent before it did have none)."""
    tasks, cause = await service(), await cause_of(event_id, correlation_id)
    task_uuid = uuid.UUID(task_id)
    try:
        task, run = await tasks.advance_auto(context(ACTOR, cause, None), task_uuid,
                                             uuid.UUID(machine_id) if machine_id else None)
    except NotFound:
        log.warning("%s: task %s is gone; nothing to do", ACTOR, task_id)
        return
    except (MachineNotActive, MachineNotActivated) as exc:
        await _give_up(task_uuid, exc, context(ACTOR, cause, f"give-up:{event_id}"))
        return
    if task.auto and task.status == EXECUTING:
        await run_task(task_uuid, cause, ACTOR, first=(task, run))


async def _give_up(task_id: uuid.UUID, exc: DomainError, ctx: CommandContext) -> None:
    log.info("%s: task %s cannot go on: %s", ACTOR, task_id, exc.code)
    await (await service()).give_up(ctx, task_id, exc.code, exc.detail)


advance_auto_task = dramatiq.actor(
    actor_name=ACTOR,
    queue_name="tasks",
    max_retries=20,
    time_limit=TIME_LIMIT_MS,  # it executes the task too
    min_backoff=500,
    max_backoff=60_000,
)(advance_job)
