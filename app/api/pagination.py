"""Opaque cursors for keyset pagination, and the common page envelope."""

from __future__ import annotations

import base64
from typing import Any, Generic, TypeVar

import msgspec

from app.api.problems import ApiError

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


class Page(msgspec.Struct, Generic[T], rename="camel"):
    data: list[T]
    next_cursor: str | None = None


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
