"""The audit hash chain and its signed checkpoints: pure functions shared by the projector and offline verify.

Everything here is a function of the audit records alone (no clock, no database), so a rebuild reproduces
every hash and, Ed25519 signatures being deterministic (RFC 8032), every checkpoint signature too.
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

GENESIS = bytes(32)  # prev_hash of an account's first record
# Events that belong to no account (none do today) chain under the nil UUID: one chain, never unchained.
NO_ACCOUNT = uuid.UUID(int=0)
_CHECKPOINT_DOMAIN = b"mm-audit-checkpoint-v1\n"

# The record fields the hash covers, as the feed and exports spell them. The cursor binds the log position
# (so a reordered record is caught) and seq the record's place in its account's chain.
HASHED_FIELDS = ("id", "type", "occurredAt", "actor", "accountId", "machineId", "subject", "data", "requestId",
                 "correlationId", "causationId", "cursor", "seq")

_sorted = msgspec.json.Encoder(order="sorted")


def cursor_of(tx_id: int, position: int) -> str:
    """The feed's opaque cursor (base64url of the JSON pair, unpadded), as app.api.pagination encodes it."""
    return base64.urlsafe_b64encode(msgspec.json.encode([tx_id, position])).decode().rstrip("=")


def utc_text(value: datetime | str) -> str:
    """One spelling of a time for hashing, whatever offset or precision the transport used."""
    at = datetime.fromisoformat(value.replace("z", "Z")) if isinstance(value, str) else value
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _uuid_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and _CANONICAL_UUID.fullmatch(value):
        return value  # the common case, already as str(UUID) spells it
    return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))


def canonical(record: Mapping[str, Any]) -> bytes:
    """The bytes a record's hash covers: its hashed fields, normalised, as sorted-key compact JSON.

    `data` may come pre-encoded as msgspec.Raw, provided it was encoded with sorted keys (sorted_json)."""
    out = {k: record.get(k) for k in HASHED_FIELDS}
    out["occurredAt"] = utc_text(record["occurredAt"])
    for k in ("id", "accountId", "machineId"):
        out[k] = _uuid_text(out[k])
    return _sorted.encode(out)


def sorted_json(value: Any) -> bytes:
    return _sorted.encode(value)


def chain_hash(prev: bytes, record: Mapping[str, Any]) -> bytes:
    return hashlib.sha256(prev + canonical(record)).digest()


def chain_key(account_id: Any) -> uuid.UUID:
    return NO_ACCOUNT if account_id is None else uuid.UUID(str(account_id))


class Checkpoint(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """A signed statement: the account's chain had `count` records, the last at `last_cursor` with `last_hash`."""

    account_id: uuid.UUID | None
    count: int
    last_cursor: str
    last_hash: str  # hex
    at: str  # the log time (an event's occurredAt) that triggered it, never the wall clock
    key_id: str
    signature: str = ""  # base64 Ed25519 over message()

    def message(self) -> bytes:
        body = {"accountId": _uuid_text(self.account_id), "count": self.count, "lastCursor": self.last_cursor,
                "lastHash": self.last_hash, "at": self.at, "keyId": self.key_id}
        return _CHECKPOINT_DOMAIN + _sorted.encode(body)


def key_id(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


def decode_raw_key(value: str, what: str) -> bytes:
    """32 raw bytes, base64 (standard or url-safe, padding optional)."""
    text = value.strip().replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ValueError(f"{what} must be 32 raw bytes in base64")
    return raw


class Signer:
    """The platform's Ed25519 audit key (MM_AUDIT_SIGNING_KEY): the projector alone signs with it."""

    def __init__(self, private_b64: str) -> None:
        self._key = Ed25519PrivateKey.from_private_bytes(decode_raw_key(private_b64, "MM_AUDIT_SIGNING_KEY"))
        self.public_raw = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = key_id(self.public_raw)

    def sign(self, checkpoint: Checkpoint) -> Checkpoint:
        keyed = msgspec.structs.replace(checkpoint, key_id=self.key_id)
        return msgspec.structs.replace(keyed, signature=base64.b64encode(self._key.sign(keyed.message())).decode())


def new_signing_key() -> tuple[str, str]:
    """(private, public), each the raw 32 bytes in standard base64."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes_raw()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(private).decode(), base64.b64encode(public).decode()


def public_key_of(private_b64: str) -> str:
    return base64.b64encode(Signer(private_b64).public_raw).decode()


def signature_valid(public_raw: bytes, checkpoint: Checkpoint) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(base64.b64decode(checkpoint.signature),
                                                              checkpoint.message())
    except (InvalidSignature, ValueError):
        return False
    return True
