"""Auto tasks: the relay drives discover -> resolve -> request execution through these actors, each idempotent.

Each actor re-checks the task's state first (a redelivery, or a step a client already took, does nothing), and
derives its events' ids from the message's event id. A step that cannot go on (NO_ROUTE, the buyer machine no
longer active) fails the task on the record instead of raising: an auto task never waits forever.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

import dramatiq

from domain.machines.errors import MachineNotActivated, MachineNotActive
from domain.shared.errors import DomainError, InvalidTransition, NotFound
from domain.tasks.aggregate import DISCOVERED, NO_ROUTE, QUEUED, RESOLVED, Task
from domain.tasks.errors import NoRoute
from workers.tasks import context, service

log = logging.getLogger("mm.workers.tasks")
# Refusals that end an auto task: recorded as its failure with the refusal's code.
_FINAL = (NoRoute, MachineNotActive, MachineNotActivated)


async def _load(task_id: uuid.UUID, want: str, step: str) -> Task | None:
    """The auto task if it is still at `want` (else this message has nothing to do)."""
    tasks = await service()
    try:
        task = await tasks.load(task_id)
    except NotFound:
        log.warning("%s: task %s is gone; nothing to do", step, task_id)
        return None
    return task if task.auto and task.status == want else None


async def _step(actor: str, task_id: str, event_id: str, want: str) -> None:
    task_uuid = uuid.UUID(task_id)
    task = await _load(task_uuid, want, actor)
    if task is None:
        return
    tasks = await service()
    ctx = context(actor, event_id, event_id)
    try:
        if want == QUEUED:
            await tasks.discover(ctx, task.machine_id, task_uuid)
        elif want == DISCOVERED:
            await tasks.resolve(ctx, task.machine_id, task_uuid)
        else:
            await tasks.request_execution(ctx, task.machine_id, task_uuid)
    except _FINAL as exc:
        await _give_up(actor, task_uuid, event_id, exc)
    except InvalidTransition:
        pass  # the task moved on between the check and the command (cancelled, or a client took the step)


async def _give_up(actor: str, task_id: uuid.UUID, event_id: str, exc: DomainError) -> None:
    code = NO_ROUTE if isinstance(exc, NoRoute) else exc.code
    log.info("%s: task %s cannot go on: %s", actor, task_id, code)
    await (await service()).give_up(context(actor, event_id, f"give-up:{event_id}"), task_id, code, exc.detail)


async def discover_job(task_id: str, event_id: str) -> None:
    """Sent for an auto task's Submitted."""
    await _step("discover_task", task_id, event_id, QUEUED)


async def resolve_job(task_id: str, event_id: str) -> None:
    """Sent for every Discovered; acts on auto tasks only."""
    await _step("resolve_task", task_id, event_id, DISCOVERED)


async def request_execution_job(task_id: str, event_id: str) -> None:
    """Sent for every Resolved; acts on auto tasks only (the relay then sends execute_task)."""
    await _step("request_task_execution", task_id, event_id, RESOLVED)


def _actor(name: str, fn: Callable[[str, str], Awaitable[None]]) -> dramatiq.Actor[[str, str], None]:
    return dramatiq.actor(actor_name=name, queue_name="tasks", max_retries=20, time_limit=60_000, min_backoff=500,
                          max_backoff=60_000)(fn)


discover_task = _actor("discover_task", discover_job)
resolve_task = _actor("resolve_task", resolve_job)
request_task_execution = _actor("request_task_execution", request_execution_job)
