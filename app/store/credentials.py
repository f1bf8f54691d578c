"""The API-key credentials table, kept by the write side itself inside the append that issues or revokes a key.

Authentication must never wait for a projection: a key is usable the moment the response showing it is sent.
So this one lookup table is written in the append's transaction (an inline projection); the `accounts`
projection still keeps `api_keys_view` for listing keys.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import asyncpg

from app.store.types import NewEvent

# The channel app.store.credential_cache listens on.
REVOKED_CHANNEL = "mm_credentials_revoked"

_ISSUED = "accounts:Account.ApiKeyIssued"
_REVOKED = "accounts:Account.ApiKeyRevoked"
_OPENED = "accounts:Account.Opened"

# The account's admin flag comes from its Opened event, which is either earlier in the stream or in this
# same append (an account opened with its first key); both are visible inside the transaction.
_INSERT = (
    "INSERT INTO api_key_credentials (key_hash, key_id, account_id, is_admin)"
    " SELECT $1, $2::uuid, $3, (o.data->>'is_admin')::boolean FROM events o"
    " WHERE o.stream_id = $3 AND o.type = '" + _OPENED + "'"
    " ON CONFLICT DO NOTHING"
)
_REVOKE = (
    "UPDATE api_key_credentials SET revoked_at = $2::text::timestamptz"
    " WHERE key_id = $1::uuid AND revoked_at IS NULL"
)

LOOKUP_SQL = (
    "SELECT key_id, account_id, key_hash, is_admin FROM api_key_credentials"
    " WHERE key_hash = $1 AND revoked_at IS NULL"
)


class ApiKeyCredentials:
    """An inline projection: EventStore.append runs it in the transaction that records the events."""

    types = frozenset({_ISSUED, _REVOKED})

    def __init__(self, on_revoked: Callable[[], None] | None = None) -> None:
        # This process's own credential cache: dropped once the revocation has committed, so the key is
        # refused here before the DELETE answers (other processes hear the NOTIFY).
        self.on_revoked = on_revoked

    def committed(self, events: Sequence[NewEvent]) -> None:
        if self.on_revoked is not None and any(e.type == _REVOKED for e in events):
            self.on_revoked()

    async def apply(self, conn: asyncpg.Connection, events: Sequence[NewEvent]) -> None:
        for e in events:
            if e.type == _ISSUED:
                await conn.execute(_INSERT, e.data["key_hash"], e.data["key_id"], e.stream_id)
            elif e.type == _REVOKED:
                await conn.execute(_REVOKE, e.data["key_id"], e.data["timestamp"])
                # Delivered at this transaction's commit: every API process drops its cached credentials.
                # Revocations are rare, so taking the notify queue's lock here costs nothing that matters.
                await conn.execute("SELECT pg_notify($1, '')", REVOKED_CHANNEL)
