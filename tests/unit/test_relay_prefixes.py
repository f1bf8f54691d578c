"""The relay's PREFIXES name every event type a route answers: the runner skips the relay for any other batch."""

from __future__ import annotations

import importlib
import pkgutil
import uuid
from datetime import UTC, datetime
from typing import Any

import domain
from app.store.types import RecordedEvent
from projections.relay import PREFIXES, ROUTES


def _topics() -> set[str]:
    found: set[str] = set()
    for info in pkgutil.walk_packages(domain.__path__, "domain."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            stack, seen = ([value] if isinstance(value, type) else []), set()
            while stack:
                cls = stack.pop()
                if cls in seen:
                    continue
                seen.add(cls)
                if isinstance(topic := getattr(cls, "TOPIC", None), str):
                    found.add(topic)
                stack += [v for v in vars(cls).values() if isinstance(v, type) and v.__module__ == module.__name__]
    return found


class _Anything(dict[str, Any]):
    """Event data that has every key a route might read (so only the type decides)."""

    def __missing__(self, key: str) -> Any:
        return datetime.now(UTC).isoformat() if key.endswith("_at") else "x"


def test_no_route_answers_an_event_type_outside_the_prefixes() -> None:
    topics = _topics()
    assert len(topics) > 40 and "tasks:Task.Submitted" in topics
    for topic in sorted(t for t in topics if not t.startswith(PREFIXES)):
        event = RecordedEvent(position=1, tx_id=1, event_id=uuid.uuid4(), stream_id=uuid.uuid4(), stream_type="x",
                              version=1, type=topic, data=_Anything(auto=True, enabled=True, changed=["enabled"]),
                              metadata={}, recorded_at=datetime.now(UTC))
        assert [m for route in ROUTES for m in route(event)] == [], topic


def test_every_prefix_is_answered_by_some_route() -> None:
    topics = _topics()
    for prefix in PREFIXES:
        assert any(t.startswith(prefix) for t in topics), prefix
