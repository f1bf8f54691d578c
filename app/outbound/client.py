"""The one outbound HTTP caller: guarded, timed, never redirected, bounded, idempotency-keyed."""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any

import httpcore
import httpx
import msgspec

from app.outbound.errors import OutboundRequestInvalid, OutboundTimeout, ResponseTooLarge
from app.outbound.guard import Resolver, check_url, system_resolver
from app.outbound.transport import GuardedTransport

log = logging.getLogger(__name__)
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
USER_AGENT = "machine-markets/0.1"
# Visible ASCII only: a CR or LF in a header value would let a seller's token smuggle headers.
_HEADER_VALUE = re.compile(r"[\x21-\x7e]+")
_FIELD_VALUE = re.compile(r"[\x20-\x7e\t]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Set by this module from its parameters, so they cannot be overridden (or duplicated) by extra headers.
_RESERVED = frozenset({"host", "authorization", "idempotency-key", "content-length", "transfer-encoding",
                       "connection", "content-type", "accept-encoding", "cookie"})


class OutboundResponse(msgspec.Struct, frozen=True, kw_only=True):
    status: int
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    body: bytes  # as sent (no content decoding: a compressed bomb cannot inflate past the cap)
    elapsed_ms: float
    peer: str  # the address actually connected to, "ip:port" ("[v6]:port")

    def json(self) -> Any:
        """The body as JSON; msgspec.DecodeError when it is not."""
        return msgspec.json.decode(self.body)


class OutboundClient:
    """One per process (see app.outbound.shared); holds the connection pool. Safe for concurrent calls."""

    def __init__(self, *, allow_private: bool = False, resolver: Resolver = system_resolver,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, max_connections: int = 100,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.allow_private, self.max_body_bytes = allow_private, max_body_bytes
        # Requests go to the guarded pool directly: no redirects (a 3xx is an answer), no proxies from the
        # environment (a proxy would connect for us, unguarded), no cookies (calls for different buyers share
        # this client), no authentication flows; only the headers built below.
        self._transport = GuardedTransport(allow_private=allow_private, resolver=resolver,
                                           max_connections=max_connections, ssl_context=ssl_context)

    async def request(self, url: str, *, idempotency_key: str, json: object = None, content: bytes | None = None,
                      content_type: str = "application/json", bearer_token: str | None = None,
                      headers: Mapping[str, str] | None = None, method: str = "POST", timeout_s: float = 30.0,
                      max_body_bytes: int | None = None) -> OutboundResponse:
        """Send one request and read its response, within `timeout_s` in total.

        `json` is encoded with msgspec; `content` is sent byte for byte (a webhook signs exactly these bytes).
        Raises OutboundRefused, OutboundConnectError, OutboundTimeout, OutboundProtocolError, ResponseTooLarge,
        OutboundRequestInvalid; any HTTP status (3xx, 4xx, 5xx included) is a response, not an error.
        """
        if not timeout_s > 0:
            raise OutboundRequestInvalid("timeout_s must be positive")
        target = _parse(url)
        check_url(target)
        body = _body(json, content)
        sent = _headers(idempotency_key, bearer_token, content_type if body else None, headers)
        cap = self.max_body_bytes if max_body_bytes is None else max_body_bytes
        # Host and port only: paths carry secrets too (chat-style webhook URLs embed their token in the path).
        where = _origin(target)
        started = time.perf_counter()
        try:
            # The per-phase timeouts stop a stalled phase; the deadline stops a peer that drips bytes forever.
            async with asyncio.timeout(timeout_s):
                async with self._transport.stream(method, target, _raw_headers(target, sent, body), body,
                                                  timeout_s) as (response, chunks):
                    received = _received_headers(response.headers)
                    data = await _read_capped(received, chunks, cap, response.status)
                    peer = _peer(response)
        except TimeoutError:
            raise OutboundTimeout(f"no complete answer from {target.host} within {timeout_s:g}s") from None
        elapsed_ms = (time.perf_counter() - started) * 1000
        log.debug("outbound %s %s -> %d in %.1f ms", method, where, response.status, elapsed_ms)
        return OutboundResponse(status=response.status, body=data, elapsed_ms=elapsed_ms, peer=peer,
                                headers=received)

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self) -> OutboundClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()


def _origin(url: httpx.URL) -> str:
    return f"{url.scheme}://{url.host}{f':{url.port}' if url.port else ''}"


def _parse(url: str) -> httpx.URL:
    try:
        return httpx.URL(url)
    except httpx.InvalidURL:
        raise OutboundRequestInvalid("the URL is not valid") from None


def _headers(idempotency_key: str, bearer_token: str | None, content_type: str | None,
             extra: Mapping[str, str] | None) -> dict[str, str]:
    if not _HEADER_VALUE.fullmatch(idempotency_key) or len(idempotency_key) > 255:
        raise OutboundRequestInvalid("the idempotency key must be 1-255 visible ASCII characters")
    sent = {"Idempotency-Key": idempotency_key}
    if content_type is not None:
        if not _FIELD_VALUE.fullmatch(content_type):
            raise OutboundRequestInvalid("the content type has characters a header cannot carry")
        sent["Content-Type"] = content_type
    if bearer_token is not None:
        if not _HEADER_VALUE.fullmatch(bearer_token):
            raise OutboundRequestInvalid("the bearer token has characters a header cannot carry")
        sent["Authorization"] = f"Bearer {bearer_token}"
    for name, value in (extra or {}).items():
        if not _HEADER_NAME.fullmatch(name) or name.lower() in _RESERVED:
            raise OutboundRequestInvalid(f"header {name!r} cannot be set here")
        if not _FIELD_VALUE.fullmatch(value):
            raise OutboundRequestInvalid(f"header {name!r} has characters a header cannot carry")
        sent[name] = value
    return sent


def _body(json: object, content: bytes | None) -> bytes:
    if content is not None:
        if json is not None:
            raise OutboundRequestInvalid("pass json or content, not both")
        return content
    return b"" if json is None else msgspec.json.encode(json)


_DEFAULT_HEADERS = [(b"User-Agent", USER_AGENT.encode()), (b"Accept", b"application/json"),
                    (b"Accept-Encoding", b"identity")]


def _raw_headers(target: httpx.URL, sent: dict[str, str], body: bytes) -> list[tuple[bytes, bytes]]:
    """What goes on the wire: Host (with brackets for IPv6, the port when not the default), our defaults, the
    body's length and `sent` (already checked to be visible ASCII)."""
    return [(b"Host", target.netloc), *_DEFAULT_HEADERS, (b"Content-Length", str(len(body)).encode()),
            *((name.encode(), value.encode()) for name, value in sent.items())]


def _received_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Lower-cased names, repeated headers joined with ", "; values read as ASCII, else UTF-8, else Latin-1."""
    joined: dict[bytes, bytes] = {}
    for name, value in raw:
        key = name.lower()
        joined[key] = joined[key] + b", " + value if key in joined else value
    for encoding in ("ascii", "utf-8"):
        try:
            return {k.decode("latin-1"): v.decode(encoding) for k, v in joined.items()}
        except UnicodeDecodeError:
            continue
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in joined.items()}


async def _read_capped(headers: dict[str, str], chunks: AsyncIterator[bytes], cap: int, status: int) -> bytes:
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise ResponseTooLarge(cap, status)  # refused before reading a byte of it
    body = bytearray()
    async for chunk in chunks:  # as sent: no decompression, so the cap bounds memory
        body += chunk
        if len(body) > cap:
            raise ResponseTooLarge(cap, status)
    return bytes(body)


def _peer(response: httpcore.Response) -> str:
    stream = response.extensions.get("network_stream")
    address = stream.get_extra_info("server_addr") if stream is not None else None
    if not address:
        return ""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
