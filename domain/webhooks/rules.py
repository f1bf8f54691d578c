"""Pure validation of webhook endpoints and the matching of event type patterns (`market.*`, exact names)."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from domain.shared.errors import ValidationFailed

MAX_URL = 2048
MAX_TYPES = 50
MAX_DESCRIPTION = 2000
# `*` (everything), a dotted prefix ending in `.*` (`market.*`, `market.payment.*`), or an exact public name.
TYPE_PATTERN = r"^(\*|[a-z0-9][a-z0-9-]*(\.[a-z0-9][a-z0-9-]*)*(\.\*)?)$"
_TYPE = re.compile(TYPE_PATTERN)
_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$")


def check_url(url: str) -> str:
    """http(s) only, with a valid host, without credentials or whitespace (the messages match runtime
    endpoints', which the contract test knows as rules a JSON Schema cannot state)."""
    url = url.strip()
    if len(url) > MAX_URL:
        raise ValidationFailed(f"url must be at most {MAX_URL} characters", field="url")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ValidationFailed("url must not contain whitespace or control characters", field="url")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a non-numeric or out-of-range port
    except ValueError:
        raise ValidationFailed("url is not a valid URL", field="url") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValidationFailed("url must use http or https", field="url")
    if parts.username is not None or parts.password is not None:
        raise ValidationFailed("url must not carry credentials", field="url")
    if not parts.hostname:
        raise ValidationFailed("url must name a host", field="url")
    if not _is_host(parts.hostname):
        raise ValidationFailed("url's host is not a valid host name or IP address", field="url")
    return url


def _is_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(_HOST.match(host))
    return True


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
