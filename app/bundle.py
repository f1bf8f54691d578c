"""Debug bundles: every stream and event behind one trace, as JSON that replays offline (no database).

Secrets are redacted before they leave the server (a digest or nonce becomes "[redacted]", a sealed token
stays out too); the placeholder keeps each event's shape, so the aggregates still replay from it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import msgspec

from app.replay import redact
from app.store.history import MAX_TRACE_EVENTS, History
from app.store.types import RecordedEvent
from app.trace_tree import Node, build
from projections.audit_names import REDACTED_KEYS

FORMAT = "mm-debug-bundle/1"


class BundleStream(msgspec.Struct, rename="camel", frozen=True):
    stream_id: uuid.UUID
    stream_type: str
    events: list[RecordedEvent]


class Bundle(msgspec.Struct, rename="camel", frozen=True):
    format: str
    correlation_id: str
    created_at: datetime
    # Ids of the events the trace holds; the rest of each stream is there so it replays from version 1.
    traced: list[str]
    trace: list[Node]
    streams: list[BundleStream]


def _sealed(event: RecordedEvent) -> RecordedEvent:
    return msgspec.structs.replace(event, data=redact(event.data, REDACTED_KEYS))


async def collect(history: History, correlation_id: str) -> Bundle | None:
    """The bundle for a trace, or None when no event carries that id."""
    traced = (await history.traced(correlation_id))[:MAX_TRACE_EVENTS]
    if not traced:
        return None
    up_to: dict[uuid.UUID, int] = {}
    for e in traced:
        up_to[e.stream_id] = max(up_to.get(e.stream_id, 0), e.version)
    streams: dict[uuid.UUID, list[RecordedEvent]] = {}
    for e in await history.streams(list(up_to), up_to):
        streams.setdefault(e.stream_id, []).append(_sealed(e))
    return Bundle(
        format=FORMAT, correlation_id=correlation_id, created_at=datetime.now(UTC),
        traced=[str(e.event_id) for e in traced], trace=build(traced),
        streams=[BundleStream(stream_id=sid, stream_type=events[0].stream_type, events=events)
                 for sid, events in streams.items()],
    )


def encode(bundle: Bundle) -> bytes:
    return msgspec.json.format(msgspec.json.encode(bundle), indent=2)


def decode(raw: bytes) -> Bundle:
    bundle = msgspec.json.decode(raw, type=Bundle)
    if bundle.format != FORMAT:
        raise ValueError(f"not a {FORMAT} bundle: format {bundle.format!r}")
    return bundle
