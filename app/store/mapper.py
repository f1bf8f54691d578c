"""Maps eventsourcing domain events to stored rows and back, upcasting old class versions on load."""

from __future__ import annotations

from typing import Any

import msgspec
from eventsourcing.domain import Aggregate
from eventsourcing.utils import resolve_topic

from app.store.types import RecordedEvent

_ENVELOPE = ("originator_id", "originator_version", "timestamp")
_VERSION_KEY = "_classVersion"


def event_type(event: Any) -> str:
    topic = getattr(type(event), "TOPIC", None)
    if not topic:
        raise TypeError(f"{type(event).__qualname__} has no explicit TOPIC; stored names must be stable")
    return str(topic)


def to_data(event: Any) -> dict[str, Any]:
    state = {k: v for k, v in event.__dict__.items() if k not in _ENVELOPE}
    state["timestamp"] = event.timestamp
    version = getattr(type(event), "class_version", 1)
    if version != 1:
        state[_VERSION_KEY] = version
    data: dict[str, Any] = msgspec.to_builtins(state)
    return data


def to_domain_event(recorded: RecordedEvent) -> Any:
    cls = resolve_topic(recorded.type)
    state = dict(recorded.data)
    version = state.pop(_VERSION_KEY, 1)
    target = getattr(cls, "class_version", 1)
    while version < target:
        # eventsourcing's convention: a static upcast_vN_vN+1(state) on the event class.
        getattr(cls, f"upcast_v{version}_v{version + 1}")(state)
        version += 1
    state["originator_id"] = recorded.stream_id
    state["originator_version"] = recorded.version
    return msgspec.convert(state, cls, strict=False)


def rebuild(events: list[RecordedEvent], aggregate: Aggregate | None = None) -> Aggregate | None:
    for recorded in events:
        aggregate = to_domain_event(recorded).mutate(aggregate)
    return aggregate
