"""The operator commands: migrate is idempotent, projections status reports lag, rebuild swaps in a replay."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

from app.container import Container
from app.settings import Settings
from domain.shared.context import CommandContext
from projections.registry import projection_names

ROOT = Path(__file__).resolve().parents[2]


def mm(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MM_DATABASE_URL": dsn, "MM_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


async def _register(dsn: str, n: int) -> None:
    c = await Container.open(Settings(), dsn, min_size=1, max_size=2)
    try:
        ctx = CommandContext(at=datetime.now(UTC), actor="test", account_id=uuid.uuid4())
        for i in range(n):
            await c.machines.register(ctx, name=f"m{i}", description="", public_key="A" * 43 + "=", labels={})
    finally:
        await c.close()


def test_migrate_twice_applies_nothing_the_second_time(fresh_database_sync: str) -> None:
    out = mm(fresh_database_sync, "migrate")
    assert out.returncode == 0 and out.stdout.strip() == "applied 0 migration(s)", out.stderr


def test_status_shows_lag_and_rebuild_catches_a_projection_up(fresh_database_sync: str) -> None:
    asyncio.run(_register(fresh_database_sync, 7))
    before = mm(fresh_database_sync, "projections", "status")
    assert before.returncode == 0, before.stderr
    assert f"not started yet: {', '.join(projection_names())}" in before.stdout

    rebuilt = mm(fresh_database_sync, "projections", "rebuild", "machines")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "rebuilt machines: 7 events replayed" in rebuilt.stdout

    after = mm(fresh_database_sync, "projections", "status")
    machines = next(line for line in after.stdout.splitlines() if line.startswith("machines "))
    assert machines.split()[2:4] == ["7", "0"], machines  # applied 7, lag 0 events


def test_rebuilding_the_relay_is_refused(fresh_database_sync: str) -> None:
    out = mm(fresh_database_sync, "projections", "rebuild", "relay")
    assert out.returncode == 2 and "would resend them" in out.stdout


def test_mm_api_refuses_to_start_without_a_secret_key(fresh_database_sync: str) -> None:
    env_key = os.environ.pop("MM_SECRET_KEY", None)
    try:
        out = mm(fresh_database_sync, "api")
    finally:
        if env_key is not None:
            os.environ["MM_SECRET_KEY"] = env_key
    assert out.returncode == 2 and "MM_SECRET_KEY is not set" in out.stderr, out.stderr


def test_mm_secret_key_prints_a_usable_key(fresh_database_sync: str) -> None:
    out = mm(fresh_database_sync, "secret-key")
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip()
    assert Settings(secret_key=key).secret_key == key and key != mm(fresh_database_sync, "secret-key").stdout.strip()
