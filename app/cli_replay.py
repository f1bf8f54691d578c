"""`mm replay`, `mm debug bundle`: a stream's events with the state after each, and a trace packed for offline use."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

from app import bundle as bundles
from app.db import create_pool
from app.replay import replay
from app.settings import Settings
from app.store.event_store import EventStore
from app.store.history import History


async def replay_stream(settings: Settings, dsn: str, stream_id: str, to_version: int | None) -> int:
    try:
        sid = uuid.UUID(stream_id)
    except ValueError:
        print(f"mm replay: {stream_id!r} is not a stream id (a UUID)", file=sys.stderr)
        return 2
    pool = await create_pool(dsn, settings, min_size=1, max_size=1)
    try:
        events = await EventStore(pool).load(sid, to_version=to_version)
    finally:
        await pool.close()
    if not events:
        print(f"mm replay: stream {sid} has no events", file=sys.stderr)
        return 1
    print(f"stream {sid} ({events[0].stream_type}), versions 1..{events[-1].version}")
    for line in replay(events):
        print(line)
    return 0


def replay_bundle(path: str) -> int:
    """Offline: reads only the file, never a database."""
    try:
        bundle = bundles.decode(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        print(f"mm replay: cannot read bundle {path}: {exc}", file=sys.stderr)
        return 2
    marked = frozenset(bundle.traced)
    print(f"trace {bundle.correlation_id}: {len(bundle.traced)} event(s) over {len(bundle.streams)} stream(s)"
          f" (* = caused by this trace)")
    for node in bundle.trace:
        where = f" {node.stream_id} v{node.version} at" if node.kind == "event" else " due"
        print(f"{'  ' * node.depth}- {node.kind} {node.type}{where} {node.at.isoformat()}")
    for stream in bundle.streams:
        print(f"\nstream {stream.stream_id} ({stream.stream_type})")
        for line in replay(stream.events, marked):
            print(line)
    return 0


async def write_bundle(settings: Settings, dsn: str, correlation_id: str) -> int:
    pool = await create_pool(dsn, settings, min_size=1, max_size=1)
    try:
        found = await bundles.collect(History(pool), correlation_id)
    finally:
        await pool.close()
    if found is None:
        print(f"mm debug bundle: no events with correlation id {correlation_id!r}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(bundles.encode(found) + b"\n")
    sys.stdout.flush()
    return 0
