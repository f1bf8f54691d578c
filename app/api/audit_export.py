"""GET /v1/audit-events/export: the whole (filtered) feed as one streamed NDJSON, CSV or CloudEvents download."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

import asyncpg
from litestar import Controller, Request, get
from litestar.di import NamedDependency, Provide
from litestar.params import QueryParameter
from litestar.response import Stream

from app.api.audit import (
    AuditEventView,
    CorrelationFilter,
    MachineFilter,
    Since,
    TextFilter,
    TypeFilter,
    Until,
    audit_filter,
    parse_cursor,
)
from app.api.audit_formats import EXTENSIONS, MEDIA_TYPES, RENDER, CheckpointLine, ExportFormat, csv_header
from app.api.consistency import honour_min_position
from app.api.context import AUTHENTICATED, Principal, container_of, provide_principal
from app.api.openapi_headers import MIN_POSITION, headers
from app.api.problems import problems
from projections.audit_reader import AuditFilter, export_batch, export_lines, last_position

# NDJSON lines come ready-made from PostgreSQL (each record's stored when the audit projection wrote it, see
# projections/audit_reader.py); the other formats are rendered here from the rows.
FETCH = {"ndjson": export_lines, "csv": export_batch, "cloudevents": export_batch}

_LINE = {"oneOf": [{"$ref": "#/components/schemas/AuditEventView"},
                   {"$ref": "#/components/schemas/CheckpointLine"}]}
_CONTENT = {
    MEDIA_TYPES["ndjson"]: {"schema": _LINE, "description": "one JSON record per line"},
    MEDIA_TYPES["csv"]: {"schema": {"type": "string"}},
    MEDIA_TYPES["cloudevents"]: {"schema": {"type": "string"},
                                 "description": "one CloudEvents 1.0 structured-mode JSON event per line"},
}
_DESCRIPTION = """The feed, filtered as `GET /v1/audit-events` filters it, streamed in log order up to where it
ended when the export started. Every record carries its `cursor`: `?after=<cursor>` resumes strictly after
it (no gap, no duplicate). A signed checkpoint line follows each record a checkpoint ends at.

Formats: `ndjson` (`application/x-ndjson`: feed records, plus `{"kind": "checkpoint", ...}` lines);
`csv` (`text/csv`, header `kind,cursor,id,type,occurredAt,actor,accountId,machineId,subject,requestId,
correlationId,causationId,seq,prevHash,hash,data`; checkpoint rows have kind `checkpoint`, their count in
`seq`, their lastHash in `hash`, keyId and signature in `data`); `cloudevents`
(`application/cloudevents+x-ndjson`: CloudEvents 1.0 structured records, extensions `cursor`, `seq`,
`prevhash`, `hash`; checkpoints have type `audit.checkpoint`). A response cut short (a lost connection) ends
without its final chunk, so a client can tell it from a complete one and resume from its last cursor."""


async def _stream(pool: asyncpg.Pool, filt: AuditFilter, after: tuple[int, int] | None, upto: tuple[int, int],
                  batch: int, fmt: str, first: list[asyncpg.Record]) -> AsyncIterator[bytes]:
    """Keyset batches, each one short statement on a pooled connection, written as they are read.

    Why not one server-side cursor: an export as slow as its client would hold a transaction (and a pool
    connection) open for minutes, which MM_IDLE_IN_TRANSACTION_TIMEOUT_MS rightly kills while the client
    reads, and which would pin the vacuum horizon meanwhile. The table is appended to in (tx_id, position)
    order, so each batch resumes exactly after the previous one and the export is gap-free; the `upto`
    bound taken at the start makes it a snapshot of the feed as it was then. Memory: two batches, since the
    next one is read while this one is written (the database renders while this process sends).
    """
    render, fetch, rows = RENDER[fmt], FETCH[fmt], first
    if fmt == "csv":
        yield csv_header()
    ahead: asyncio.Task[list[asyncpg.Record]] | None = None
    try:
        while rows:
            if len(rows) == batch:
                ahead = asyncio.ensure_future(fetch(pool, filt, (rows[-1]["tx_id"], rows[-1]["position"]), upto,
                                                    batch))
            yield render(rows)
            if ahead is None:
                return
            rows, ahead = await ahead, None
    finally:
        if ahead is not None:  # the client went away: do not leave the read running
            ahead.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await ahead


class AuditExportController(Controller):
    path = "/v1/audit-events"
    tags = ["audit"]
    security = AUTHENTICATED
    dependencies = {"principal": Provide(provide_principal)}

    @get("/export", operation_id="exportAuditEvents", summary="Export audit events (streamed)",
         description=_DESCRIPTION, responses=problems(400, 401, 503),
         opt={**headers(honours=[MIN_POSITION]), "openapi_content": {"200": _CONTENT},
              "openapi_components": (AuditEventView, CheckpointLine)})
    async def export(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        format_: Annotated[ExportFormat, QueryParameter(name="format")] = "ndjson",
        type_: TypeFilter = None,
        machine_id: MachineFilter = None,
        subject: TextFilter = None,
        actor: TextFilter = None,
        correlation_id: CorrelationFilter = None,
        since: Since = None,
        until: Until = None,
        after: Annotated[str | None, QueryParameter(max_length=512, description="resume strictly after this"
                                                                                 " record's cursor")] = None,
    ) -> Stream:
        container = container_of(request)
        start = parse_cursor(after, "after")
        filt = audit_filter(principal, type_, machine_id, subject, actor, since, until, correlation_id)
        await honour_min_position(request, container.pool, "audit", container.settings.read_your_writes_timeout_s)
        batch = container.settings.audit_export_batch_size
        # The first batch is read before the response starts, so an unavailable database is still a 503.
        upto = await last_position(container.pool)
        first = await FETCH[format_](container.pool, filt, start, upto, batch) if upto is not None else []
        return Stream(
            _stream(container.pool, filt, start, upto or (0, 0), batch, format_, first),
            media_type=MEDIA_TYPES[format_],
            headers={"Content-Disposition": f'attachment; filename="audit-events.{EXTENSIONS[format_]}"',
                     "Cache-Control": "no-store"},
        )
