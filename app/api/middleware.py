"""ASGI middleware: request ids on every response, and replay of POSTs that carry an Idempotency-Key."""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

import msgspec
from litestar import Request
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

from app.api.context import lookup_principal
from app.api.problems import PROBLEM_JSON, TITLES, Problem
from app.sealing import PREFIX, Sealer

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_KEPT_HEADERS = {b"content-type", b"etag", b"location", b"x-log-position", b"cache-control"}
_LEASE_SECONDS = 30
SEALED = PREFIX.encode() + b"."


def request_id_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"]
                message["headers"] = [*headers, (b"x-request-id", request_id.encode())]
            await send(message)

        await app(scope, receive, send_with_id)

    return middleware


def problem_bytes(scope: Scope, status: int, code: str, detail: str) -> bytes:
    body = Problem(
        type=f"https://docs.machine-markets.dev/problems/{code.lower().replace('_', '-')}",
        title=TITLES.get(status, "Error"), status=status, code=code, detail=detail,
        instance=scope.get("path"), requestId=scope.get("state", {}).get("request_id"),
    )
    return msgspec.json.encode(body)


async def send_problem(scope: Scope, send: Send, status: int, code: str, detail: str) -> None:
    await send_raw(send, status, [(b"content-type", PROBLEM_JSON.encode())], problem_bytes(scope, status, code, detail))


async def send_raw(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def idempotency_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        key = headers.get(b"idempotency-key", b"").decode("latin-1").strip()
        if scope["method"] != "POST" or not key:
            await app(scope, receive, send)
            return
        if len(key) > 255:
            await send_problem(scope, send, 400, "VALIDATION_ERROR", "Idempotency-Key must be 1-255 characters")
            return
        body = await _read_body(receive)
        container = scope["app"].state.container
        principal = await lookup_principal(container, Request(scope))
        if principal is None:  # unauthenticated: let the route answer 401 as usual
            await app(scope, _replay(body), send)
            return
        account_id = principal.account_id
        request_hash = hashlib.sha256(
            b"\x1f".join([scope["method"].encode(), scope["path"].encode(), scope.get("query_string", b""), body])
        ).hexdigest()
        store = _KeyStore(container.pool, account_id, key, container.settings.idempotency_ttl_hours, container.sealer)
        verdict = await store.claim(scope["method"], scope["path"], request_hash)
        if verdict == "reused":
            await send_problem(scope, send, 422, "IDEMPOTENCY_KEY_REUSED",
                               "this Idempotency-Key was used with a different request")
            return
        if verdict == "in_progress":
            await send_problem(scope, send, 409, "IDEMPOTENCY_KEY_IN_PROGRESS",
                               "a request with this Idempotency-Key is still being processed; retry shortly")
            return
        if isinstance(verdict, tuple):
            status, stored_headers, stored_body = verdict
            if any(k.lower() == b"content-type" and v.startswith(PROBLEM_JSON.encode()) for k, v in stored_headers):
                stored_body = _with_request_id(stored_body, scope)
            await send_raw(send, status, [*stored_headers, (b"idempotent-replayed", b"true")], stored_body)
            return
        captured: dict[str, Any] = {"body": b""}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                captured["status"], captured["headers"] = message["status"], message.get("headers", [])
            elif message["type"] == "http.response.body":
                captured["body"] += message.get("body", b"")
                if message.get("more_body"):
                    return
                await store.finish(captured["status"], captured["headers"], captured["body"])
                await send_raw(send, captured["status"], captured["headers"], captured["body"])

        try:
            await app(scope, _replay(body), capture)
        except BaseException:
            await store.release()
            raise

    return middleware


def _with_request_id(problem: bytes, scope: Scope) -> bytes:
    # A replayed problem names this request, so its requestId matches the X-Request-Id it is sent with.
    body = msgspec.json.decode(problem)
    body["requestId"] = scope.get("state", {}).get("request_id")
    return msgspec.json.encode(body)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)  # the client went away mid-body
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> ReceiveMessage:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


class _KeyStore:
    """The idempotency row for (account, key): claimed with a lease, then filled with the response."""

    def __init__(self, pool: Any, account_id: uuid.UUID, key: str, ttl_hours: int, sealer: Sealer) -> None:
        self.pool, self.account_id, self.key, self.ttl_hours = pool, account_id, key, ttl_hours
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
                self.account_id, self.key, method, path, request_hash, float(_LEASE_SECONDS), self.ttl_hours,
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
                self.account_id, self.key, float(_LEASE_SECONDS),
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
