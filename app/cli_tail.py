"""`mm events tail`: follows the log live, one line per event. LISTEN only wakes it; the rows come from the table,
read in the gap-free (tx_id, position) order, so a lost NOTIFY delays a line by at most the poll interval."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from collections.abc import Callable

import asyncpg

from app.db import create_pool
from app.settings import Settings
from app.store.event_store import EventStore
from app.store.notifier import CHANNEL
from app.store.types import START, RecordedEvent
from projections.audit_names import public_name

_POLL_S = 1.0
_BATCH = 500


def line_of(e: RecordedEvent) -> str:
    m = e.metadata
    extra = "".join(f" {k}={m[v]}" for k, v in (("actor", "actor"), ("correlation", "correlationId")) if m.get(v))
    return (f"{e.recorded_at.isoformat()} {e.log_position.token()} {public_name(e.type)}"
            f" {e.stream_type}/{e.stream_id} v{e.version}{extra}")


def matcher(types: list[str], streams: list[uuid.UUID]) -> Callable[[RecordedEvent], bool]:
    """--type takes public names (machine.registered) or stored topics; several of a flag mean any of them."""
    wanted, ids = set(types), set(streams)
    return lambda e: (not wanted or e.type in wanted or public_name(e.type) in wanted) and (
        not ids or e.stream_id in ids)


async def follow(pool: asyncpg.Pool, listener: asyncpg.Connection, keep: Callable[[RecordedEvent], bool],
                 stop: asyncio.Event, from_start: bool = False, out: Callable[[str], None] = print) -> None:
    store = EventStore(pool)
    at = START if from_start else (await store.head() or START)
    wake = asyncio.Event()
    await listener.add_listener(CHANNEL, lambda *_: wake.set())
    print("following the event log (Ctrl-C stops)", file=sys.stderr, flush=True)
    while not stop.is_set():
        wake.clear()
        events = await store.read_all(at, _BATCH)
        for e in events:
            if keep(e):
                out(line_of(e))
        if events:
            at = events[-1].log_position
        if len(events) == _BATCH:
            continue
        waits = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
        await asyncio.wait(waits, timeout=_POLL_S, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()


async def tail(settings: Settings, dsn: str, types: list[str], streams: list[str], from_start: bool) -> int:
    try:
        ids = [uuid.UUID(s) for s in streams]
    except ValueError:
        print("mm events tail: --stream takes a stream id (a UUID)", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    pool = await create_pool(dsn, settings, min_size=1, max_size=2)
    listener = await asyncpg.connect(dsn)
    try:
        await follow(pool, listener, matcher(types, ids), stop, from_start,
                     out=lambda text: print(text, flush=True))
    finally:
        await listener.close()
        await pool.close()
    return 0
