"""ASGI middleware: replay of POSTs that carry an Idempotency-Key; problems and request ids for the edge layer."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
from typing import Any

import msgspec
from litestar import Request
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

from app.api.context import lookup_principal
from app.api.idempotency import IdempotencyStore
from app.api.problems import PROBLEM_JSON, TITLES, Problem
from app.db import outage_behind

log = logging.getLogger("mm.api")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def new_request_id() -> str:
    return secrets.token_hex(16)  # as random as uuid4().hex, at a third of its cost


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


def fingerprint(method: str, path: str, query: bytes, body: bytes) -> str:
    """What makes two requests with one Idempotency-Key the same request."""
    return hashlib.sha256(b"\x1f".join([method.encode(), path.encode(), query, body])).hexdigest()


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
        request_hash = fingerprint(scope["method"], scope["path"], scope.get("query_string", b""), body)
        # What the command derives its ids from (see CommandContext.idempotency_key): the key *and* the request.
        # A key the client reuses for another request once the first one's record has expired must not land on
        # the first request's ids, which would answer the old result and do nothing.
        scope.setdefault("state", {})["idempotency_key"] = f"{key}:{request_hash}"
        settings = container.settings
        store = IdempotencyStore(container.pool, account_id, key, settings.idempotency_ttl_hours,
                                 settings.idempotency_lease_s, container.sealer)
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
                try:
                    await store.finish(captured["status"], captured["headers"], captured["body"])
                except Exception as exc:
                    # The command ran and its answer is here; only keeping it for a replay failed (the database
                    # went away in between). Answer it: a 503 would hide a committed command, and a retry with
                    # this key runs it again on the same streams (ids derive from the key) instead of replaying.
                    if not outage_behind(exc):
                        raise
                    log.warning("Idempotency-Key answer not kept (%s: %s); sent without it", type(exc).__name__, exc)
                await send_raw(send, captured["status"], captured["headers"], captured["body"])

        # The claim is short and renewed while the request runs: if this process dies, a retry sent to any
        # other process proceeds once the lease lapses (seconds), instead of waiting out a long fixed lock.
        renewing = asyncio.create_task(store.keep_claimed())
        try:
            await app(scope, _replay(body), capture)
        except BaseException:
            await store.release()
            raise
        finally:
            renewing.cancel()

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
