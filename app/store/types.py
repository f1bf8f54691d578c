"""Message types of the event store: a new event to append, a recorded one, and a log position."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec


class LogPosition(msgspec.Struct, frozen=True, order=True):
    """A point in the global log, ordered by (tx_id, position) exactly as readers traverse it."""

    tx_id: int
    position: int

    def token(self) -> str:
        return f"{self.tx_id}.{self.position}"

    @classmethod
    def parse(cls, token: str) -> LogPosition:
        tx, _, pos = token.partition(".")
        if not (tx.isdigit() and pos.isdigit()):
            raise ValueError(f"not a log position token: {token!r}")
        return cls(int(tx), int(pos))


START = LogPosition(0, 0)


class NewEvent(msgspec.Struct, frozen=True, kw_only=True):
    event_id: uuid.UUID
    stream_id: uuid.UUID
    stream_type: str
    version: int
    type: str
    data: dict[str, Any]
    metadata: dict[str, Any]


class RecordedEvent(msgspec.Struct, frozen=True, kw_only=True):
    position: int
    tx_id: int
    event_id: uuid.UUID
    stream_id: uuid.UUID
    stream_type: str
    version: int
    type: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    recorded_at: datetime

    @property
    def log_position(self) -> LogPosition:
        return LogPosition(self.tx_id, self.position)


class AppendResult(msgspec.Struct, frozen=True, kw_only=True):
    last: LogPosition
    # True when every event id was already recorded: a retried command that changed nothing.
    duplicate: bool = False
    # The appended events as the log recorded them (position, recorded_at), in append order; () for a duplicate.
    # A command that answers with its stream's history needs not read back what it has just written.
    events: tuple[RecordedEvent, ...] = ()
