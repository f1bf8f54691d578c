"""Task execution: the actor that calls the sellers of a task's route, one recorded run at a time."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import dramatiq
import msgspec

from app.services.task_discovery import OfferSource, ReputationSource
from app.services.tasks import TasksService
from domain.shared.context import CommandContext
from domain.shared.errors import NotFound
from domain.tasks.aggregate import EXECUTING, Task
from domain.tasks.rules import MAX_FALLBACKS, MAX_TIMEOUT_MS
from workers import runtime
from workers.runtime import caused_by
from workers.tasks_calls import call_seller

log = logging.getLogger("mm.workers.tasks")
_sources: tuple[OfferSource, ReputationSource] | None = None


def use_sources(sources: tuple[OfferSource, ReputationSource] | None) -> None:
    """Other catalogue and reputation sources for the auto-task actors (tests); None: the read models."""
    global _sources
    _sources = sources


async def service() -> TasksService:
    c = await runtime.container()
    if _sources is None:
        return c.tasks
    return TasksService(c.repo, c.machines, *_sources)


class Cause(msgspec.Struct, frozen=True):
    """What set a message off: the triggering event (each command's causation) and its correlation id."""

    event_id: str
    correlation_id: str | None


def context(actor: str, cause: Cause, key: str | None) -> CommandContext:
    """Event ids derive from `key` when given, so a redelivered message appends nothing twice; every command
    of one message needs its own key (they share the causation id, from which ids would derive otherwise)."""
    return CommandContext(at=datetime.now(UTC), actor=f"worker:{actor}", causation_id=cause.event_id,
                          correlation_id=cause.correlation_id, idempotency_key=f"{actor}:{key or uuid.uuid4()}",
                          is_admin=True)


async def cause_of(event_id: str, correlation_id: str | None) -> Cause:
    return Cause(event_id, await caused_by(await runtime.container(), event_id, correlation_id))


async def execute_job(task_id: str, event_id: str, correlation_id: str | None = None) -> None:
    """Sent by the relay for an ExecutionRequested that a client recorded (advance_auto_task executes what it
    requests itself, and the relay sends nothing for those)."""
    try:
        await run_task(uuid.UUID(task_id), await cause_of(event_id, correlation_id), "execute_task")
    except NotFound:
        log.warning("execute_task: task %s is gone; nothing to do", task_id)


async def run_task(task_id: uuid.UUID, cause: Cause, actor: str,
                   first: tuple[Task, dict[str, Any] | None] | None = None) -> None:
    """Each run is recorded (RunStarted) before its call and its result after. A redelivery finds the open run
    and re-sends it under the same Idempotency-Key (the run id), or finds it finished and goes on from there.
    Loops until the task settles or its route is used up. `first`: the run the caller has just recorded."""
    c, tasks = await runtime.container(), await service()
    while True:
        if first is not None:
            (task, run), first = first, None
        else:
            # No derived key here: the aggregate hands out an open run again, and a race to start the same
            # attempt is settled by the stream's version (the loser reloads and gets the winner's run).
            task, run = await tasks.next_run(context(actor, cause, None), task_id)
        if run is None:
            return
        result = await call_seller(c, runtime.outbound(), task, run)
        finish = context(actor, cause, f"finish:{run['run_id']}")
        if (await tasks.finish_run(finish, task_id, result, loaded=task)).task.status != EXECUTING:
            return


# Every step of the longest route may use its whole timeout, plus time to record each run.
TIME_LIMIT_MS = (1 + MAX_FALLBACKS) * (MAX_TIMEOUT_MS + 15_000)

execute_task = dramatiq.actor(
    actor_name="execute_task",
    queue_name="tasks",
    max_retries=20,
    time_limit=TIME_LIMIT_MS,
    min_backoff=500,
    max_backoff=60_000,
)(execute_job)
