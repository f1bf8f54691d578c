"""Real embedded PostgreSQL: start, reuse, named database, crash recovery, concurrency, stop."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import pytest

from app.embedded_db import ensure_embedded_postgres, stop_embedded_postgres

ROOT = Path(__file__).resolve().parents[2]
# Under the repo, not /tmp: the same place make test/run use, and it exercises real path lengths.
BASE = ROOT / ".data" / "itest"


def _fetchval(dsn: str, query: str, *args: Any) -> Any:
    async def run() -> Any:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


def _postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])


def _serving(pid: int) -> bool:
    """A live postgres process; the container's init does not reap, so a dead one may linger as a zombie."""
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and proc.name() == "postgres"
    except psutil.NoSuchProcess:
        return False


def _cleanup(data_dir: Path) -> None:
    stop_embedded_postgres(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)
    (data_dir.parent / f".{data_dir.name}.lock").unlink(missing_ok=True)


@pytest.fixture
def fresh_dir() -> Iterator[Path]:
    data_dir = BASE / f"pg-{uuid.uuid4().hex[:8]}"
    yield data_dir
    _cleanup(data_dir)


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[Path, str]]:
    data_dir = BASE / f"shared-{uuid.uuid4().hex[:8]}"
    dsn = ensure_embedded_postgres(data_dir)
    yield data_dir, dsn
    _cleanup(data_dir)


def test_start_returns_asyncpg_dsn_with_dev_tuning(shared: tuple[Path, str]) -> None:
    data_dir, dsn = shared
    assert dsn.startswith("postgresql://postgres@/postgres?host=/")
    assert _fetchval(dsn, "SELECT 1") == 1
    assert _fetchval(dsn, "SELECT current_setting('server_version_num')::int") >= 180000
    assert _fetchval(dsn, "SELECT current_setting('data_directory')") == str(data_dir.resolve())
    settings = {
        name: _fetchval(dsn, "SELECT current_setting($1)", name)
        for name in ("max_connections", "shared_buffers", "fsync", "synchronous_commit", "listen_addresses")
    }
    assert settings == {
        "max_connections": "200",
        "shared_buffers": "128MB",
        "fsync": "on",
        "synchronous_commit": "on",
        "listen_addresses": "",  # unix socket only: never collides with a system PostgreSQL's port
    }


def test_second_call_reuses_the_running_server(shared: tuple[Path, str]) -> None:
    data_dir, dsn = shared
    pid = _postmaster_pid(data_dir)
    started = _fetchval(dsn, "SELECT pg_postmaster_start_time()")
    assert ensure_embedded_postgres(data_dir) == dsn
    assert _postmaster_pid(data_dir) == pid
    assert _fetchval(dsn, "SELECT pg_postmaster_start_time()") == started


def test_named_database_is_created_once(shared: tuple[Path, str]) -> None:
    data_dir, admin_dsn = shared
    name = f"mm_named_{uuid.uuid4().hex[:6]}"
    dsn = ensure_embedded_postgres(data_dir, name)
    assert dsn.split("?")[0].endswith(f"/{name}")
    assert _fetchval(dsn, "SELECT current_database()") == name
    assert ensure_embedded_postgres(data_dir, name) == dsn  # second call: exists already, no error
    count = _fetchval(admin_dsn, "SELECT count(*) FROM pg_database WHERE datname = $1", name)
    assert count == 1


def test_import_does_not_warn_without_xdg_runtime_dir() -> None:
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", "import app.embedded_db"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "XDG_RUNTIME_DIR" not in proc.stderr


def test_stop_then_start_again(fresh_dir: Path) -> None:
    dsn = ensure_embedded_postgres(fresh_dir)
    pid = _postmaster_pid(fresh_dir)
    stop_embedded_postgres(fresh_dir)
    assert not (fresh_dir / "postmaster.pid").exists()
    assert not _serving(pid)
    stop_embedded_postgres(fresh_dir)  # idempotent when nothing runs
    assert ensure_embedded_postgres(fresh_dir) == dsn
    assert _postmaster_pid(fresh_dir) != pid
    assert _fetchval(dsn, "SELECT 1") == 1


def test_long_data_dir_path_gets_a_short_socket_dir(fresh_dir: Path) -> None:
    # sun_path holds ~107 bytes; PGDATA itself is too long to hold .s.PGSQL.5432 here.
    long_dir = fresh_dir.parent / (fresh_dir.name + "-" + "x" * 110)
    try:
        dsn = ensure_embedded_postgres(long_dir)
        socket_dir = dsn.split("host=", 1)[1]
        assert len(socket_dir) + len("/.s.PGSQL.5432") < 108
        assert not socket_dir.startswith(str(long_dir))
        assert _fetchval(dsn, "SELECT 1") == 1
    finally:
        _cleanup(long_dir)


def test_failure_raises_runtime_error_with_log_tail(fresh_dir: Path) -> None:
    ensure_embedded_postgres(fresh_dir)
    stop_embedded_postgres(fresh_dir)
    with (fresh_dir / "postgresql.conf").open("a") as fh:
        fh.write("this is not a setting\n")
    with pytest.raises(RuntimeError) as info:
        ensure_embedded_postgres(fresh_dir)
    assert str(fresh_dir) in str(info.value)
    assert "syntax error" in str(info.value)  # from the server log, not just "exit status 1"


@pytest.mark.slow
def test_recovers_after_kill_9_of_the_postmaster(fresh_dir: Path) -> None:
    dsn = ensure_embedded_postgres(fresh_dir)
    _fetchval(dsn, "CREATE TABLE durable (v text)")
    _fetchval(dsn, "INSERT INTO durable VALUES ('committed before the crash')")
    pid = _postmaster_pid(fresh_dir)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _serving(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _serving(pid)
    assert (fresh_dir / "postmaster.pid").exists()  # stale file left behind, as after a real crash

    assert ensure_embedded_postgres(fresh_dir) == dsn
    assert _postmaster_pid(fresh_dir) != pid
    assert _fetchval(dsn, "SELECT v FROM durable") == "committed before the crash"
    assert "automatic recovery in progress" in (fresh_dir / "log").read_text()


@pytest.mark.slow
def test_two_processes_starting_at_once_share_one_server(fresh_dir: Path) -> None:
    script = (
        "import json, sys, time; from pathlib import Path;"
        "from app.embedded_db import ensure_embedded_postgres as e;"
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time()));"
        "d = e(Path(sys.argv[1]), 'mm_race');"
        "print(json.dumps([d, int((Path(sys.argv[1]) / 'postmaster.pid').read_text().split()[0])]))"
    )
    start_at = str(time.time() + 3)  # both past their imports, then released together
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(fresh_dir), start_at],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    (dsn_a, pid_a), (dsn_b, pid_b) = results
    assert dsn_a == dsn_b
    assert pid_a == pid_b == _postmaster_pid(fresh_dir)
    assert _fetchval(dsn_a, "SELECT current_database()") == "mm_race"
    assert (fresh_dir / "log").read_text().count("database system is ready to accept connections") == 1
