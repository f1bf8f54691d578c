"""HTTP route for a stream's history: its events in version order, secrets redacted as in the audit feed."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, QueryParameter

from app.api.context import AUTHENTICATED, Principal, container_of, provide_principal
from app.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, encode_cursor
from app.api.problems import ApiError, problems
from app.api.schemas_history import EventMetadataView, StreamEventPage, StreamEventView
from app.api.time_travel import MAX_VERSION
from app.store.history import History, owner_of
from app.store.types import RecordedEvent
from domain.policies.aggregate import Policy
from domain.shared.errors import NotFound
from projections.audit import public_data
from projections.audit_names import public_name


def event_view(e: RecordedEvent, anonymous: bool = False) -> StreamEventView:
    """`anonymous`: who acted (actor, account, request and trace ids) is not the reader's to see."""
    m = {} if anonymous else e.metadata
    return StreamEventView(
        id=e.event_id, stream_id=e.stream_id, version=e.version, type=public_name(e.type),
        data=public_data(e.data),
        metadata=EventMetadataView(actor=m.get("actor"), account_id=m.get("accountId"), request_id=m.get("requestId"),
                                   correlation_id=m.get("correlationId"), causation_id=m.get("causationId")),
        recorded_at=e.recorded_at, log_position=e.log_position.token(),
    )


def readable(principal: Principal, first: RecordedEvent) -> bool:
    """Owner or admin; a platform policy's history is everyone's, as GET /v1/policies/{id} shows it to all
    (the flag is fixed at definition, so the first event decides)."""
    if principal.is_admin or owner_of(first) == principal.account_id:
        return True
    return first.stream_type == Policy.TOPIC and first.data.get("platform") is True


def _after(cursor: str) -> int:
    (version,) = decode_cursor(cursor, 1)
    if type(version) is not int or not 0 < version < MAX_VERSION:
        raise ApiError(400, "VALIDATION_ERROR", "cursor is not valid; use nextCursor from a previous page")
    return version


class StreamsController(Controller):
    path = "/v1/streams"
    tags = ["history"]
    security = AUTHENTICATED
    dependencies = {"principal": Provide(provide_principal)}

    @get("/{stream_id:uuid}/events", operation_id="listStreamEvents",
         summary="A stream's events in version order (owner or admin)",
         description="Every event of one stream (a machine, runtime endpoint, agent, graph, task, policy or account"
                     " id) with its public type, data (secrets redacted as in the audit feed), metadata and recorded"
                     " time. Another account's stream is 404; platform policies' streams are readable by every"
                     " account, as the policies are, without who acted (metadata fields null) unless the reader"
                     " is an admin or the owner.",
         responses=problems(400, 401, 404))
    async def list_(
        self, request: Request[Any, Any, Any], principal: NamedDependency[Principal], stream_id: FromPath[uuid.UUID],
        from_version: Annotated[int, QueryParameter(name="fromVersion", ge=1, le=MAX_VERSION)] = 1,
        to_version: Annotated[int | None, QueryParameter(name="toVersion", ge=1, le=MAX_VERSION)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
    ) -> StreamEventPage:
        history = History(container_of(request).pool)
        first = await history.first(stream_id)
        if first is None or not readable(principal, first):
            raise NotFound(f"stream {stream_id} not found")
        start = max(from_version, _after(cursor) + 1) if cursor else from_version
        events = await history.page(stream_id, from_version=start, to_version=to_version, limit=limit + 1)
        more = len(events) > limit
        # Another account reading a platform policy sees what changed, not which admin (or request) changed it.
        anonymous = not principal.is_admin and owner_of(first) != principal.account_id
        views = [event_view(e, anonymous) for e in events[:limit]]
        return StreamEventPage(data=views, next_cursor=encode_cursor(views[-1].version) if more else None)
