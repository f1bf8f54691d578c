"""`mm worker`: Dramatiq workers in this process (no CLI fork), or N supervised copies that die with it."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time

from app.children import Child, stop_together
from app.lifeline import release_stop_signals

log = logging.getLogger("mm.worker")
_SHUTDOWN_MS = 30_000  # finish the current messages; whatever is left is redelivered
# A stop that arrives while the worker is still starting. Raising SystemExit from the handler there could land
# inside an import of a C extension (psycopg, dramatiq's): once, a worker stopped that way died of SIGSEGV.
_stop_early = threading.Event()


def run_in_process(threads: int) -> int:
    import dramatiq

    from workers.actors import broker  # configures the broker and declares every actor

    stop = _handle_stop_signals()
    if stop.is_set():
        broker.close()
        return 0
    broker.emit_after("process_boot")
    worker = dramatiq.Worker(broker, worker_threads=threads)
    worker.start()
    log.info("worker ready: %d threads", threads)
    stop.wait()
    worker.stop(timeout=_SHUTDOWN_MS)
    broker.close()
    return 0


def _say(message: str) -> None:
    print(f"mm worker: {message}", file=sys.stderr, flush=True)


def run_copies(processes: int, threads: int) -> int:
    """The parent of N in-process workers: restarts a crashed one, stops all on SIGTERM, dies -> they die."""
    stop = _handle_stop_signals()
    if stop.is_set():
        return 0
    argv = [sys.executable, "-m", "workers.main", "--processes", "1", "--threads", str(threads)]
    copies = [Child(f"worker-{i}", argv, say=_say, grace_s=_SHUTDOWN_MS / 1000 + 5) for i in range(processes)]
    try:
        for child in copies:
            child.start()
        while not stop.wait(0.2):
            for child in copies:
                child.check(time.monotonic())
    finally:
        clean = stop_together(copies)
    return 0 if clean else 1


def _handle_stop_signals() -> threading.Event:
    """SIGINT/SIGTERM set the returned event from now on; a stop received during start-up has already set it."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if _stop_early.is_set():
        stop.set()
    return stop


def _note_early_stop(signum: int, _frame: object) -> None:
    _stop_early.set()


def main(argv: list[str] | None = None) -> int:
    # A stop before the worker's own handlers exist exits 0; `mm worker` held any stop across its exec.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _note_early_stop)
    release_stop_signals()
    p = argparse.ArgumentParser(prog="mm worker")
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--threads", type=int, default=4)
    args = p.parse_args(argv)
    from app.settings import get_settings

    logging.basicConfig(level=get_settings().log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.processes > 1:
        return run_copies(args.processes, args.threads)
    return run_in_process(args.threads)


if __name__ == "__main__":
    sys.exit(main())
