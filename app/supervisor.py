"""`mm up`: migrate, ensure the admin key, then run api, projector and worker as supervised children."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request

from app.kept import admin_token, secret_key
from app.settings import Settings

_MAX_BACKOFF = 30.0


async def _prepare(dsn: str, token: str) -> None:
    from app.migrate import migrate
    from app.services.accounts import bootstrap_admin_key

    await migrate(dsn)
    await bootstrap_admin_key(dsn, token, "system:mm-up")


def _wait_healthy(url: str, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as r:  # our own loopback URL
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.2)
    return False


class Child:
    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name, self.argv, self.env = name, argv, env
        self.proc: subprocess.Popen[bytes] | None = None
        self.backoff, self.restart_at = 1.0, 0.0

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env)

    def check(self, now: float) -> None:
        """Restart a child that died, with exponential backoff so a crash loop cannot spin."""
        if self.proc is None or self.proc.poll() is None:
            return
        if self.restart_at == 0.0:
            print(f"mm up: {self.name} exited with {self.proc.returncode}; restarting in {self.backoff:.0f}s",
                  file=sys.stderr)
            self.restart_at = now + self.backoff
            self.backoff = min(self.backoff * 2, _MAX_BACKOFF)
        elif now >= self.restart_at:
            self.restart_at = 0.0
            self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, deadline: float) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_stack(settings: Settings, dsn: str, args: argparse.Namespace) -> int:
    token = admin_token(settings)
    asyncio.run(_prepare(dsn, token))
    env = {**os.environ, "MM_DATABASE_URL": dsn, "MM_BROKER_URL": settings.broker_url or dsn,
           "MM_SECRET_KEY": secret_key(settings)}
    me = [sys.executable, "-m", "app.cli"]
    children = [Child("api", [*me, "api"], env), Child("projector", [*me, "projector"], env)]
    if not args.no_worker:
        children.append(Child("worker", [*me, "worker"], env))
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    for child in children:
        child.start()
    base = f"http://{settings.host}:{settings.port}"
    database = "MM_DATABASE_URL" if settings.database_url else f"embedded ({settings.data_dir / 'pg'})"
    if _wait_healthy(base):
        print(f"\nMachine Markets is up\n  API:       {base}/v1\n  Docs:      {base}/docs\n"
              f"  OpenAPI:   {base}/openapi.json\n  Admin key: {token}\n"
              f"  Database:  {database}\n"
              "Press Ctrl-C to stop.\n", flush=True)
    else:
        print("mm up: the API did not become healthy within 30s; see the log above", file=sys.stderr)
    while not stopping:
        now = time.monotonic()
        for child in children:
            child.check(now)
        time.sleep(0.2)
    print("mm up: stopping...", file=sys.stderr)
    for child in children:
        child.stop()
    deadline = time.monotonic() + 10
    for child in children:
        child.wait(deadline)
    return 0
