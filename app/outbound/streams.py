"""httpcore network streams on plain asyncio streams.

httpcore's AnyIO backend builds a dict of every socket attribute each time the pool asks whether an idle
connection was closed by its peer, which it asks for every idle connection on every request: with 32 callers
that was a third of the client's CPU. The outbound client runs only on asyncio, so it talks asyncio directly.
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore


class AsyncioStream(httpcore.AsyncNetworkStream):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    # `timeout` parameters: httpcore's stream interface, not ours to choose (hence noqa ASYNC109).
    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError:
            raise httpcore.ReadTimeout("read timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpcore.ReadError(str(exc)) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if not buffer:
            return
        try:
            async with asyncio.timeout(timeout):
                self._writer.write(buffer)
                await self._writer.drain()
        except TimeoutError:
            raise httpcore.WriteTimeout("write timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        # No wait_closed(): a peer that never answers a TLS close_notify must not hold the caller.
        self._writer.close()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:  # noqa: ASYNC109
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError:
            self._writer.close()
            raise httpcore.ConnectTimeout("TLS handshake timed out") from None
        except (OSError, ssl.SSLError) as exc:
            self._writer.close()
            raise httpcore.ConnectError(str(exc)) from exc
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # an idle pooled connection with bytes (or EOF) waiting was closed by its peer
            return _readable(self._writer.get_extra_info("socket"))
        key = {"server_addr": "peername", "client_addr": "sockname"}.get(info, info)
        return self._writer.get_extra_info(key)


def _readable(sock: Any) -> bool:
    if sock is None or sock.fileno() < 0:
        return True  # gone already: as good as closed by the peer
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


async def connect_tcp(address: str, port: int, *, timeout: float | None, local_address: str | None,  # noqa: ASYNC109
                      socket_options: Iterable[httpcore.SOCKET_OPTION] | None) -> AsyncioStream:
    """A TCP connection to one IP address (already checked by the guard: no name lookup here)."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                address, port, local_addr=(local_address, 0) if local_address else None,
                flags=socket.AI_NUMERICHOST)
    except TimeoutError:
        raise httpcore.ConnectTimeout(f"connecting to {address}:{port} timed out") from None
    except OSError as exc:
        raise httpcore.ConnectError(str(exc)) from exc
    sock = writer.get_extra_info("socket")
    for option in socket_options or ():
        sock.setsockopt(*option)
    return AsyncioStream(reader, writer)
