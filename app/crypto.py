"""Key material: Ed25519 signature checks, API-key and token generation, digests, constant-time compare."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def verify_ed25519(public_key_b64: str, message: bytes, signature: bytes) -> bool:
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64))
        key.verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def new_api_key() -> tuple[str, str]:
    """Returns (key, prefix). The prefix is shown in listings so a user can tell keys apart."""
    prefix = secrets.token_hex(4)
    return f"mm_{prefix}_{secrets.token_urlsafe(32)}", prefix


def digest(secret: str) -> str:
    # Keys are 256-bit random strings, so a fast digest is enough: there is nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def same_digest(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def new_nonce() -> str:
    return secrets.token_urlsafe(32)


AGENT_TOKEN_PREFIX = "mma_"


def new_agent_token(agent_id: uuid.UUID) -> str:
    """`mma_<agent id>_<secret>`: the id lets a heartbeat load its agent directly (no lookup table,
    no read-model lag); the 256-bit secret is what authenticates, checked against the stored digest."""
    return f"{AGENT_TOKEN_PREFIX}{agent_id.hex}_{secrets.token_urlsafe(32)}"


def agent_id_in(token: str) -> uuid.UUID | None:
    """The agent id a well-formed agent token names, or None."""
    if not token.startswith(AGENT_TOKEN_PREFIX) or len(token) > 256:
        return None
    raw_id, sep, secret = token[len(AGENT_TOKEN_PREFIX):].partition("_")
    if not sep or len(raw_id) != 32 or not secret:
        return None
    try:
        return uuid.UUID(hex=raw_id)
    except ValueError:
        return None
