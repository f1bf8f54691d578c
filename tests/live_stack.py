"""Real `mm` processes for tests that drive the stack from outside: a free port, start, wait for /health, stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def mm_processes(commands: list[str], env: Mapping[str, str], port: int,
                 start_timeout_s: float = 60) -> Iterator[str]:
    """Runs `mm <command>` for each command and yields the base URL once /health answers."""
    full_env = {**os.environ, "MM_PORT": str(port), "MM_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT), **env}
    procs = [subprocess.Popen([sys.executable, "-m", "app.cli", cmd], env=full_env, cwd=ROOT,
                              stdout=subprocess.DEVNULL) for cmd in commands]
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            exited = [(cmd, p.returncode) for cmd, p in zip(commands, procs, strict=True) if p.poll() is not None]
            assert not exited, f"exited before serving: {exited}"
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"{base}/health never answered"
            time.sleep(0.1)
        yield base
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
