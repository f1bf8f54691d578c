"""A causation trace as a tree: the events one request caused, and the relay's messages between them.

Pure (no I/O): the API's /v1/traces, `mm debug bundle` and `mm replay --bundle` all build it from events.
An event's parent is its causation: the relay message of the triggering event whose actor recorded it,
else the triggering event itself; events with no cause inside the trace (the request's own) are roots.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import msgspec

from app.store.types import RecordedEvent
from projections.audit import public_data
from projections.audit_names import public_name
from projections.relay import planned_messages


class Node(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    parent_id: str | None
    kind: str  # "event" or "message"
    type: str
    at: datetime
    stream_id: uuid.UUID | None = None
    version: int | None = None
    actor: str | None = None
    causation_id: str | None = None
    data: dict[str, Any] | None = None
    depth: int = 0


def _message_nodes(event: RecordedEvent) -> list[Node]:
    return [
        Node(id=p.message_id, parent_id=str(event.event_id), kind="message", type=p.actor,
             at=p.not_before or event.recorded_at, stream_id=event.stream_id,
             data={"queue": p.queue, "dueAt": p.not_before.isoformat() if p.not_before else None})
        for p in planned_messages(event)
    ]


def build(events: Iterable[RecordedEvent]) -> list[Node]:
    """Every node of the trace, depth first (a parent before its children, siblings in log order)."""
    events = list(events)
    ids = {str(e.event_id) for e in events}
    nodes: list[Node] = []
    messages: dict[str, list[Node]] = {}
    for e in events:
        cause = e.metadata.get("causationId")
        actor = e.metadata.get("actor")
        parent = None
        if cause in ids:
            # A worker's actor is "worker:<actor name>": file its event under the message that woke it.
            parent = next((m.id for m in messages.get(str(cause), []) if actor == f"worker:{m.type}"), str(cause))
        nodes.append(Node(id=str(e.event_id), parent_id=parent, kind="event", type=public_name(e.type),
                          at=e.recorded_at, stream_id=e.stream_id, version=e.version, actor=actor,
                          causation_id=cause, data=public_data(e.data)))
        sent = _message_nodes(e)
        messages[str(e.event_id)] = sent
        nodes.extend(sent)
    return _depth_first(nodes)


def _depth_first(nodes: list[Node]) -> list[Node]:
    children: dict[str | None, list[Node]] = {}
    for n in nodes:
        children.setdefault(n.parent_id, []).append(n)
    out: list[Node] = []
    stack = [(n, 0) for n in reversed(children.get(None, []))]
    while stack:
        node, depth = stack.pop()
        out.append(msgspec.structs.replace(node, depth=depth))
        stack.extend((c, depth + 1) for c in reversed(children.get(node.id, [])))
    return out
