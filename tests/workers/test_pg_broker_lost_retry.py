"""A retry the Retries middleware cannot store (the database went away as the actor failed) is not lost: dramatiq
only logs that failure and acks, so the ack stores the retry instead of settling the row as done."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import psycopg
from dramatiq.errors import ConnectionFailed

from tests.workers.test_pg_broker import JOIN_MS, _actor, _broker, _queue, _rows, _running


def test_a_retry_that_could_not_be_enqueued_is_stored_by_the_ack(database_url: str) -> None:
    broker, queue, calls = _broker(database_url), _queue(), list[int]()
    real: Callable[[], AbstractContextManager[psycopg.Connection[Any]]] = broker.pool.connection
    away = threading.Event()

    def connection() -> AbstractContextManager[psycopg.Connection[Any]]:
        if away.is_set():  # one refused connection: the retry's enqueue; the ack after it gets through
            away.clear()
            raise ConnectionFailed("the database system is starting up")
        return real()

    broker.pool.connection = connection  # type: ignore[method-assign]

    def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            away.set()
            raise RuntimeError("the database went away mid-job")

    act = _actor(broker, queue, flaky, max_retries=5, min_backoff=50, max_backoff=200)
    with _running(broker):
        act.send()
        broker.join(queue, timeout=JOIN_MS)
    assert not away.is_set(), "the retry's enqueue never met the refused connection"
    assert len(calls) == 2, "the retry was lost: the message ran once"
    [row] = _rows(database_url, queue)
    assert (row["state"], row["retries"], row["attempts"]) == ("done", 1, 2)


