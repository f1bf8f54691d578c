"""What the restart window raises is an outage (503 DATABASE_UNAVAILABLE), whether met directly, in the handling
of one, or in a group; misuse of a connection with no outage behind it stays a bug (500)."""

from __future__ import annotations

import asyncpg
import pytest

from app.db import database_unavailable, outage_behind

RESTART_WINDOW = [
    asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    asyncpg.exceptions.CannotConnectNowError("the database system is shutting down"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.InterfaceError("connection is closed"),
    asyncpg.InterfaceError("cannot call Connection.fetch(): the underlying connection is closed"),
    ConnectionResetError(104, "Connection reset by peer"),
    ConnectionRefusedError(111, "Connect call failed"),
    FileNotFoundError(2, "No such file or directory"),  # the unix socket, while the server is down
    asyncpg.exceptions.InternalClientError('cannot switch to state 15; protocol is in the "failed" state'),
    asyncpg.exceptions.InternalClientError('cannot switch to "idle" state; protocol is in the "failed" state'),
    TimeoutError(),
]
MISUSE = [
    asyncpg.InterfaceError("cannot call Connection.fetch(): connection has been released back to the pool"),
    asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
    asyncpg.exceptions.InternalClientError("cannot switch to state 15; another operation (3) is in progress"),
    ValueError("a bug"),
]


@pytest.mark.parametrize("exc", RESTART_WINDOW, ids=lambda e: f"{type(e).__name__}: {e}")
def test_what_the_restart_window_raises_is_an_outage(exc: BaseException) -> None:
    assert database_unavailable(exc)
    assert outage_behind(exc)


@pytest.mark.parametrize("exc", MISUSE, ids=lambda e: f"{type(e).__name__}: {e}")
def test_misuse_with_no_outage_behind_it_is_not(exc: BaseException) -> None:
    assert not database_unavailable(exc)
    assert not outage_behind(exc)


def _raised_while_handling(outage: BaseException, then: BaseException, *, cause: bool) -> BaseException:
    try:
        try:
            raise outage
        except BaseException as first:
            if cause:
                raise then from first
            raise then  # noqa: B904 - the implicit context is what is tested
    except BaseException as second:
        return second


@pytest.mark.parametrize("cause", [False, True], ids=["context", "cause"])
def test_an_error_met_while_handling_an_outage_is_the_outage(cause: bool) -> None:
    lost = asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation")
    released = asyncpg.InterfaceError("cannot call Connection.fetch(): connection has been released back to the pool")
    met = _raised_while_handling(lost, released, cause=cause)
    assert not database_unavailable(met)  # not by itself ...
    assert outage_behind(met)  # ... but the outage is what it met
    deeper = _raised_while_handling(met, RuntimeError("cleanup failed"), cause=False)
    assert outage_behind(deeper)


def test_a_group_is_an_outage_only_when_every_error_in_it_is() -> None:
    down = [asyncpg.exceptions.CannotConnectNowError("starting up"), ConnectionResetError(104, "reset")]
    assert outage_behind(ExceptionGroup("tasks", down))
    assert outage_behind(ExceptionGroup("outer", [ExceptionGroup("inner", down)]))
    assert not outage_behind(ExceptionGroup("tasks", [*down, KeyError("a bug")]))
