"""`mm up` as a supervisor: crash restarts with a growing delay, and its embedded PostgreSQL is a child too."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

from app.embedded_db import ensure_embedded_postgres, stop_embedded_postgres
from tests.integration.proc_tools import (
    ROOT,
    Output,
    cleanup,
    free_port,
    lease_expires_through_the_whole_stack,
    mm_env,
    start_mm,
    tree,
    wait_gone,
)

CLEAN_EXIT = r"{name} exited by itself (?P<s>[\d.]+)s after {sig} \(exit code 0\)"


def _open_account(base: str, key: str, timeout: float) -> tuple[float, str]:
    """Seconds until an authenticated command succeeds (opening an account), and the new account's key."""
    start = time.monotonic()
    while True:
        try:
            r = httpx.post(base + "/v1/accounts", json={"name": "sup"}, headers={"X-Api-Key": key}, timeout=5)
            if r.status_code == 201:
                return time.monotonic() - start, r.json()["apiKey"]["key"]
        except httpx.HTTPError:
            pass
        assert time.monotonic() - start < timeout, f"no 201 within {timeout}s"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_crashing_child_is_restarted_after_a_growing_delay(fresh_database_sync: str, tmp_path: Path) -> None:
    env = mm_env(MM_DATABASE_URL=fresh_database_sync, MM_PORT=str(free_port()), MM_DATA_DIR=str(tmp_path))
    proc = start_mm("up", "--no-worker", env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, procs = Output(proc), []
    try:
        i, _, m = out.wait_for(r"projector started \(pid (\d+)\)", timeout=90)
        out.wait_for(r"^Press Ctrl-C", timeout=90)
        delays = []
        for _ in range(3):
            pid = int(m[1])
            killed_at = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            i, _, crash = out.wait_for(r"projector exited with signal SIGKILL; restarting in (\d+)s", 30, after=i)
            i, seen, m = out.wait_for(r"projector restarted \(pid (\d+)\)", timeout=60, after=i)
            delay = int(crash[1])
            assert delay - 0.5 <= seen - killed_at <= delay + 15, (delay, seen - killed_at)
            assert int(m[1]) != pid
            delays.append(delay)
        assert delays == [1, 2, 4], delays
        # Stopped the moment it restarted, the projector still exits by itself, with 0: the stop waits
        # (blocked since fork) until the process has its handlers.
        procs = tree(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, out.text[-3000:]
        out.wait_for(CLEAN_EXIT.format(name="projector", sig="SIGTERM"), timeout=10)
        assert wait_gone(procs, timeout=30) == []
    finally:
        cleanup(proc, procs)
        out.close()


def _postmaster(pgdata: Path) -> psutil.Process:
    return psutil.Process(int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0]))


@pytest.mark.slow
def test_mm_up_takes_over_restarts_and_stops_its_embedded_postgres() -> None:
    data = ROOT / ".data" / "itest" / f"up-{uuid.uuid4().hex[:8]}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = mm_env(MM_DATA_DIR=str(data), MM_PORT=str(port))
    env.pop("MM_DATABASE_URL", None)  # the embedded server, supervised by mm up
    procs: list = []
    # A detached server already runs on the data dir (as after `mm migrate` without MM_DATABASE_URL).
    ensure_embedded_postgres(data / "pg", database="mm")
    detached = _postmaster(data / "pg")
    proc = start_mm("up", env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = Output(proc)
    try:
        out.wait_for(rf"stopping the detached PostgreSQL \(pid {detached.pid}\)", timeout=60)
        assert wait_gone([detached], timeout=30) == []
        _, _, m = out.wait_for(r"postgres started \(pid (\d+)\)", timeout=180)
        _, _, banner = out.wait_for(r"Admin key: (\S+)", timeout=180)
        key, postmaster = banner[1], int(m[1])
        _open_account(base, key, timeout=60)

        os.kill(postmaster, signal.SIGKILL)
        i, _, _ = out.wait_for(r"postgres exited with signal SIGKILL; restarting in 1s", timeout=30)
        out.wait_for(r"postgres restarted \(pid \d+\)", timeout=60, after=i)
        back, account_key = _open_account(base, key, timeout=90)
        print(f"an authenticated command succeeded again {back:.1f}s after the restart was logged")
        # The projector (relay), the broker and the worker reconnected too: a lease expires end to end.
        lease_expires_through_the_whole_stack(base, account_key)

        # SIGKILL of mm up: the server gets its parent-death signal (fast shutdown) with everything else.
        procs = tree(proc.pid)
        assert any("postgres" in p.name() for p in procs)
        proc.kill()
        assert wait_gone(procs, timeout=30) == [], procs
        proc.wait(10)
        out.close()

        # The next mm up starts cleanly on the same data directory, and the data (the admin key) survived.
        proc = start_mm("up", env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = Output(proc)
        out.wait_for(r"^Press Ctrl-C", timeout=180)
        _open_account(base, key, timeout=60)
        procs = tree(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(90) == 0, out.text[-3000:]
        for name in ("api", "projector", "worker"):
            out.wait_for(CLEAN_EXIT.format(name=name, sig="SIGTERM"), timeout=10)
        out.wait_for(CLEAN_EXIT.format(name="postgres", sig="SIGINT"), timeout=10)
        assert "killed after" not in out.text
        assert wait_gone(procs, timeout=30) == []
    except BaseException:
        # The supervisor's and children's log lines (not traceback bodies), shown with the failure.
        print("\n".join(line for _, line in out.lines if not line.startswith((" ", "Traceback")))[-20000:])
        raise
    finally:
        cleanup(proc, procs)
        out.close()
        if data.exists():
            stop_embedded_postgres(data / "pg")
            shutil.rmtree(data, ignore_errors=True)
