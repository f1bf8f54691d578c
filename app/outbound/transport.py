"""The guarded connection pool: every TCP connection goes through the SSRF guard, to the address it checked.

The check lives in the network backend, at the one point where httpcore opens a socket: the host checked is
exactly the host being connected to (no second URL parser to disagree with), the socket opens to an address
from that same resolution (no second DNS lookup to rebind), and the URL keeps its hostname, so the Host
header, TLS SNI and certificate verification all use the name while the connection pool keys on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator

import httpcore
import httpx

from app.outbound.errors import (
    OutboundConnectError,
    OutboundError,
    OutboundProtocolError,
    OutboundRefused,
    OutboundRequestInvalid,
    OutboundTimeout,
)
from app.outbound.guard import Resolver, checked_addresses
from app.outbound.streams import connect_tcp


class GuardedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, *, allow_private: bool, resolver: Resolver) -> None:
        self._allow_private, self._resolver = allow_private, resolver

    # `timeout` parameters: httpcore's backend interface, not ours to choose (hence noqa ASYNC109).
    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109
                          local_address: str | None = None,
                          socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            async with asyncio.timeout(timeout):  # resolving is part of connecting, and of its budget
                addresses = await checked_addresses(host, port, allow_private=self._allow_private,
                                                    resolver=self._resolver)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        failure: httpcore.ConnectError | None = None
        for address in addresses:  # every one of them passed the guard; try them in the resolver's order
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return await connect_tcp(str(address), port, timeout=left, local_address=local_address,
                                         socket_options=socket_options)
            except httpcore.ConnectError as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(self, path: str, timeout: float | None = None,  # noqa: ASYNC109
                                  socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                                  ) -> httpcore.AsyncNetworkStream:
        raise OutboundRefused("unix sockets are never outbound targets")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class GuardedTransport:
    """HTTP/1.1 over a pool whose connections are opened only by GuardedBackend; no proxies, no retries."""

    def __init__(self, *, allow_private: bool, resolver: Resolver, max_connections: int = 100,
                 keepalive_expiry_s: float = 5.0, ssl_context: ssl.SSLContext | None = None) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(), max_connections=max_connections,
            max_keepalive_connections=max_connections, keepalive_expiry=keepalive_expiry_s,
            network_backend=GuardedBackend(allow_private=allow_private, resolver=resolver))

    @contextlib.asynccontextmanager
    async def stream(self, method: str, url: httpx.URL, headers: list[tuple[bytes, bytes]], body: bytes,
                     timeout_s: float) -> AsyncIterator[tuple[httpcore.Response, AsyncIterator[bytes]]]:
        """The request straight to the pool, without httpx.AsyncClient's layers (auth, redirects, cookies,
        request and response models): the client that calls this has none of them to apply, and they were
        40% of an outbound call's CPU. Yields the response and its raw body, both with our typed errors."""
        where = f"{url.host}:{url.port or _default_port(url.scheme)}"
        core = httpcore.Request(
            method=method.encode("ascii"),
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
            headers=headers, content=body,
            extensions={"timeout": {"connect": timeout_s, "read": timeout_s, "write": timeout_s,
                                    "pool": timeout_s}})
        with mapped_errors(where):
            response = await self._pool.handle_async_request(core)
        try:
            assert isinstance(response.stream, AsyncIterable)
            yield response, aiter(_MappedStream(response.stream, where))
        finally:
            with mapped_errors(where):
                await response.aclose()

    async def aclose(self) -> None:
        await self._pool.aclose()


class _MappedStream(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes], where: str) -> None:
        self._stream, self._where = stream, where

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with mapped_errors(self._where):
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        closer = getattr(self._stream, "aclose", None)
        if closer is not None:
            await closer()


@contextlib.contextmanager
def mapped_errors(where: str) -> Iterator[None]:
    """httpcore's failures as our typed errors. Messages name host:port, never headers (a token) or a URL."""
    try:
        yield
    except OutboundError:
        raise
    except httpcore.TimeoutException as exc:
        raise OutboundTimeout(f"{type(exc).__name__} talking to {where}") from None
    except httpcore.ConnectError as exc:
        raise OutboundConnectError(f"cannot connect to {where}: {exc}") from None
    except httpcore.UnsupportedProtocol:
        raise OutboundRequestInvalid(f"unsupported protocol for {where}") from None
    except httpcore.LocalProtocolError:
        # h11's message can quote the offending header value, which may be a credential: never pass it on.
        raise OutboundRequestInvalid(f"the request to {where} could not be encoded") from None
    except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
        raise OutboundProtocolError(f"{type(exc).__name__} from {where}: {exc}") from None


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80
