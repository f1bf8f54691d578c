"""asyncpg pool creation with the session settings every connection needs, and what counts as an outage."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import asyncpg

from app.settings import Settings

_APPLICATION_NAME = "machine-markets"

# Lost connections, a server that is down, starting, shutting down or out of connections, and statement
# timeouts (class 57): the database is unavailable, not our code broken; the client should retry.
_DATABASE_DOWN: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    OSError,
    TimeoutError,
)


def database_unavailable(exc: BaseException) -> bool:
    """`exc` itself says the database is unavailable (retry later), rather than a bug or a refusal."""
    if isinstance(exc, _DATABASE_DOWN):
        return True
    # asyncpg raises a bare InterfaceError for a connection that died under it or a pool that is closing;
    # other InterfaceErrors are misuse (a bug) when nothing unavailable is behind them (see `outage_behind`).
    if isinstance(exc, asyncpg.InterfaceError):
        return "closed" in str(exc) or "closing" in str(exc)
    # Its protocol enters the "failed" state only when the connection is lost (asyncpg protocol.pyx,
    # connection_lost); "another operation is in progress" is misuse, and stays a 500.
    return isinstance(exc, asyncpg.exceptions.InternalClientError) and 'protocol is in the "failed" state' in str(exc)


def outage_behind(exc: BaseException) -> bool:
    """`exc` is, or was raised from or while handling (at any depth), the database being unavailable; for a
    group, every error in it is. Code that meets an outage may fail differently in its handling of it: a
    fallback on the connection that died ("connection has been released back to the pool"), a clean-up
    that fails, a translation to another type. The outage is still the cause, and a retry is the answer."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if database_unavailable(e):
            return True
        if isinstance(e, BaseExceptionGroup):
            if e.exceptions and all(outage_behind(inner) for inner in e.exceptions):
                return True
        todo += [c for c in (e.__cause__, e.__context__) if c is not None]
    return False


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
