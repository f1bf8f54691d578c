"""Secrets at rest: third-party credentials (runtime-endpoint tokens) are sealed with AES-256-GCM before
they enter an event, so the log, its snapshots and its backups never hold them in the clear."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from domain.shared.errors import DomainError

PREFIX = "mmseal1"
_NONCE = 12


class SecretsUnavailable(DomainError):
    """No MM_SECRET_KEY is configured, or the value was sealed under another key."""

    code = "SECRETS_UNAVAILABLE"


def new_secret_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def decode_key(value: str) -> bytes:
    """MM_SECRET_KEY: 32 random bytes, base64 (url-safe or standard)."""
    try:
        raw = base64.urlsafe_b64decode(value.strip().replace("+", "-").replace("/", "_").encode())
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ValueError("MM_SECRET_KEY must be 32 random bytes in base64 (generate one with `mm secret-key`)")
    return raw


class Sealer:
    def __init__(self, key: str | None) -> None:
        self._aead = AESGCM(decode_key(key)) if key else None
        # Names the key in each sealed value, so a rotation can tell old values from new ones.
        self.key_id = hashlib.sha256(decode_key(key)).hexdigest()[:8] if key else None

    def seal(self, plaintext: str, context: bytes) -> str:
        """`context` (e.g. the endpoint's stream id) is bound in, so a sealed value cannot be moved elsewhere."""
        if self._aead is None:
            raise SecretsUnavailable("this server has no MM_SECRET_KEY, so it cannot store credentials")
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context)
        return f"{PREFIX}.{self.key_id}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def unseal(self, value: str, context: bytes) -> str:
        prefix, _, rest = value.partition(".")
        key_id, _, body = rest.partition(".")
        if prefix != PREFIX or self._aead is None or key_id != self.key_id:
            raise SecretsUnavailable("this credential was sealed under another MM_SECRET_KEY")
        try:
            raw = base64.urlsafe_b64decode(body.encode())
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], context).decode()
        except (binascii.Error, ValueError, InvalidTag):
            raise SecretsUnavailable("this sealed credential is damaged or belongs elsewhere") from None

    def matches(self, value: str | None, plaintext: str | None, context: bytes) -> bool:
        """Whether a sealed value holds this plaintext (an unreadable one counts as different)."""
        if value is None or plaintext is None:
            return value is None and plaintext is None
        try:
            return self.unseal(value, context) == plaintext
        except SecretsUnavailable:
            return False
