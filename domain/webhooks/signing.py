"""Webhook signatures: `MM-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, t + "." + body)>` (Stripe's scheme).

During a secret rotation's overlap the header carries one `v1=` per valid secret, newest first, so a receiver
holding either secret verifies the delivery.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "MM-Signature"


def sign(secret: str, t: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secrets: list[str], t: int, body: bytes) -> str:
    return ",".join([f"t={t}", *(f"v1={sign(s, t, body)}" for s in secrets)])


def verify(header: str, secret: str, body: bytes, now: int, tolerance_s: int = 300) -> bool:
    """What a receiver does: some `v1=` matches this secret, and `t` is recent (replay protection)."""
    parts = [p.partition("=") for p in header.split(",")]
    stamps = [v for k, _, v in parts if k == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit() or abs(now - int(stamps[0])) > tolerance_s:
        return False
    expected = sign(secret, int(stamps[0]), body)
    return any(k == "v1" and hmac.compare_digest(v, expected) for k, _, v in parts)
