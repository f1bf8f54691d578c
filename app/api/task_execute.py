"""POST .../tasks/{taskId}/execute: record the request, wait for the worker's outcome, answer with its status.

The handler never calls a seller. It records ExecutionRequested (the relay hands it to a worker), then waits on
the outcomes read model (woken by the tasks projection's NOTIFY) for up to `Prefer: wait=N` seconds.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency, Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath

from app.api.consistency import write_headers
from app.api.context import AUTHENTICATED, container_of, provide_ctx, provide_principal
from app.api.openapi_headers import LOCATION, LOG_POSITION, PREFER, PREFERENCE_APPLIED, headers
from app.api.problems import ApiError, problems
from app.api.schemas_tasks import ExecutionView, OutcomeView, TaskStatus
from app.api.task_views import outcome_row
from domain.shared.context import CommandContext
from domain.tasks import rules
from domain.tasks.aggregate import Task
from projections.tasks_reader import get_outcome, latest_run_id

DEFAULT_WAIT_S, MAX_WAIT_S = 30, 120
_WAIT = re.compile(r"^\s*wait\s*=\s*\"?(\d{1,9})\"?\s*$", re.IGNORECASE)
# The seller's 4xx answers relayed as they are (401/403/407 are ours to answer as 502; 429 is retried). Any other
# 4xx a seller may send is relayed as 422, so every status this route can answer is documented.
RELAYED_4XX = (400, 402, 404, 405, 406, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 418, 421, 422, 423, 424,
               425, 426, 428, 431, 451)


class Preferences:
    """RFC 7240 Prefer, as far as this route honours it: wait=N (clamped to MAX_WAIT_S) and respond-async."""

    def __init__(self, header: str | None) -> None:
        self.wait_s: int = DEFAULT_WAIT_S
        self.asked_wait = self.respond_async = False
        for item in (header or "").split(","):
            token = item.split(";", 1)[0]
            if match := _WAIT.match(token):
                self.wait_s, self.asked_wait = min(int(match.group(1)), MAX_WAIT_S), True
            elif token.strip().lower() == "respond-async":
                self.respond_async = True
        if self.respond_async:
            self.wait_s = 0

    def applied(self) -> dict[str, str]:
        if self.respond_async:
            return {"Preference-Applied": "respond-async"}
        return {"Preference-Applied": f"wait={self.wait_s}"} if self.asked_wait else {}


def settled(task: Task) -> dict[str, Any] | None:
    """The outcome as the task's own stream has it (what the read model will show), if it has finished: a
    finished task is answered at once, without waiting for the projection."""
    if task.outcome is None:
        return None
    o = task.outcome
    body = next((r.get("body") for r in task.runs if r["run_id"] == o["run_id"]), None)
    return {"task_id": task.id, "machine_id": task.machine_id, "capability": task.capability, "status": o["status"],
            "code": o["code"], "detail": o["detail"], "run_id": o["run_id"], "http_status": o["http_status"],
            "output": body, "finished_at": o["finished_at"]}


def answer_failure(row: dict[str, Any]) -> ApiError:
    """A failed (or cancelled) outcome as the problem execute answers with, the seller's body included."""
    code, status = row["code"] or "TASK_FAILED", row["http_status"]
    extra = {"taskId": str(row["task_id"]), "runId": str(row["run_id"]) if row["run_id"] else None,
             "upstreamStatus": status}
    detail = row["detail"] or f"the task {row['status']}"
    if code == rules.UPSTREAM_REJECTED:
        relayed = status if status in RELAYED_4XX else 422
        return ApiError(relayed, code, detail, **extra, upstreamBody=row["output"])
    if code == rules.UPSTREAM_TIMEOUT:
        return ApiError(504, code, detail, **extra)
    if code in (rules.UPSTREAM_AUTH_FAILED, rules.UPSTREAM_FAILED):
        return ApiError(502, code, detail, **extra)
    # Failed before any call (an auto task that found no route, say), or cancelled: a conflict with its state.
    return ApiError(409, code if row["status"] == "failed" else "TASK_CANCELLED", detail, **extra)


_DESCRIPTION = (
    "Records the execution request (a worker calls the sellers on the route: the chosen one, then the fallbacks"
    " on a retryable failure) and waits for the task's outcome up to `Prefer: wait=N` seconds (default 30, at"
    " most 120; `respond-async` or `wait=0` answers at once). Then: the seller answered 2xx -> 200 with the"
    " outcome, the seller's JSON as `output`; the seller refused the input with a 4xx -> that status as a"
    " problem UPSTREAM_REJECTED carrying the seller's body in `extra.upstreamBody` (a 4xx outside the documented"
    " ones is answered 422); the seller refused the platform's credentials (401/403/407) -> 502"
    " UPSTREAM_AUTH_FAILED; every seller failed -> 502 UPSTREAM_FAILED; the last one timed out -> 504"
    " UPSTREAM_TIMEOUT. Not finished in time -> 202 with `Location: /v1/runs/{runId}` (the run under way), or the"
    " task's own URL while no run has started yet. Executing an executing or finished task records nothing and"
    " answers the same way. 409 ROUTE_REQUIRED before a route is resolved."
)


class TaskExecutionController(Controller):
    path = "/v1/machines/{machine_id:uuid}/tasks"
    tags = ["tasks"]
    security = AUTHENTICATED
    dependencies = {"principal": Provide(provide_principal), "ctx": Provide(provide_ctx)}

    @post("/{task_id:uuid}/execute", operation_id="executeTask", status_code=200,
          opt=headers(honours=[PREFER], sends=[LOG_POSITION, LOCATION, PREFERENCE_APPLIED]),
          summary="Execute the resolved route and answer with the seller's result", description=_DESCRIPTION,
          responses={**problems(401, 502, 504, *RELAYED_4XX),
                     202: ResponseSpec(data_container=ExecutionView, description="Accepted: still executing;"
                                       " follow Location")})
    async def execute(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                      machine_id: FromPath[uuid.UUID], task_id: FromPath[uuid.UUID]) -> Response[OutcomeView]:
        container = container_of(request)
        prefs = Preferences(request.headers.get("prefer"))
        outcome = await container.tasks.request_execution(ctx, machine_id, task_id)
        extra = {**prefs.applied()}
        row = settled(outcome.task)
        if row is None:
            row = await (container.outcomes.wait(task_id, prefs.wait_s) if prefs.wait_s > 0
                         else get_outcome(container.pool, task_id))
        if row is None:
            run_id = await latest_run_id(container.pool, task_id)
            location = f"/v1/runs/{run_id}" if run_id else f"/v1/machines/{machine_id}/tasks/{task_id}"
            view = ExecutionView(task_id=task_id, status=TaskStatus.EXECUTING, run_id=run_id, outcome=None)
            return Response(view, status_code=202,  # type: ignore[arg-type]
                            headers=write_headers(None, outcome.position, Location=location, **extra))
        if row["status"] != "succeeded":
            raise answer_failure(row)
        return Response(outcome_row(row), headers=write_headers(None, outcome.position, **extra))

