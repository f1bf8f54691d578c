"""Helpers for tests that run `mm` as real processes: ports, start-up, and clean-up of whole process trees."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import httpx
import psutil

from tests.factories import MachineKeyFactory

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mm_env(**extra: str) -> dict[str, str]:
    from tests.conftest import TEST_SECRET_KEY

    return {**os.environ, "MM_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT), "MM_SECRET_KEY": TEST_SECRET_KEY,
            **extra}


def start_mm(*args: str, env: dict[str, str], **popen: object) -> subprocess.Popen[str]:
    """`mm ARGS` in a session of its own, so a test can signal its group as a terminal would."""
    return subprocess.Popen([sys.executable, "-m", "app.cli", *args], env=env, cwd=ROOT, text=True,
                            start_new_session=True, **popen)  # type: ignore[call-overload]


def wait_healthy(base: str, proc: subprocess.Popen[str] | None = None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before {base} was healthy")
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{base} not healthy within {timeout}s")


def tree(pid: int) -> list[psutil.Process]:
    """The process and every descendant (collected before a kill: orphans are re-parented away)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def alive(procs: Iterable[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def wait_gone(procs: Iterable[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Waits until none of `procs` lives; returns the ones still alive at the deadline."""
    procs = list(procs)
    deadline = time.monotonic() + timeout
    while (left := alive(procs)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def kill_all(procs: Iterable[psutil.Process]) -> None:
    """Test clean-up: SIGKILL whatever is left, so a failing test leaves nothing behind."""
    for p in alive(procs):
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    wait_gone(procs, 10)


def cleanup(proc: subprocess.Popen[str], known: Iterable[psutil.Process] = ()) -> None:
    """Kill `proc`, its group and every descendant known now or earlier; then reap `proc`."""
    procs = [*tree(proc.pid), *known]
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    kill_all(procs)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass


class Output:
    """Collects a process's merged stdout/stderr on a thread, so a test can wait for a line with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self.lines: list[tuple[float, str]] = []
        self._stream = proc.stdout
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def wait_for(self, pattern: str, timeout: float, after: int = 0) -> tuple[int, float, re.Match[str]]:
        """The first line from index `after` on that matches `pattern`: (index, time seen, match)."""
        deadline = time.monotonic() + timeout
        while True:
            for i in range(after, len(self.lines)):
                at, line = self.lines[i]
                if m := re.search(pattern, line):
                    return i, at, m
            if time.monotonic() > deadline:
                raise AssertionError(f"no line matching {pattern!r} within {timeout}s:\n{self.text[-4000:]}")
            time.sleep(0.05)

    def close(self) -> None:
        self._thread.join(10)


def cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""  # gone meanwhile


def lease_expires_through_the_whole_stack(base: str, key: str) -> None:
    """API -> log -> relay (projector) -> PostgreSQL broker -> worker -> Expired event -> read model."""
    h, keys = {"Authorization": f"Bearer {key}"}, MachineKeyFactory()
    # The key works at once, and /accounts/me waits (up to its read-your-writes timeout) for the accounts read
    # model: a projector that lost its sessions (a server restart) answers 503 PROJECTION_LAGGING until it is back.
    deadline = time.monotonic() + 60
    while (me := httpx.get(base + "/v1/accounts/me", headers=h)).status_code != 200:
        assert me.status_code == 503, me.text
        assert time.monotonic() < deadline, "the accounts read model never caught up"
        time.sleep(0.2)
    mid = httpx.post(base + "/v1/machines", json={"name": "up", "publicKey": keys.public_key},
                     headers=h).raise_for_status().json()["id"]
    c = httpx.post(f"{base}/v1/machines/{mid}/identity/challenge", headers=h).raise_for_status().json()
    httpx.post(f"{base}/v1/machines/{mid}/identity/verify", headers=h,
               json={"challengeId": c["challengeId"], "signature": keys.sign(c["nonce"])}).raise_for_status()
    httpx.post(f"{base}/v1/machines/{mid}/activate", headers=h).raise_for_status()
    enrolled = httpx.post(f"{base}/v1/machines/{mid}/agents/enrollment", headers=h,
                          json={"name": "up", "allowedProviderKeys": ["gpu"], "leaseSeconds": 1}).raise_for_status()
    endpoint = {"providerKey": "gpu", "url": "https://g.example", "authToken": "sealed-by-the-api"}
    beat = httpx.post(base + "/v1/machine-agents/heartbeat",
                      json={"agentToken": enrolled.json()["agentToken"], "endpoints": [endpoint]})
    assert beat.status_code == 200, beat.text
    status = None
    deadline = time.monotonic() + 60  # a 1 s lease; the rest is slack for a loaded 2-core box
    while time.monotonic() < deadline:
        r = httpx.get(f"{base}/v1/machines/{mid}/runtime-endpoints/gpu", headers=h)
        status = r.json().get("status")
        if status == "expired":
            break
        time.sleep(0.1)
    assert status == "expired", r.text
