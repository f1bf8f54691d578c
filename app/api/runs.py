"""HTTP routes for what tasks left behind: a machine's routes and outcomes, and runs (as buyer or as seller)."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, QueryParameter

from app.api.consistency import honour_min_position, wait_for
from app.api.context import AUTHENTICATED, Principal, container_of, provide_ctx, provide_principal, readable_machine
from app.api.openapi_headers import MIN_POSITION, headers
from app.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_time_cursor, encode_cursor
from app.api.problems import ApiError, problems
from app.api.schemas_tasks import (
    CapabilityFilterValue,
    OutcomePage,
    OutcomeStatus,
    RoutePage,
    RouteView,
    RunPage,
    RunStatus,
    RunView,
)
from app.api.task_views import outcome_row, route_row, run_row
from domain.shared.context import CommandContext
from domain.shared.errors import NotFound
from projections.tasks_reader import get_route, get_run, list_outcomes, list_routes, list_runs

Limit = Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)]
Cursor = Annotated[str | None, QueryParameter(max_length=512)]
TaskFilter = Annotated[uuid.UUID | None, QueryParameter(name="taskId")]
CapabilityFilter = Annotated[CapabilityFilterValue | None, QueryParameter(name="capability")]


class Role(enum.StrEnum):
    BUYER = "buyer"
    SELLER = "seller"


async def _read_your_writes(request: Request[Any, Any, Any],
                            read: Callable[[], Awaitable[dict[str, Any] | None]]) -> dict[str, Any] | None:
    """A route or run id names no stream to wait for, so a miss waits until the tasks read model holds every
    event committed before this request, then reads again: a GET of the Location a write just answered finds it."""
    row = await read()
    if row is None:
        container = container_of(request)
        head = await container.store.head()
        if head is not None:
            if not await wait_for(container.pool, "tasks", head, container.settings.read_your_writes_timeout_s):
                raise ApiError(503, "PROJECTION_LAGGING", "the tasks read model has not caught up yet; retry")
            row = await read()
    return row


def _next(rows: list[dict[str, Any]], limit: int, time_key: str, id_key: str) -> str | None:
    if len(rows) <= limit:
        return None
    last = rows[limit - 1]
    return encode_cursor(last[time_key].isoformat(), str(last[id_key]))


class TaskHistoryController(Controller):
    path = "/v1/machines/{machine_id:uuid}"
    tags = ["tasks"]
    security = AUTHENTICATED
    dependencies = {"principal": Provide(provide_principal), "ctx": Provide(provide_ctx)}

    @get("/routes", operation_id="listRoutes", opt=headers(honours=[MIN_POSITION]),
         summary="List the routes this machine's tasks resolved, each with its explanation",
         description="Oldest first; a task resolved again has one route per resolve (the task names the current"
                     " one). Filters: taskId, capability.", responses=problems(400, 401, 404, 409, 503))
    async def list_routes(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                          machine_id: FromPath[uuid.UUID], task_id: TaskFilter = None,
                          capability: CapabilityFilter = None, limit: Limit = DEFAULT_LIMIT,
                          cursor: Cursor = None) -> RoutePage:
        after = decode_time_cursor(cursor) if cursor else None
        await readable_machine(request, ctx, machine_id, "tasks")
        rows = await list_routes(container_of(request).pool, machine_id, task_id=task_id,
                                 capability=capability or None, after=after, limit=limit + 1)
        return RoutePage(data=[route_row(r) for r in rows[:limit]], next_cursor=_next(rows, limit, "created_at", "id"))

    @get("/routes/{route_id:uuid}", operation_id="getRoute", opt=headers(honours=[MIN_POSITION]),
         summary="Get a route and its explanation", responses=problems(400, 401, 404, 409, 503))
    async def get_route(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                        machine_id: FromPath[uuid.UUID], route_id: FromPath[uuid.UUID]) -> RouteView:
        await readable_machine(request, ctx, machine_id, "tasks")
        row = await _read_your_writes(request, lambda: get_route(container_of(request).pool, route_id))
        if row is None or row["machine_id"] != machine_id:
            raise NotFound(f"route {route_id} not found")
        return route_row(row)

    @get("/outcomes", operation_id="listOutcomes", opt=headers(honours=[MIN_POSITION]),
         summary="List the outcomes of this machine's finished tasks",
         description="In the order they finished. `output` is the seller's answer (the finishing run's body)."
                     " Filters: taskId, status (several allowed), capability.",
         responses=problems(400, 401, 404, 409, 503))
    async def list_outcomes(
        self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext], machine_id: FromPath[uuid.UUID],
        task_id: TaskFilter = None, status: Annotated[list[OutcomeStatus] | None, QueryParameter(name="status")] = None,
        capability: CapabilityFilter = None, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
    ) -> OutcomePage:
        after = decode_time_cursor(cursor) if cursor else None
        await readable_machine(request, ctx, machine_id, "tasks")
        rows = await list_outcomes(container_of(request).pool, machine_id, task_id=task_id,
                                   status=[s.value for s in status or []] or None, capability=capability or None,
                                   after=after, limit=limit + 1)
        return OutcomePage(data=[outcome_row(r) for r in rows[:limit]],
                           next_cursor=_next(rows, limit, "finished_at", "task_id"))


class RunsController(Controller):
    path = "/v1/runs"
    tags = ["tasks"]
    security = AUTHENTICATED
    dependencies = {"principal": Provide(provide_principal), "ctx": Provide(provide_ctx)}

    @get("/", operation_id="listRuns", opt=headers(honours=[MIN_POSITION]),
         summary="List a machine's runs, as the buyer (its tasks' calls) or as the seller (calls to it)",
         description="Oldest first. machineId must be one of the caller's operational machines. Filters: taskId,"
                     " status (several allowed), capability.", responses=problems(400, 401, 404, 409, 503))
    async def list_(
        self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
        machine_id: Annotated[uuid.UUID, QueryParameter(name="machineId")],
        role: Annotated[Role, QueryParameter(name="role")] = Role.BUYER, task_id: TaskFilter = None,
        status: Annotated[list[RunStatus] | None, QueryParameter(name="status")] = None,
        capability: CapabilityFilter = None, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
    ) -> RunPage:
        after = decode_time_cursor(cursor) if cursor else None
        await readable_machine(request, ctx, machine_id, "tasks")
        rows = await list_runs(container_of(request).pool, machine_id, role=role.value, task_id=task_id,
                               status=[s.value for s in status or []] or None, capability=capability or None,
                               after=after, limit=limit + 1)
        return RunPage(data=[run_row(r) for r in rows[:limit]], next_cursor=_next(rows, limit, "started_at", "id"))

    @get("/{run_id:uuid}", operation_id="getRun", opt=headers(honours=[MIN_POSITION]),
         summary="Get a run (the buyer's or the seller's account may read it)",
         responses=problems(400, 401, 404, 503))
    async def get_one(self, request: Request[Any, Any, Any], principal: NamedDependency[Principal],
                      run_id: FromPath[uuid.UUID]) -> RunView:
        container = container_of(request)
        await honour_min_position(request, container.pool, "tasks", container.settings.read_your_writes_timeout_s)
        account = None if principal.is_admin else principal.account_id
        row = await _read_your_writes(request, lambda: get_run(container.pool, run_id, account))
        if row is None:
            raise NotFound(f"run {run_id} not found")
        return run_row(row)
