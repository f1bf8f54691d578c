"""The bench's lean HTTP client against a real uvicorn server on loopback: what the tasks and market phases rely on."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import pytest
import uvicorn

from ops.bench import lean_http
from ops.bench.lean_http import LeanClient, LeanError

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
seen: list[tuple[str, str, dict[str, str], bytes]] = []


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Echoes what it got as JSON; `/chunked` answers in two chunks (no Content-Length)."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    seen.append((scope["method"], scope["path"], headers, body))
    out = msgspec.json.encode({"method": scope["method"], "path": scope["path"], "body": body.decode(),
                               "query": scope["query_string"].decode(), "auth": headers.get("authorization")})
    if scope["path"] == "/chunked":
        await send({"type": "http.response.start", "status": 207, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": out[:5], "more_body": True})
        await send({"type": "http.response.body", "body": out[5:]})
        return
    await send({"type": "http.response.start", "status": 201,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})


@pytest.fixture
async def server() -> AsyncIterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", http="httptools", timeout_keep_alive=1, lifespan="off")
    srv = uvicorn.Server(config)
    task = asyncio.create_task(srv.serve(sockets=[sock]))
    while not srv.started:  # noqa: ASYNC110 (uvicorn exposes a flag, not an event)
        await asyncio.sleep(0.01)
    seen.clear()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        await task


async def test_json_post_headers_and_keep_alive(server: str) -> None:
    async with LeanClient(server, {"Authorization": "Bearer k"}) as c:
        first = await c.post("/v1/things", json={"a": [1, "é"]}, headers={"Idempotency-Key": "i-1"})
        second = await c.get("/v1/things", params={"q": "x y"})
        conn = c._proto
    assert first.status_code == 201 and first.headers["content-type"] == "application/json"
    assert first.json() == {"method": "POST", "path": "/v1/things", "query": "", "auth": "Bearer k",
                            "body": '{"a":[1,"é"]}'}
    assert second.json()["query"] == "q=x+y" and second.json()["method"] == "GET"
    assert seen[0][2]["idempotency-key"] == "i-1" and seen[0][2]["content-type"] == "application/json"
    assert "idempotency-key" not in seen[1][2]  # per-request headers are not kept
    assert conn is not None and conn.closed is False  # both went over the one connection it still had open


async def test_chunked_response(server: str) -> None:
    async with LeanClient(server) as c:
        r = await c.post("/chunked", json={"n": 1})
    assert r.status_code == 207 and r.json()["body"] == '{"n":1}'


async def test_reconnects_after_the_server_closed_an_idle_connection(server: str, monkeypatch: pytest.MonkeyPatch
                                                                     ) -> None:
    # The server closes after 1 s idle; with the client's own idle limit out of the way, the closed connection is
    # noticed (connection_lost) and a new one opened for the next request.
    monkeypatch.setattr(lean_http, "IDLE_S", 60.0)
    async with LeanClient(server) as c:
        await c.get("/one")
        old = c._proto
        await asyncio.sleep(1.5)
        assert old is not None and old.closed
        r = await c.get("/two")
        assert r.status_code == 201 and c._proto is not old


async def test_a_connection_that_breaks_mid_response_is_an_error() -> None:
    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(half, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    async with srv, LeanClient(f"http://127.0.0.1:{port}") as c:
        with pytest.raises(LeanError):
            await c.get("/")


def test_only_plain_http() -> None:
    with pytest.raises(ValueError):
        LeanClient("https://example.test")
