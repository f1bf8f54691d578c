"""Pure validation for runtime fields: provider keys, endpoint URLs, metadata, leases."""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

import msgspec

from domain.shared.documents import check_depth
from domain.shared.errors import ValidationFailed

PROVIDER_KEY = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
MAX_URL_LENGTH = 2048
MAX_METADATA_BYTES = 8192
MAX_METADATA_KEYS = 32
MIN_LEASE_SECONDS, MAX_LEASE_SECONDS = 1, 86_400
_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$")


def provider_key(raw: str) -> str:
    """The canonical (lower-case) provider key, or VALIDATION_ERROR."""
    key = raw.strip().lower()
    if not PROVIDER_KEY.match(key):
        raise ValidationFailed(
            "providerKey must be 1-63 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit",
            field="providerKey",
        )
    return key


def check_url(url: str, credentials_hint: str = "; send them as authToken") -> None:
    """http(s) only, with a host, without credentials, of bounded length: an outbound call will go there.

    Every URL the platform will call (runtime endpoints, webhook endpoints) is checked here; `credentials_hint`
    says where the caller's credentials belong instead."""
    if len(url) > MAX_URL_LENGTH:
        raise ValidationFailed(f"url must be at most {MAX_URL_LENGTH} characters", field="url")
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
        raise ValidationFailed(f"url must not carry credentials{credentials_hint}", field="url")
    host = parts.hostname
    if not host:
        raise ValidationFailed("url must name a host", field="url")
    if not _is_host(host):
        raise ValidationFailed("url's host is not a valid host name or IP address", field="url")


def _is_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(_HOST.match(host))
    return True


def check_metadata(metadata: dict[str, Any]) -> None:
    if len(metadata) > MAX_METADATA_KEYS:
        raise ValidationFailed(f"metadata holds at most {MAX_METADATA_KEYS} keys", field="metadata")
    check_depth(metadata, "metadata")
    if len(msgspec.json.encode(metadata)) > MAX_METADATA_BYTES:
        raise ValidationFailed(f"metadata must encode to at most {MAX_METADATA_BYTES} bytes", field="metadata")


def check_lease_seconds(seconds: int) -> None:
    if not MIN_LEASE_SECONDS <= seconds <= MAX_LEASE_SECONDS:
        raise ValidationFailed(
            f"leaseSeconds must be between {MIN_LEASE_SECONDS} and {MAX_LEASE_SECONDS}", field="leaseSeconds"
        )


def check_agent_name(name: str) -> None:
    if not name.strip() or len(name) > 200:
        raise ValidationFailed("name must be 1-200 characters and not blank", field="name")
