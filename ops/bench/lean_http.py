"""A load generator's HTTP/1.1 client that costs little CPU: one keep-alive connection, requests written as one
pre-formatted buffer, responses parsed by httptools (uvicorn's parser, in C).

Why not httpx here: on this 2-core box the bench's own process is part of the load. Profiled in the market phase,
httpx spent ~1 ms of CPU per request (the bench process used 6.5 ms per order, as much as `mm api` itself), CPU the
services under test then did not get. This client does the same requests for a small fraction of that. It
does only what the phases need: JSON bodies, fixed headers, Content-Length or chunked responses, one request at a
time per connection (as each bench client is a closed loop).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode, urlsplit

import httptools
import msgspec

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode
# uvicorn closes an idle keep-alive connection after 5 s; reconnect before reusing one idle this long, so a request
# is never written into a connection the server is closing (a POST cannot be retried blindly).
IDLE_S = 2.0


class LeanError(Exception):
    """The connection failed or closed before the response was complete."""


class LeanResponse:
    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: dict[str, str], content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers  # names lower-cased; a repeated header keeps its last value
        self.content = content

    def json(self) -> Any:
        return _decode(self.content)

    @property
    def text(self) -> str:
        return self.content.decode()


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.pending: asyncio.Future[LeanResponse] | None = None
        self.closed = False
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self.keep_alive = True

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(LeanError(f"bad response: {exc}"))
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(LeanError(f"connection closed before the response was complete ({exc})"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._headers, self._body = {}, []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        response = LeanResponse(self.parser.get_status_code(), self._headers, b"".join(self._body))
        if self.pending is not None and not self.pending.done():
            self.pending.set_result(response)
        self.pending = None

    def _fail(self, exc: Exception) -> None:
        if self.pending is not None and not self.pending.done():
            self.pending.set_exception(exc)
        self.pending = None


class LeanClient:
    """One connection to `base_url` (http only), reopened when it closed or sat idle; `headers` on every request."""

    def __init__(self, base_url: str, headers: Mapping[str, str] | None = None, timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"lean_http speaks plain http to a host: {base_url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.timeout = timeout
        self._fixed = f"Host: {self.host}:{self.port}\r\n".encode() + self._render(headers or {})
        self._proto: _Protocol | None = None
        self._last_used = 0.0

    @staticmethod
    def _render(headers: Mapping[str, str]) -> bytes:
        return "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()

    async def _connection(self) -> _Protocol:
        proto = self._proto
        if (proto is None or proto.closed or not proto.keep_alive
                or time.monotonic() - self._last_used > IDLE_S):
            if proto is not None and proto.transport is not None:
                proto.transport.close()
            loop = asyncio.get_running_loop()
            _, proto = await loop.create_connection(_Protocol, self.host, self.port)
            self._proto = proto
        return proto

    async def request(self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None,
                      headers: Mapping[str, str] | None = None) -> LeanResponse:
        if params:
            path = f"{path}?{urlencode(params)}"
        body = b"" if json is None else _encode(json)
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self._fixed
        if headers:
            head += self._render(headers)
        if json is not None:
            head += b"Content-Type: application/json\r\n"
        head += b"Content-Length: %d\r\n\r\n" % len(body)
        proto = await self._connection()
        assert proto.transport is not None and proto.pending is None, "one request at a time per connection"
        proto.pending = asyncio.get_running_loop().create_future()
        proto.transport.write(head + body)
        try:
            async with asyncio.timeout(self.timeout):
                return await proto.pending
        except BaseException:
            proto.transport.close()  # a late response must not answer the next request
            self._proto = None
            raise
        finally:
            self._last_used = time.monotonic()

    async def get(self, path: str, **kw: Any) -> LeanResponse:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> LeanResponse:
        return await self.request("POST", path, **kw)

    async def aclose(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        self._proto = None

    async def __aenter__(self) -> LeanClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


@asynccontextmanager
async def lean_clients(base_url: str, headers: Mapping[str, str] | None, n: int) -> AsyncIterator[list[LeanClient]]:
    """n clients of one keep-alive connection each (a bench's closed-loop clients)."""
    clients = [LeanClient(base_url, headers) for _ in range(n)]
    try:
        yield clients
    finally:
        for c in clients:
            await c.aclose()
