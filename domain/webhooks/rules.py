"""Pure validation of webhook endpoints and the matching of event type patterns (`market.*`, exact names)."""

from __future__ import annotations

import re

from domain.runtime import rules as runtime_rules
from domain.shared.errors import ValidationFailed

MAX_TYPES = 50
MAX_DESCRIPTION = 2000
# `*` (everything), a dotted prefix ending in `.*` (`market.*`, `market.payment.*`), or an exact public name.
TYPE_PATTERN = r"^(\*|[a-z0-9][a-z0-9-]*(\.[a-z0-9][a-z0-9-]*)*(\.\*)?)$"
_TYPE = re.compile(TYPE_PATTERN)


def check_url(url: str) -> str:
    """The URL trimmed, checked as every URL the platform calls is (domain.runtime.rules.check_url, whose
    messages the contract test knows as rules a JSON Schema cannot state)."""
    url = url.strip()
    runtime_rules.check_url(url, credentials_hint="")
    return url


def check_types(types: list[str]) -> list[str]:
    if not 1 <= len(types) <= MAX_TYPES:
        raise ValidationFailed(f"types holds 1 to {MAX_TYPES} patterns", field="types")
    out: list[str] = []
    for t in types:
        t = t.strip()
        if not _TYPE.match(t):
            raise ValidationFailed(f"{t!r} is not an event type or a pattern like 'market.*'", field="types")
        if t not in out:  # duplicates say nothing more
            out.append(t)
    return out


def check_description(text: str) -> str:
    if len(text) > MAX_DESCRIPTION:
        raise ValidationFailed(f"description holds at most {MAX_DESCRIPTION} characters", field="description")
    return text


def matches(types: list[str], name: str) -> bool:
    """Whether a public event name is selected by any of the patterns."""
    for t in types:
        if t == "*" or t == name or (t.endswith(".*") and name.startswith(t[:-1])):
            return True
    return False
