"""GET /v1/audit-events/stream: the feed live, as Server-Sent Events, resumable with Last-Event-ID."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, Any

import asyncpg
import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency, Provide
from litestar.params import QueryParameter
from litestar.response import Stream

from app.api.audit import (
    CorrelationFilter,
    MachineFilter,
    Since,
    TextFilter,
    TypeFilter,
    Until,
    audit_filter,
    parse_cursor,
)
from app.api.context import AUTHENTICATED, Principal, container_of, provide_principal
from app.api.openapi_headers import LAST_EVENT_ID, headers
from app.api.pagination import encode_cursor
from app.api.problems import problems
from app.audit_sse import sse_frame
from app.audit_tail import AuditTail, Position, Subscriber
from app.settings import Settings
from projections.audit_reader import AuditFilter, export_batch

_encode = msgspec.json.Encoder().encode
_DESCRIPTION = """Every new record matching the feed's filters, as it lands: `id:` is the record's cursor,
`event:` its type, `data:` the record (as the NDJSON export writes it). Reconnecting with `Last-Event-ID` (or
`?after=<cursor>`) resumes strictly after that record: no gap, no duplicate. Without either, the stream starts
at the feed's end and its first frame carries the `id:` to resume from. A `: keep-alive` comment comes every
MM_AUDIT_STREAM_KEEPALIVE_S (15 s) of silence. A client that falls more than MM_AUDIT_STREAM_QUEUE_SIZE records
behind, or is connected for MM_AUDIT_STREAM_MAX_S, gets a final `event: resume` whose `id:` and
`data: {"reason": "slow-consumer" | "lifetime", "after": <cursor>}` say where to reconnect; then the stream ends."""


# One Server-Sent Event as a client parses it (comments and id-only frames dispatch none).
_EVENT = {"type": "object", "required": ["data"], "properties": {
    "id": {"type": "string", "description": "the record's cursor (on `resume`: where to reconnect from)"},
    "event": {"type": "string", "description": "the record's type, or `resume`"},
    "data": {"type": "string", "description": "the record as JSON (as the NDJSON export writes it); on `resume`,"
                                              ' {"reason": "slow-consumer" | "lifetime", "after": <cursor>}'},
}}


def _resume(reason: str, after: Position) -> bytes:
    cursor = encode_cursor(*after)
    return b"id: %s\nevent: resume\ndata: %s\n\n" % (cursor.encode(), _encode({"reason": reason, "after": cursor}))


async def events(tail: AuditTail, pool: asyncpg.Pool, filt: AuditFilter, after: Position | None,
                 settings: Settings) -> AsyncGenerator[bytes, None]:
    """Catch up from the table to the tail's position, then follow the tail's queue: the subscriber is
    registered first, so every row past its start reaches the queue while the catch-up reads up to it."""
    sub: Subscriber = await tail.subscribe(filt, settings.audit_stream_queue_size)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.audit_stream_max_s
    try:
        if after is None:
            last = sub.start
            yield b": connected\nid: %s\n\n" % encode_cursor(*last).encode()  # sets Last-Event-ID, no event
        else:
            last = after
            yield b": connected\n\n"
            while True:  # a backlog bigger than the queue: catch up again from where the tail now is
                while rows := await export_batch(pool, filt, last, sub.start, settings.audit_export_batch_size):
                    yield b"".join(sse_frame(r) for r in rows)
                    last = (rows[-1]["tx_id"], rows[-1]["position"])
                if not sub.overflowed:
                    break
                tail.unsubscribe(sub)
                sub = await tail.subscribe(filt, settings.audit_stream_queue_size)
        while True:
            wait = min(settings.audit_stream_keepalive_s, deadline - loop.time())
            if wait <= 0:
                yield _resume("lifetime", last)
                return
            chunks = await sub.take(wait)
            if not chunks and not sub.overflowed:
                yield b": keep-alive\n\n"
                continue
            # Whole chunks: the tail offers only rows past `sub.start`, which the catch-up stopped at.
            fresh = [chunk for at, chunk in chunks if at > last]
            if fresh:
                last = chunks[-1][0]
            if sub.overflowed:
                yield b"".join([*fresh, _resume("slow-consumer", last)])
                return
            if fresh:
                yield fresh[0] if len(fresh) == 1 else b"".join(fresh)  # everything queued, in one write
    finally:
        tail.unsubscribe(sub)


class AuditStreamController(Controller):
    path = "/v1/audit-events"
    tags = ["audit"]
    security = AUTHENTICATED
    dependencies = {"principal": Provide(provide_principal)}

    @get("/stream", operation_id="streamAuditEvents", summary="Follow audit events live (Server-Sent Events)",
         description=_DESCRIPTION, responses=problems(400, 401, 503),
         opt={**headers(honours=[LAST_EVENT_ID]),
              "openapi_content": {"200": {"text/event-stream": {"schema": _EVENT}}}})
    async def stream(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        type_: TypeFilter = None,
        machine_id: MachineFilter = None,
        subject: TextFilter = None,
        actor: TextFilter = None,
        correlation_id: CorrelationFilter = None,
        since: Since = None,
        until: Until = None,
        after: Annotated[str | None, QueryParameter(max_length=512, description="resume strictly after this"
                                                    " record's cursor (Last-Event-ID wins)")] = None,
    ) -> Stream:
        container = container_of(request)
        start = parse_cursor(request.headers.get("last-event-id") or after,
                             "Last-Event-ID" if request.headers.get("last-event-id") else "after")
        filt = audit_filter(principal, type_, machine_id, subject, actor, since, until, correlation_id)
        gen = events(container.audit_tail, container.pool, filt, start, container.settings)
        first = await anext(gen)  # subscribed before the response starts, so a database outage is still a 503
        return Stream(_prepend(first, gen), media_type="text/event-stream",
                      headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _prepend(first: bytes, rest: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        with contextlib.suppress(Exception):
            await rest.aclose()  # unsubscribes at once, also when the client went away
