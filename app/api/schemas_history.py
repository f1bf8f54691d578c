"""Response bodies of the history endpoints: a stream's events and a causation trace (camelCase)."""

from __future__ import annotations

import uuid
from typing import Any, Literal

import msgspec

from app.api.schema_types import UtcTime


class EventMetadataView(msgspec.Struct, rename="camel", frozen=True):
    actor: str | None
    account_id: str | None
    request_id: str | None
    correlation_id: str | None
    causation_id: str | None


class StreamEventView(msgspec.Struct, rename="camel", frozen=True):
    id: uuid.UUID
    stream_id: uuid.UUID
    version: int
    type: str
    data: dict[str, Any]
    metadata: EventMetadataView
    recorded_at: UtcTime
    # Where the event sits in the global log: `mm projections rebuild NAME --as-of <this>` rebuilds to it.
    log_position: str


class StreamEventPage(msgspec.Struct, rename="camel", frozen=True):
    """One page of a list; nextCursor fetches the next (null on the last page)."""

    data: list[StreamEventView]
    next_cursor: str | None = None


class TraceNodeView(msgspec.Struct, rename="camel", frozen=True):
    """One node of a trace, listed depth-first: events, and the worker messages the relay sent for them."""

    id: str
    parent_id: str | None
    depth: int
    kind: Literal["event", "message"]
    type: str
    at: UtcTime
    stream_id: uuid.UUID | None = None
    version: int | None = None
    actor: str | None = None
    causation_id: str | None = None
    data: dict[str, Any] | None = None


class TraceView(msgspec.Struct, rename="camel", frozen=True):
    correlation_id: str
    started_at: UtcTime
    finished_at: UtcTime
    nodes: list[TraceNodeView]
    # True when the request caused more than the events shown (a runaway loop, most likely).
    truncated: bool = False
