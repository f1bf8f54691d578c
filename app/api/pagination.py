"""Opaque cursors for keyset pagination.

Each list has its own named page Struct ({"data": [...], "nextCursor": ...}): a generic Page[T] would
appear in the OpenAPI under a module-path name.
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any

import msgspec

from app.api.problems import ApiError

DEFAULT_LIMIT = 50
MAX_LIMIT = 200



def encode_cursor(*values: Any) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(list(values))).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = msgspec.json.decode(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, msgspec.DecodeError):
        raise ApiError(400, "VALIDATION_ERROR", "cursor is not valid; use nextCursor from a previous page") from None
    if not isinstance(values, list) or len(values) != arity:
        raise ApiError(400, "VALIDATION_ERROR", "cursor is not valid; use nextCursor from a previous page")
    return values


def decode_time_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """A (created_at, id) keyset cursor; a forged one is a 400, never a 500."""
    created, item_id = decode_cursor(cursor, 2)
    if isinstance(created, str) and isinstance(item_id, str):
        try:
            at, parsed = datetime.fromisoformat(created), uuid.UUID(item_id)
        except ValueError:
            pass
        else:
            if at.tzinfo is not None:
                return at, parsed
    raise ApiError(400, "VALIDATION_ERROR", "cursor is not valid; use nextCursor from a previous page")
