"""Claim leases on the PostgreSQL broker: renewed while a long actor runs, and short, so a SIGKILLed worker's
message runs again on another worker process within seconds (measured), not after a fixed 300 s."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import dramatiq
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from app.settings import load_settings
from workers.broker import make_broker
from workers.pg_broker import PostgresBroker
from workers.pg_broker_consumer import PostgresConsumer

ROOT = Path(__file__).resolve().parents[2]


def _queue() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


def _row(url: str, queue: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(
            "SELECT state, attempts, EXTRACT(EPOCH FROM lease_expires_at - now())::float8 AS lease_left"
            " FROM worker_messages WHERE queue_name = %s", [queue])
        [row] = cur.fetchall()
        return row


def _claim_one(broker: PostgresBroker, queue: str, prefetch: int) -> PostgresConsumer:
    broker.declare_queue(queue)
    dramatiq.actor(broker=broker, queue_name=queue, actor_name=f"{queue}_actor")(lambda: None).send()
    consumer = broker.consume(queue, prefetch=prefetch, timeout=100)
    assert isinstance(consumer, PostgresConsumer)
    assert next(consumer) is not None  # handed out and never settled: a long-running actor
    return consumer


@pytest.mark.parametrize("prefetch", [1, 2], ids=["prefetch-full", "waiting-on-notify"])
def test_one_long_idle_wait_still_renews_the_claims_it_holds(database_url: str, prefetch: int) -> None:
    # A poll interval far beyond the lease: only the consumer's own schedule can keep the claim alive.
    broker, queue = PostgresBroker(database_url, lease_seconds=1.5, poll_interval=30), _queue()
    consumer = _claim_one(broker, queue, prefetch)
    try:
        consumer.timeout = 4500  # one next() call idling for three leases
        left: list[float] = []
        watching = threading.Event()

        def watch() -> None:  # samples the claim from outside while the consumer idles
            while not watching.is_set():
                left.append(_row(database_url, queue)["lease_left"])
                time.sleep(0.1)

        watcher = threading.Thread(target=watch)
        watcher.start()
        started = time.monotonic()
        try:
            assert next(consumer) is None
        finally:
            watching.set()
            watcher.join()
        assert time.monotonic() - started >= 4.0
        row = _row(database_url, queue)
        assert (row["state"], row["attempts"]) == ("consumed", 1)
        assert len(left) > 10 and min(left) > 0, f"the claim expired while its holder idled: {min(left):.2f}s"
    finally:
        consumer.close()
        broker.close()


def test_a_failed_renewal_is_retried_and_does_not_kill_the_consumer(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Renewals give up after 100 ms on a locked row: a failure that leaves the session usable.
    url = make_conninfo(database_url, options="-c lock_timeout=100")
    broker, queue = PostgresBroker(url, lease_seconds=1.5, poll_interval=0.2), _queue()
    consumer = _claim_one(broker, queue, 1)
    try:
        with psycopg.connect(database_url) as blocker:
            blocker.execute("SELECT 1 FROM worker_messages WHERE queue_name = %s FOR UPDATE", [queue])
            consumer.timeout = 1200
            with caplog.at_level(logging.WARNING):
                assert next(consumer) is None  # before: the lock timeout surfaced as ConnectionClosed
            blocker.rollback()
        assert any("Could not renew leases" in r.getMessage() for r in caplog.records)
        consumer.timeout = 1000
        assert next(consumer) is None
        row = _row(database_url, queue)
        assert (row["state"], row["attempts"]) == ("consumed", 1)
        assert row["lease_left"] > 0.5, "renewal did not resume once the row was free"
    finally:
        consumer.close()
        broker.close()


def test_claim_lease_comes_from_the_setting(database_url: str) -> None:
    broker = make_broker(database_url, load_settings({"MM_WORKER_CLAIM_LEASE_S": "4.5"}))
    assert isinstance(broker, PostgresBroker) and broker.lease_seconds == 4.5
    default = make_broker(database_url)
    assert isinstance(default, PostgresBroker) and default.lease_seconds == load_settings({}).worker_claim_lease_s
    with pytest.raises(Exception, match="worker_claim_lease_s"):
        load_settings({"MM_WORKER_CLAIM_LEASE_S": "0"})


def test_the_mm_worker_entry_module_builds_its_broker_with_the_setting(database_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MM_BROKER_URL"}
    env.update(MM_DATABASE_URL=database_url, MM_WORKER_CLAIM_LEASE_S="4.5", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", "from workers.actors import broker; print(broker.lease_seconds)"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "4.5", out.stderr[-2000:]


class _Worker:
    """A worker_proc.py child whose output lines are timestamped as they arrive."""

    def __init__(self, dsn: str, queue: str, mode: str, lease: float) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "MM_WORKER_CLAIM_LEASE_S": str(lease)}
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests/workers/worker_proc.py"), dsn, queue, mode],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        self.lines: list[tuple[float, str]] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append((time.monotonic(), line.strip()))
                self._changed.notify_all()

    def seen(self, prefix: str) -> float | None:
        with self._changed:
            return next((t for t, line in self.lines if line.startswith(prefix)), None)

    def wait_for(self, prefix: str, seconds: float) -> float:
        deadline = time.monotonic() + seconds
        with self._changed:
            while (at := self.seen(prefix)) is None:
                left = deadline - time.monotonic()
                assert left > 0 and self.proc.poll() is None, f"no {prefix!r} within {seconds}s: {self.lines}"
                self._changed.wait(min(left, 0.5))
        return at

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def test_a_sigkilled_workers_message_runs_again_within_the_claim_lease(database_url: str) -> None:
    lease, queue = 3.0, _queue()
    sender = PostgresBroker(database_url)
    dramatiq.actor(broker=sender, queue_name=queue, actor_name=f"{queue}_actor")(lambda n: None).send(1)
    sender.close()
    workers: list[_Worker] = []
    try:
        first = _Worker(database_url, queue, "block", lease)
        workers.append(first)
        first.wait_for("started 1", 60)
        second = _Worker(database_url, queue, "run", lease)
        workers.append(second)
        second.wait_for("ready", 60)
        time.sleep(2.5 * lease)  # renewal keeps the first worker's claim: the idle second one must not run it
        assert second.seen("started") is None, "a live claim was taken over"
        assert (_row(database_url, queue)["state"], _row(database_url, queue)["attempts"]) == ("consumed", 1)

        os.kill(first.proc.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        # Worst case: the last renewal just before the kill (a whole lease), then the next reclaim scan
        # (lease/4) and the poll that claims it; plus slack for a loaded 2-core box.
        bound = lease + lease / 4 + 1.0 + 10.0
        rerun_at = second.wait_for("started 1", bound + 30)
        delay = rerun_at - killed_at
        print(f"\nclaim lease {lease:.1f}s: the killed worker's message ran again after {delay:.2f}s")
        assert delay <= bound, f"re-run took {delay:.1f}s, more than {bound:.1f}s"
        deadline = time.monotonic() + 30
        while _row(database_url, queue)["state"] != "done" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (_row(database_url, queue)["state"], _row(database_url, queue)["attempts"]) == ("done", 2)
    finally:
        for w in workers:
            w.kill()
