"""A loopback TCP proxy a test can cut and restore: a database outage without stopping the shared server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit


class TcpProxy:
    """Forwards 127.0.0.1:<port> to the target. `cut()` resets every open connection and refuses new ones
    (what clients see when the server dies); `restore()` listens again on the same port. `cut_on(marker)`
    cuts instead of forwarding the first client message that holds `marker`: the server dies with that
    statement in flight, at an exact point a real restart only hits by chance."""

    def __init__(self, target_host: str, target_port: int) -> None:
        # A host that is a directory means a unix socket there (libpq's convention), as the embedded server has.
        self.target = (target_host, target_port)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._marker: bytes | None = None
        self.tripped = asyncio.Event()

    def cut_on(self, marker: bytes) -> None:
        self._marker, self.tripped = marker, asyncio.Event()

    @classmethod
    def for_url(cls, url: str) -> TcpProxy:
        parts = urlsplit(url)
        host = parse_qs(parts.query).get("host", [parts.hostname or "127.0.0.1"])[0]
        return cls(host, parts.port or 5432)

    def url(self, url: str) -> str:
        """`url` reaching the same database through the proxy (TCP, whatever the original transport)."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = (userinfo + "@" if userinfo else "") + f"127.0.0.1:{self.port}"
        query = {k: v for k, v in parse_qs(parts.query).items() if k != "host"}
        return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, doseq=True)))

    async def _connect_target(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port = self.target
        if host.startswith("/"):
            return await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
        return await asyncio.open_connection(host, port)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            transport = writer.transport
            sock = transport.get_extra_info("socket")
            if sock is not None:  # RST, not FIN: the peer sees its connection reset, as when a server dies
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            transport.abort()
        self._writers.clear()

    async def restore(self) -> None:
        await self.start()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await self._connect_target()
        except OSError:
            client_w.close()
            return
        self._writers |= {client_w, server_w}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    if dst is server_w and self._marker is not None and self._marker in data:
                        self._marker = None
                        self.tripped.set()
                        await self.cut()
                        return
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.transport.abort()
                self._writers.discard(dst)

        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))
