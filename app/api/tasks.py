"""HTTP routes for a machine's tasks: submit, list, read, cancel, discover and resolve (execute: task_execute.py)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter

from app.api.consistency import etag, honour_min_position, write_headers
from app.api.context import AUTHENTICATED, container_of, provide_ctx, provide_principal, readable_machine
from app.api.openapi_headers import AS_OF_VERSION, ETAG, LOCATION, LOG_POSITION, MIN_POSITION, headers
from app.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_time_cursor, encode_cursor
from app.api.problems import problems
from app.api.schemas_tasks import (
    CancelTaskRequest,
    CapabilityFilterValue,
    ConstraintsBody,
    CreateTaskRequest,
    RouteView,
    TaskPage,
    TaskStatus,
    TaskView,
)
from app.api.task_views import route_of, route_preview, task_of, task_row
from app.api.time_travel import AsOfParam, VersionParam, as_of_headers, load_guarded, point_in_time
from app.services.tasks import TaskOutcome
from domain.shared.context import CommandContext
from domain.shared.errors import NotFound
from domain.tasks.aggregate import Task
from projections.tasks_reader import get_task, list_tasks

_TASK = "/{task_id:uuid}"


def _respond(outcome: TaskOutcome, status: int = 200, **extra: str) -> Response[TaskView]:
    return Response(task_of(outcome.task), status_code=status,
                    headers=write_headers(outcome.task.version, outcome.position, **extra))


def task_url(task: Task) -> str:
    return f"/v1/machines/{task.machine_id}/tasks/{task.id}"


class TasksController(Controller):
    path = "/v1/machines/{machine_id:uuid}/tasks"
    tags = ["tasks"]
    security = AUTHENTICATED
    dependencies = {"principal": Provide(provide_principal), "ctx": Provide(provide_ctx)}
    request_max_body_size = 128 * 1024

    @post("/", operation_id="createTask", opt=headers(sends=[ETAG, LOG_POSITION, LOCATION]), status_code=201,
          summary="Submit a task (queued; with auto=true the platform drives it to its outcome)",
          description="The machine is the buyer. `input` is any JSON value up to 64 KiB; sellers validate it"
                      " against their inputSchema at discovery.",
          responses=problems(400, 401, 403, 404, 409, 413, 422))
    async def create(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                     machine_id: FromPath[uuid.UUID], data: JSONBody[CreateTaskRequest]) -> Response[TaskView]:
        constraints = (data.constraints or ConstraintsBody()).command()
        outcome = await container_of(request).tasks.submit(ctx, machine_id, capability=data.capability,
                                                           input=data.input, constraints=constraints, auto=data.auto)
        return _respond(outcome, 201, Location=task_url(outcome.task))

    @get("/", operation_id="listTasks", opt=headers(honours=[MIN_POSITION]), summary="List a machine's tasks",
         description="Oldest first. Filters: status (several allowed), capability.",
         responses=problems(400, 401, 404, 409, 503))
    async def list_(
        self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext], machine_id: FromPath[uuid.UUID],
        status: Annotated[list[TaskStatus] | None, QueryParameter(name="status")] = None,
        capability: Annotated[CapabilityFilterValue | None, QueryParameter(name="capability")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
    ) -> TaskPage:
        after = decode_time_cursor(cursor) if cursor else None
        await readable_machine(request, ctx, machine_id, "tasks")
        rows = await list_tasks(container_of(request).pool, machine_id, status=[s.value for s in status or []] or None,
                                capability=capability or None, after=after, limit=limit + 1)
        more, rows = len(rows) > limit, rows[:limit]
        return TaskPage(data=[task_row(r) for r in rows],
                        next_cursor=encode_cursor(rows[-1]["created_at"].isoformat(), str(rows[-1]["id"]))
                        if more else None)

    @get(_TASK, operation_id="getTask", opt=headers(honours=[MIN_POSITION], sends=[ETAG, AS_OF_VERSION]),
         summary="Get a task (now, or asOf a time / at a version)", responses=problems(400, 401, 404, 409, 422, 503))
    async def get_one(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                      machine_id: FromPath[uuid.UUID], task_id: FromPath[uuid.UUID], as_of: AsOfParam = None,
                      version: VersionParam = None) -> Response[TaskView]:
        point = point_in_time(as_of, version)
        if point is not None:
            c = container_of(request)
            task = await load_guarded(c, c.machines.require_operational(ctx, machine_id), Task, task_id, point,
                                      "task")
            # Buyer machine and account never change, so the past version answers who may see it as now.
            if task.machine_id != machine_id or (not ctx.is_admin and task.account_id != ctx.account_id):
                raise NotFound(f"task {task_id} not found")
            return Response(task_of(task), headers=as_of_headers(task.version))
        await readable_machine(request, ctx, machine_id, "tasks", task_id)
        row = await get_task(container_of(request).pool, machine_id, task_id)
        if row is None:
            raise NotFound(f"task {task_id} not found")
        return Response(task_row(row), headers={"ETag": etag(row["version"])})

    @post(_TASK + "/cancel", operation_id="cancelTask", opt=headers(sends=[ETAG, LOG_POSITION]), status_code=200,
          summary="Cancel a task before it executes",
          description="409 TASK_NOT_CANCELLABLE once execution was requested or the task finished. Cancelling a"
                      " cancelled task changes nothing.", responses=problems(400, 401, 404, 409, 422))
    async def cancel(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                     machine_id: FromPath[uuid.UUID], task_id: FromPath[uuid.UUID],
                     data: JSONBody[CancelTaskRequest | None] = None) -> Response[TaskView]:
        reason = data.reason if data else None
        return _respond(await container_of(request).tasks.cancel(ctx, machine_id, task_id, reason))

    @post(_TASK + "/discover", operation_id="discoverTask", status_code=200,
          opt=headers(honours=[MIN_POSITION], sends=[ETAG, LOG_POSITION]),
          summary="Find the listings that can serve this task and record them as its candidates",
          description="Filters the catalogue's listings of the task's capability by the constraints, by the input"
                      " validating against each listing's inputSchema, and leaves out the buyer's own machine."
                      " Every listing left out is recorded with the reason (`dropped`; for listings the"
                      " constraints exclude, the cheapest few are named). May run again until a route is"
                      " resolved; 409 INVALID_STATE_TRANSITION after that. X-Min-Position (e.g. from the seller's"
                      " last write) waits until the catalogue includes that write.",
          responses=problems(400, 401, 404, 409, 422, 503))
    async def discover(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                       machine_id: FromPath[uuid.UUID], task_id: FromPath[uuid.UUID]) -> Response[TaskView]:
        container = container_of(request)
        await honour_min_position(request, container.pool, "catalogue", container.settings.read_your_writes_timeout_s)
        return _respond(await container.tasks.discover(ctx, machine_id, task_id))

    @post(_TASK + "/resolve", operation_id="resolveTask", opt=headers(sends=[LOG_POSITION, LOCATION]),
          status_code=201, summary="Pick a route from the recorded candidates and record it, with why",
          description="Scores the candidates by the task's strategy from their price snapshot and the sellers'"
                      " observed reputation; sellers cooling down are excluded. The route holds the chosen"
                      " candidate and up to `fallbacks` more, and the explanation: every candidate's rank, score,"
                      " features and reason, the excluded ones and discovery's drops. 409 NO_ROUTE when no"
                      " candidate is left (the detail names the drops). `?dryRun=true` answers 200 with the route"
                      " it would record and the policies' decision on it (`policy`), recording nothing; a dry run"
                      " that an enforced policy would refuse answers 403 POLICY_DENIED as resolve would, with no"
                      " decisionId (nothing recorded). 403 POLICY_DENIED when an enforced policy refuses the"
                      " chosen seller (policyId, rule, reason, decisionId in the problem).",
          responses={**problems(400, 401, 403, 404, 409, 422),
                     200: ResponseSpec(data_container=RouteView,
                                       description="dry run: the route resolve would record; nothing recorded")})
    async def resolve(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                      machine_id: FromPath[uuid.UUID], task_id: FromPath[uuid.UUID],
                      dry_run: Annotated[bool, QueryParameter(name="dryRun")] = False) -> Response[RouteView]:
        tasks = container_of(request).tasks
        if dry_run:
            return Response(route_preview(await tasks.preview_route(ctx, machine_id, task_id)), status_code=200)
        outcome = await tasks.resolve(ctx, machine_id, task_id)
        view = route_of(outcome.task)
        location = f"/v1/machines/{machine_id}/routes/{view.id}"
        return Response(view, status_code=201, headers=write_headers(None, outcome.position, Location=location))
