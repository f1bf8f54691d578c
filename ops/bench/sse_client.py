"""The SSE subscribers of phase `export`, in a process of their own (so they neither slow the appender nor
skew its clock): N raw-socket HTTP/1.1 clients on one event loop, each a Protocol whose callback counts event
boundaries and reads one timestamp per received read.

Lag, measured honestly and cheaply: on every read that completes records, the first `occurredAt` in it (the
bench stamps it with the wall clock just before the append, so the append's own latency counts) is subtracted
from the wall clock at arrival, and that lag is given to every record the read completed. Records in a read
are in log order, so the first is the oldest: each record is assigned at least its own lag (an upper bound).

Protocol with the parent: the API key in MM_BENCH_KEY; prints `ready` once every subscriber has its response
headers, then on `stop` (or EOF) on stdin prints one JSON line:
{"events", "resumes", "errors", "cpu_s" (its whole life), "lags": [[ms, records], ...]}.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import resource
import sys
import time
from datetime import datetime

import msgspec

_EVENT, _STAMP, _RESUME = b"\nevent: ", b'"occurredAt":"', b"\nevent: resume\n"


class Stats:
    def __init__(self) -> None:
        self.events = self.resumes = self.errors = 0
        self.lags: collections.Counter[int] = collections.Counter()  # lag in ms -> records


class Subscriber(asyncio.Protocol):
    def __init__(self, request: bytes, stats: Stats, ready: asyncio.Future[None]) -> None:
        self.request, self.stats, self.ready = request, stats, ready
        self.head, self.body, self.carry = b"", False, b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)  # type: ignore[attr-defined]  # a stream transport (uvloop's is no subclass)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if not self.body:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.head.startswith(b"HTTP/1.1 200"):
                self.stats.errors += 1
                _done(self.ready, ConnectionError(self.head[:80].decode(errors="replace")))
                return
            data, self.body = self.head[end + 4:], True
            _done(self.ready)
        # One pass over the bytes (the server sends ~1 MB/s per subscriber); a boundary straddling two reads
        # is found in the carried-over tail plus the head of this read, which cannot hold a whole one twice.
        n = data.count(_EVENT) + (self.carry + data[:len(_EVENT) - 1]).count(_EVENT)
        self.carry = data[-(len(_EVENT) - 1):]
        if not n:
            return
        self.stats.events += n
        if data.find(_RESUME, len(data) - 512) >= 0:  # a final `resume` event ends the stream
            self.stats.resumes += 1
        at = data.find(_STAMP)
        if at >= 0:
            start = at + len(_STAMP)
            stamp = datetime.fromisoformat(data[start:data.index(b'"', start)].decode())
            self.stats.lags[round((now - stamp.timestamp()) * 1000)] += n

    def connection_lost(self, exc: Exception | None) -> None:
        _done(self.ready, exc or ConnectionError("closed"))


def _done(ready: asyncio.Future[None], exc: BaseException | None = None) -> None:
    if not ready.done():
        if exc is None:
            ready.set_result(None)
        else:
            ready.set_exception(exc)


async def main(port: int, subscribers: int) -> None:
    key = os.environ["MM_BENCH_KEY"]
    loop = asyncio.get_running_loop()
    stats = Stats()
    request = (f"GET /v1/audit-events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
               "Accept: text/event-stream\r\n\r\n").encode()
    transports: list[asyncio.BaseTransport] = []
    readies = []
    for _ in range(subscribers):
        ready = loop.create_future()
        transport, _ = await loop.create_connection(lambda r=ready: Subscriber(request, stats, r), "127.0.0.1", port)
        transports.append(transport)
        readies.append(ready)
    await asyncio.gather(*readies)
    print("ready", flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    with contextlib.suppress(asyncio.IncompleteReadError):
        await reader.readuntil(b"stop")
    for t in transports:
        t.close()
    used = resource.getrusage(resource.RUSAGE_SELF)
    print(msgspec.json.encode({"events": stats.events, "resumes": stats.resumes, "errors": stats.errors,
                               "cpu_s": used.ru_utime + used.ru_stime,
                               "lags": sorted(stats.lags.items())}).decode(), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--subscribers", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(main(args.port, args.subscribers))
    except ImportError:
        asyncio.run(main(args.port, args.subscribers))
