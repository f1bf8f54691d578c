"""A Dramatiq worker process for the crash test: one queue, one actor that reports each run (and may block)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import dramatiq

from app.settings import load_settings
from workers.broker import make_broker


def main(dsn: str, queue: str, block: bool) -> None:
    broker = make_broker(dsn, load_settings())  # the claim lease comes from MM_WORKER_CLAIM_LEASE_S

    def run(n: int) -> None:
        print(f"started {n} pid={os.getpid()}", flush=True)
        if block:
            time.sleep(3600)  # a long actor: only lease renewal keeps its claim; the test SIGKILLs us here

    dramatiq.actor(broker=broker, queue_name=queue, actor_name=f"{queue}_actor", time_limit=3_600_000)(run)
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker.start()
    print(f"ready lease={getattr(broker, 'lease_seconds', None)}", flush=True)
    stop.wait()
    worker.stop(timeout=5000)
    broker.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] == "block")
