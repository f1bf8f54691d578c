"""asyncpg pool creation with the session settings every connection needs."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import asyncpg

from app.settings import Settings

_APPLICATION_NAME = "machine-markets"


async def _keep_session(conn: asyncpg.Connection) -> None:
    """asyncpg has already rolled back any open transaction and dropped listener callbacks by now."""


async def create_pool(dsn: str, settings: Settings, *, min_size: int | None = None,
                      max_size: int | None = None, stateless_sessions: bool = False,
                      asynchronous_commit: bool = False) -> asyncpg.Pool:
    """`stateless_sessions`: the pool's users never LISTEN, take advisory locks, SET, or open cursors (the
    API), so a released connection skips asyncpg's full reset, a round trip per release (measured in
    ops/bench: several per heartbeat). The projector's pool holds locks and listeners and keeps the reset.

    `asynchronous_commit`: the sessions commit without waiting for the WAL flush (synchronous_commit off), for
    writers of derived state only (see projections.main)."""
    pool = await asyncpg.create_pool(
        dsn,
        reset=_keep_session if stateless_sessions else None,
        min_size=settings.pool_min_size if min_size is None else min_size,
        max_size=settings.pool_max_size if max_size is None else max_size,
        timeout=settings.database_connect_timeout_s,
        server_settings={
            # An open transaction holds back every log reader's visibility horizon: keep them short.
            "statement_timeout": str(settings.statement_timeout_ms),
            "idle_in_transaction_session_timeout": str(settings.idle_in_transaction_timeout_ms),
            **({"synchronous_commit": "off"} if asynchronous_commit else {}),
            # A name given in the DSN wins, so an operator (or a test) can tell processes apart in
            # pg_stat_activity and pg_locks; asyncpg would otherwise let this default override it.
            "application_name": parse_qs(urlsplit(dsn).query).get("application_name", [_APPLICATION_NAME])[-1],
        },
    )
    assert pool is not None
    return pool
