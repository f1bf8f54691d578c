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


def matching_signature(header: str, secret: str, body: bytes, now: float, tolerance_s: int = 300) -> str | None:
    """What a receiver checks (our payment-rail callbacks too): exactly one `t`, recent (replay protection), and
    some `v1=` that matches this secret, compared in constant time. Returns that signature, or None."""
    parts = [p.split("=", 1) for p in header.split(",") if "=" in p]
    stamps = [v.strip() for k, v in parts if k.strip() == "t"]
    signatures = [v.strip() for k, v in parts if k.strip() == "v1"]
    if len(stamps) != 1 or not stamps[0].isdigit() or not signatures or abs(now - int(stamps[0])) > tolerance_s:
        return None
    expected = hmac.new(secret.encode(), stamps[0].encode() + b"." + body, hashlib.sha256).hexdigest()
    return next((s for s in signatures if hmac.compare_digest(s, expected)), None)


def verify(header: str, secret: str, body: bytes, now: int, tolerance_s: int = 300) -> bool:
    return matching_signature(header, secret, body, now, tolerance_s) is not None
