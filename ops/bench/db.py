"""The bench database: pick the server, create a throw-away migrated database, reset it between phases."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import psutil

from app.migrate import create_database, drop_database

EMBEDDED_DIR = Path(".data/bench-pg")
# Tables the phases may leave rows in; everything the migrations create except their own bookkeeping.
_KEEP = ("schema_migrations",)


def server_url() -> str:
    """MM_DATABASE_URL if set, else the embedded server under .data/bench-pg (started on demand)."""
    url = os.environ.get("MM_DATABASE_URL")
    if url:
        return url
    from app.embedded_db import ensure_embedded_postgres

    return ensure_embedded_postgres(EMBEDDED_DIR)


def describe(url: str) -> str:
    """Where the server is, without credentials: host:port, or the unix socket directory."""
    parts = urlsplit(url)
    if parts.hostname:
        return f"{parts.hostname}:{parts.port or 5432}"
    host = dict(p.partition("=")[::2] for p in parts.query.split("&") if p).get("host", "local socket")
    return f"unix socket {host}"


@asynccontextmanager
async def bench_database(server: str) -> AsyncIterator[str]:
    """Create `mm_bench_<random>`, migrate it, yield its DSN, and always drop it afterwards."""
    dsn = await create_database(server, "mm_bench")
    try:
        yield dsn
    finally:
        await drop_database(server, dsn)


async def reset(dsn: str) -> None:
    """Empty every table so each phase starts from an empty log and empty read models."""
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetch(
            "SELECT quote_ident(tablename) AS t FROM pg_tables WHERE schemaname = current_schema()"
            " AND tablename <> ALL($1::text[])",
            list(_KEEP),
        )
        if tables:
            await conn.execute(f"TRUNCATE {', '.join(r['t'] for r in tables)} RESTART IDENTITY")
    finally:
        await conn.close()


async def settle(conn: asyncpg.Connection, *, analyze: bool = False) -> None:
    """Before a timed run: flush dirty buffers so a checkpoint the previous phase caused rarely lands inside it;
    with `analyze` (only after a warm-up that filled the tables), give the planner statistics first.

    ANALYZE is what autovacuum would have done by then (it analyzes a table once 50 rows + 10% of it changed),
    on a server that runs with autovacuum off (as this machine's does). Without it the tables a phase filled
    from empty keep no statistics, and each session keeps the generic plan it cached while they were empty: a
    sequential scan for `WHERE id = ANY($1)` that grows with the table (the tasks projection's read of its rows
    took 0.6-1.8 ms per batch after 2,000 tasks; pg_stat_statements, auto_explain). ANALYZE invalidates those
    cached plans in every session. Not on tables still empty: analyzed empty, a table loses the planner's
    "at least 10 pages" guess for a never-analyzed one, and plans cached then are made for a tiny table.
    """
    if analyze:
        await conn.execute("ANALYZE")
    try:
        await conn.execute("CHECKPOINT")
    except asyncpg.InsufficientPrivilegeError:
        pass  # needs superuser or pg_checkpoint; the run is still valid, only noisier


async def server_facts(server: str) -> str:
    conn = await asyncpg.connect(server)
    try:
        version = await conn.fetchval("SHOW server_version")
        fsync = await conn.fetchval("SHOW fsync")
        sync = await conn.fetchval("SHOW synchronous_commit")
    finally:
        await conn.close()
    return f"PostgreSQL {version.split()[0]} (fsync={fsync}, synchronous_commit={sync})"


async def postmaster(dsn: str) -> psutil.Process | None:
    """The PostgreSQL server process if it runs on this machine (its backends are its children), else None."""
    conn = await asyncpg.connect(dsn)
    try:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        with suppress(psutil.Error):
            parent = psutil.Process(pid).parent()
            # Another host, or another PID namespace, would give an unrelated process or none.
            if parent is not None and "postgres" in parent.name():
                return parent
    finally:
        await conn.close()
    return None


def tree_cpu(proc: psutil.Process) -> float:
    """CPU seconds (user + system) a process and its live children have used."""
    total = 0.0
    for p in (proc, *proc.children()):
        with suppress(psutil.Error):
            total += sum(p.cpu_times()[:2])
    return total
