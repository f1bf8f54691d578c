"""Bounds for free-form JSON documents (graph data, endpoint metadata) that are stored and replayed."""

from __future__ import annotations

import math
from typing import Any

from domain.shared.errors import ValidationFailed

MAX_DEPTH = 16


def depth(value: Any, field: str = "data") -> int:
    """Levels of objects and arrays (a scalar is 0); iterative, so deep input cannot exhaust the stack.

    Also refuses non-finite numbers on the way, which JSON (and jsonb) cannot carry back out.
    """
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValidationFailed(f"{field} numbers must be finite", field=field)
    return deepest


def check_depth(value: Any, field: str) -> None:
    if depth(value, field) > MAX_DEPTH:
        raise ValidationFailed(f"{field} is nested deeper than {MAX_DEPTH} levels", field=field)
