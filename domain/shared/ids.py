"""Identifiers: random UUIDs for new things, name-based UUIDs where a retry must land on the same id."""

from __future__ import annotations

import json
import uuid

# Fixed namespace so derived ids are stable across processes and releases.
NAMESPACE = uuid.UUID("6f1c1a52-3d0e-4c55-9a57-6d6d2d6d6b74")


def new_id() -> uuid.UUID:
    return uuid.uuid4()


def derived_id(*parts: object) -> uuid.UUID:
    """Same parts, same id: used for idempotent commands (idempotency key, redelivered message)."""
    # JSON keeps the encoding unambiguous: ("a,b",) and ("a", "b") differ, and None is not "None".
    return uuid.uuid5(NAMESPACE, json.dumps([p if p is None or isinstance(p, int | float) else str(p) for p in parts]))
