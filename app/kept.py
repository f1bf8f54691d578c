"""Secrets `mm up` keeps in the data directory when the environment does not provide them."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from app.settings import Settings


def admin_token(settings: Settings) -> str:
    """MM_ADMIN_TOKEN, else a key generated once and kept (0600) in the data directory."""
    from app.crypto import new_api_key

    return settings.admin_token or _kept(settings, "admin-token", lambda: new_api_key()[0])


def secret_key(settings: Settings) -> str:
    """MM_SECRET_KEY, else one generated once and kept (0600) in the data directory (`mm up` only)."""
    from app.sealing import new_secret_key

    return settings.secret_key or _kept(settings, "secret-key", new_secret_key)


def audit_signing_key(settings: Settings) -> str:
    """MM_AUDIT_SIGNING_KEY, else an Ed25519 key generated once and kept (0600) in the data directory."""
    from projections.audit_chain import new_signing_key

    return settings.audit_signing_key or _kept(settings, "audit-signing-key", lambda: new_signing_key()[0])


def _kept(settings: Settings, name: str, make: Callable[[], str]) -> str:
    path = Path(settings.data_dir) / name
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value
