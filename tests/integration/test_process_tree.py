"""No process of the stack outlives its parent: Ctrl-C, SIGTERM and SIGKILL of `mm up` and of `mm worker`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.proc_tools import ROOT, Output, cleanup, cmdline, free_port, mm_env, start_mm, tree, wait_gone

# What a terminal does on Ctrl-C (SIGINT to the foreground process group), and what a service manager does.
HOW = {"ctrl-c": lambda p: os.killpg(p.pid, signal.SIGINT), "sigterm": lambda p: p.send_signal(signal.SIGTERM),
       "sigkill": lambda p: p.kill()}
CLEAN_EXIT = r"{name} exited by itself (?P<s>[\d.]+)s after SIGTERM \(exit code 0\)"


@pytest.mark.slow
@pytest.mark.parametrize("how", HOW)
def test_mm_up_leaves_no_process_behind(how: str, fresh_database_sync: str, tmp_path: Path) -> None:
    env = mm_env(MM_DATABASE_URL=fresh_database_sync, MM_PORT=str(free_port()), MM_DATA_DIR=str(tmp_path))
    proc = start_mm("up", env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, procs = Output(proc), []
    try:
        out.wait_for(r"^Press Ctrl-C", timeout=90)
        procs = tree(proc.pid)
        names = " ".join(cmdline(p) for p in procs)
        assert len(procs) >= 4 and "app.cli api" in names and "app.cli projector" in names, names
        HOW[how](proc)
        assert wait_gone(procs, timeout=30) == [], f"outlived `mm up` ({how}): {procs}"
        if how != "sigkill":
            assert proc.wait(30) == 0, out.text[-3000:]
            for name in ("api", "projector", "worker"):
                # Each child ended by itself within its grace period; the supervisor did not have to kill it.
                _, _, m = out.wait_for(CLEAN_EXIT.format(name=name), timeout=10)
                assert float(m["s"]) < 20, m[0]
            assert "killed after" not in out.text and "mm up: stopped" in out.text, out.text[-3000:]
    finally:
        cleanup(proc, procs)
        out.close()


@pytest.mark.slow
@pytest.mark.parametrize("how", HOW)
def test_mm_worker_and_its_copies_leave_no_process_behind(how: str, fresh_database_sync: str) -> None:
    env = mm_env(MM_DATABASE_URL=fresh_database_sync, MM_LOG_LEVEL="INFO")
    proc = start_mm("worker", "--processes", "2", "--threads", "2", env=env,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, procs = Output(proc), []
    try:
        first, _, _ = out.wait_for(r"worker ready: 2 threads", timeout=60)
        out.wait_for(r"worker ready: 2 threads", timeout=60, after=first + 1)
        procs = tree(proc.pid)
        assert len(procs) == 3, procs  # the parent and its two copies: no Dramatiq CLI fork underneath
        HOW[how](proc)
        assert wait_gone(procs, timeout=30) == [], f"outlived `mm worker` ({how}): {procs}"
        if how != "sigkill":
            assert proc.wait(30) == 0, out.text[-3000:]
            for name in ("worker-0", "worker-1"):
                out.wait_for(CLEAN_EXIT.format(name=name), timeout=10)
    finally:
        cleanup(proc, procs)
        out.close()


@pytest.mark.slow
def test_ctrl_c_on_make_run_stops_everything(fresh_database_sync: str, tmp_path: Path) -> None:
    """The reported case: Ctrl-C in the terminal running `make run` left the Dramatiq worker behind."""
    if shutil.which("make") is None or not (ROOT / ".venv" / "bin" / "mm").exists():
        pytest.skip("needs make and the repo's .venv")
    env = mm_env(MM_DATABASE_URL=fresh_database_sync, MM_PORT=str(free_port()), MM_DATA_DIR=str(tmp_path))
    # -o: never reinstall the venv from a test, even if pyproject.toml is newer than its stamp.
    proc = subprocess.Popen(["make", "-s", "-o", ".venv/.installed", "run"], cwd=ROOT, env=env, text=True,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, procs = Output(proc), []
    try:
        out.wait_for(r"^Press Ctrl-C", timeout=90)
        deadline = time.monotonic() + 60
        while not any("workers.main" in cmdline(p) for p in tree(proc.pid)):
            assert time.monotonic() < deadline, tree(proc.pid)  # the worker child exec'd into workers.main
            time.sleep(0.2)
        procs = tree(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)
        assert wait_gone(procs, timeout=30) == [], f"outlived Ctrl-C on make run: {procs}"
        for name in ("api", "projector", "worker"):
            out.wait_for(CLEAN_EXIT.format(name=name), timeout=10)
    finally:
        cleanup(proc, procs)
        out.close()


@pytest.mark.slow
def test_mm_up_stopped_while_its_children_start_stops_them_cleanly(fresh_database_sync: str, tmp_path: Path) -> None:
    env = mm_env(MM_DATABASE_URL=fresh_database_sync, MM_PORT=str(free_port()), MM_DATA_DIR=str(tmp_path))
    proc = start_mm("up", env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, procs = Output(proc), []
    try:
        out.wait_for(r"worker started \(pid \d+\)", timeout=90)
        procs = tree(proc.pid)
        # Still importing: the stop is held until each child has its handlers, then it exits with 0.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(40) == 0, out.text[-3000:]
        for name in ("api", "projector", "worker"):
            out.wait_for(CLEAN_EXIT.format(name=name), timeout=10)
        assert "Press Ctrl-C" not in out.text and "did not become healthy" not in out.text
        assert wait_gone(procs, timeout=30) == []
    finally:
        cleanup(proc, procs)
        out.close()
