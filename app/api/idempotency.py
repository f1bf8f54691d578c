"""The idempotency store: one row per (account, Idempotency-Key), claimed with a renewed lease, then
filled with the response that retries replay."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import asyncpg
import msgspec

from app.sealing import PREFIX, Sealer

log = logging.getLogger("mm.api")

_KEPT_HEADERS = {b"content-type", b"etag", b"location", b"x-log-position", b"cache-control"}
SEALED = PREFIX.encode() + b"."


class IdempotencyStore:
    """The idempotency row for (account, key): claimed with a lease, then filled with the response."""

    def __init__(self, pool: Any, account_id: uuid.UUID, key: str, ttl_hours: int, lease_s: float,
                 sealer: Sealer) -> None:
        self.pool, self.account_id, self.key, self.ttl_hours, self.lease_s = pool, account_id, key, ttl_hours, lease_s
        self.sealer = sealer
        self.context = f"idempotency:{account_id}:{key}".encode()

    async def claim(self, method: str, path: str, request_hash: str) -> Any:
        async with self.pool.acquire() as conn, conn.transaction():
            # A new key, or one whose stored response has outlived the TTL, is (re)claimed here.
            claimed = await conn.fetchval(
                "INSERT INTO idempotency_keys (account_id, key, method, path, request_hash, locked_until)"
                " VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))"
                " ON CONFLICT (account_id, key) DO UPDATE SET method = EXCLUDED.method, path = EXCLUDED.path,"
                " request_hash = EXCLUDED.request_hash, status_code = NULL, response_body = NULL,"
                " response_headers = NULL, locked_until = EXCLUDED.locked_until, created_at = now()"
                " WHERE idempotency_keys.created_at < now() - make_interval(hours => $7)"
                " RETURNING true",
                self.account_id, self.key, method, path, request_hash, self.lease_s, self.ttl_hours,
            )
            if claimed:
                return "claimed"
            row = await conn.fetchrow(
                "SELECT method, path, request_hash, status_code, response_body, response_headers,"
                " locked_until < now() AS lapsed FROM idempotency_keys"
                " WHERE account_id = $1 AND key = $2 FOR UPDATE",
                self.account_id, self.key,
            )
            if (row["method"], row["path"], row["request_hash"]) != (method, path, request_hash):
                return "reused"
            if row["status_code"] is not None:
                stored = msgspec.json.decode(row["response_headers"] or "[]")
                body = bytes(row["response_body"])
                if body.startswith(SEALED):
                    body = self.sealer.unseal(body.decode(), self.context).encode()
                return row["status_code"], [(k.encode(), v.encode()) for k, v in stored], body
            if not row["lapsed"]:
                return "in_progress"
            # The first attempt died mid-flight without an answer: this retry takes it over.
            await conn.execute(
                "UPDATE idempotency_keys SET locked_until = now() + make_interval(secs => $3)"
                " WHERE account_id = $1 AND key = $2",
                self.account_id, self.key, self.lease_s,
            )
            return "claimed"

    async def finish(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        if status >= 500:
            await self.release()  # a server failure is not an answer worth replaying
            return
        if any(k.lower() == b"cache-control" and b"no-store" in v.lower() for k, v in headers) and self.sealer.key_id:
            # A response that shows a secret once (an API key, an agent token) is kept sealed for its replay.
            body = self.sealer.seal(body.decode(), self.context).encode()
        kept = [[k.decode(), v.decode()] for k, v in headers if k.lower() in _KEPT_HEADERS]
        await self.pool.execute(
            "UPDATE idempotency_keys SET status_code = $3, response_body = $4, response_headers = $5::jsonb"
            " WHERE account_id = $1 AND key = $2",
            self.account_id, self.key, status, body, msgspec.json.encode(kept).decode(),
        )

    async def release(self) -> None:
        await self.pool.execute(
            "DELETE FROM idempotency_keys WHERE account_id = $1 AND key = $2 AND status_code IS NULL",
            self.account_id, self.key,
        )

    async def keep_claimed(self) -> None:
        """Renew the claim every third of its lease until cancelled (when the response is stored or the
        request fails). A renewal that fails is retried at the next tick: the lease covers two misses."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            with contextlib.suppress(asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
                await self.pool.execute(
                    "UPDATE idempotency_keys SET locked_until = now() + make_interval(secs => $3)"
                    " WHERE account_id = $1 AND key = $2 AND status_code IS NULL",
                    self.account_id, self.key, self.lease_s,
                )
