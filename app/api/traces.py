"""HTTP route for causation traces: every event one request caused, through the workers, as a tree with times."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath

from app.api.context import AUTHENTICATED, Principal, container_of, provide_principal
from app.api.problems import problems
from app.api.schemas_history import TraceNodeView, TraceView
from app.store.history import MAX_TRACE_EVENTS, History, owner_of
from app.trace_tree import build
from domain.shared.errors import NotFound

TraceId = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class TracesController(Controller):
    path = "/v1/traces"
    tags = ["history"]
    security = AUTHENTICATED
    dependencies = {"principal": Provide(provide_principal)}

    @get("/{correlation_id:str}", operation_id="getTrace",
         summary="Everything one request caused, through the workers, as a tree with times",
         description="`correlationId` is a command's X-Request-Id (or the X-Correlation-Id it was sent with)."
                     " Nodes are listed depth first: each event (public type, redacted data, stream, version, actor)"
                     " and each message the relay sent for it (actor name, due time), with `parentId` its cause."
                     " Non-admins see the events of their own account's streams; none at all is 404.",
         responses=problems(400, 401, 404))
    async def get_one(self, request: Request[Any, Any, Any], principal: NamedDependency[Principal],
                      correlation_id: FromPath[TraceId]) -> TraceView:
        events = await History(container_of(request).pool).traced(correlation_id)
        truncated = len(events) > MAX_TRACE_EVENTS
        events = events[:MAX_TRACE_EVENTS]
        if not principal.is_admin:
            events = [e for e in events if owner_of(e) == principal.account_id]
        if not events:
            raise NotFound(f"no events with correlation id {correlation_id!r}")
        nodes = [TraceNodeView(**msgspec.structs.asdict(n)) for n in build(events)]
        return TraceView(correlation_id=correlation_id, started_at=min(e.recorded_at for e in events),
                         finished_at=max(e.recorded_at for e in events), nodes=nodes, truncated=truncated)
