"""`mm up`: migrate, ensure the admin key, then run api, projector and worker as supervised children."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Callable

from app.children import Child, say, stop_together
from app.kept import admin_token, audit_signing_key, secret_key
from app.settings import Settings
from projections.audit_chain import public_key_of

_TICK_S = 0.2


async def _prepare(dsn: str, token: str) -> None:
    from app.migrate import migrate
    from app.services.accounts import bootstrap_admin_key

    await migrate(dsn)
    await bootstrap_admin_key(dsn, token, "system:mm-up")


def _wait_healthy(url: str, children: list[Child], stopping: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stopping():
        for child in children:
            child.check(time.monotonic())
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as r:  # our own loopback URL
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(_TICK_S)
    return False


def run_stack(settings: Settings, args: argparse.Namespace) -> int:
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    # Children run in process groups of their own, so a terminal's Ctrl-C reaches only this process,
    # which then stops them in order: the API and workers first, the database they use last.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    database: list[Child] = []
    children: list[Child] = []
    try:
        if settings.database_url:
            dsn, where = settings.database_url, "MM_DATABASE_URL"
        else:
            from app.embedded_child import PostgresChild

            pg = PostgresChild(settings.data_dir / "pg")
            database.append(pg)
            pg.start()
            say(f"postgres started (pid {pg.pid})")
            dsn, where = pg.wait_ready("mm"), f"embedded ({pg.data_dir}, supervised)"
        token = admin_token(settings)
        asyncio.run(_prepare(dsn, token))
        env = {**os.environ, "MM_DATABASE_URL": dsn, "MM_BROKER_URL": settings.broker_url or dsn,
               "MM_SECRET_KEY": secret_key(settings)}
        # Development stack: its workers may call a stub seller on loopback (mm demo, tests). An explicit
        # MM_ALLOW_PRIVATE_ENDPOINTS (say, off) is kept.
        if not env.get("MM_ALLOW_PRIVATE_ENDPOINTS"):
            env["MM_ALLOW_PRIVATE_ENDPOINTS"] = "true"
        env.pop("MM_AUDIT_SIGNING_KEY", None)
        # Only the projector signs audit checkpoints (ARCHITECTURE §10): the API gets the public half alone.
        signing_key = audit_signing_key(settings)
        api_env = {**env, "MM_AUDIT_PUBLIC_KEY": public_key_of(signing_key)}
        me = [sys.executable, "-m", "app.cli"]
        children += [Child("api", [*me, "api"], api_env),
                     Child("projector", [*me, "projector"], {**env, "MM_AUDIT_SIGNING_KEY": signing_key})]
        if not args.no_worker:
            children.append(Child("worker", [*me, "worker"], env))
        for child in children:
            child.start()
            say(f"{child.name} started (pid {child.pid})")
        base = f"http://{settings.host}:{settings.port}"
        if _wait_healthy(base, database + children, lambda: stopping):
            print(f"\nMachine Markets is up\n  API:       {base}/v1\n  Docs:      {base}/docs\n"
                  f"  OpenAPI:   {base}/openapi.json\n  Admin key: {token}\n  Database:  {where}\n"
                  "Press Ctrl-C to stop.\n", flush=True)
        elif not stopping:
            say("the API did not become healthy within 60s; see the log above")
        while not stopping:
            now = time.monotonic()
            for child in database + children:
                child.check(now)
            time.sleep(_TICK_S)
    finally:
        say("stopping...")
        clean = stop_together(children)
        clean = stop_together(database) and clean
        say("stopped" + ("" if clean else "; some children had to be killed"))
    return 0 if clean else 1
