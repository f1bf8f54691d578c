"""MM_ADMIN_TOKEN in the production process model (`mm migrate`, `mm api`, no `mm up`), and key rotation."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import asyncpg
import httpx
import pytest

from app.crypto import new_api_key
from app.services.accounts import AccountsService
from app.store.event_store import EventStore
from app.store.repository import Repository
from domain.shared.context import CommandContext
from tests.integration.proc_tools import ROOT, cleanup, free_port, mm_env, start_mm, wait_healthy


def mm(dsn: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=mm_env(MM_DATABASE_URL=dsn, **env),
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def _create_account(base: str, key: str) -> int:
    r = httpx.post(base + "/v1/accounts", json={"name": "prod"}, headers={"Authorization": f"Bearer {key}"})
    return r.status_code


async def test_many_processes_registering_the_token_at_once_record_it_once(fresh_database: str) -> None:
    token = new_api_key()[0]
    pools = [await asyncpg.create_pool(fresh_database, min_size=1, max_size=1) for _ in range(8)]
    try:
        from datetime import UTC, datetime

        ctx = CommandContext(at=datetime.now(UTC), actor="test")
        await asyncio.gather(*(AccountsService(Repository(EventStore(p))).bootstrap_admin(ctx, token) for p in pools))
        rows = await pools[0].fetch("SELECT type, data FROM events ORDER BY position")
    finally:
        for p in pools:
            await p.close()
    assert [r["type"] for r in rows] == ["accounts:Account.Opened", "accounts:Account.ApiKeyIssued"]
    assert token not in str(rows[1]["data"]) and token.split("_")[1] in str(rows[1]["data"])  # prefix only


@pytest.mark.slow
def test_production_processes_honour_mm_admin_token_and_rotate_it(fresh_database_sync: str) -> None:
    dsn, token = fresh_database_sync, new_api_key()[0]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = mm_env(MM_DATABASE_URL=dsn, MM_PORT=str(port), MM_ADMIN_TOKEN=token,
                 MM_PROJECTION_POLL_INTERVAL_S="0.1")
    # No projector at all: authentication reads the credentials the append itself writes, so every key
    # change below takes effect at once, with nothing projected.
    procs = [start_mm("api", env=env)]
    try:
        wait_healthy(base, procs[0])
        assert _create_account(base, token) == 201

        created = mm(dsn, "admin", "create-key", "--label", "rotated")
        assert created.returncode == 0, created.stderr
        new_key = created.stdout.strip()
        assert new_key.startswith("mm_") and new_key != token and new_key not in created.stderr
        assert _create_account(base, new_key) == 201

        old_prefix = token.split("_")[1]
        listed = mm(dsn, "admin", "list-keys")
        assert listed.returncode == 0 and old_prefix in listed.stdout and "rotated" in listed.stdout, listed.stdout
        assert token not in listed.stdout and new_key not in listed.stdout
        revoked = mm(dsn, "admin", "revoke-key", old_prefix)
        assert revoked.returncode == 0, revoked.stderr
        assert _create_account(base, token) == 401
        # A deployment that still carries the old token does not bring it back on the next start.
        again = mm(dsn, "migrate", MM_ADMIN_TOKEN=token)
        assert again.returncode == 0 and "registered" in again.stdout, again.stderr
        assert "revoked" in mm(dsn, "admin", "list-keys").stdout
        assert _create_account(base, token) == 401 and _create_account(base, new_key) == 201
        twice = mm(dsn, "admin", "revoke-key", old_prefix)
        assert twice.returncode == 1 and "already revoked" in twice.stderr
        unknown = mm(dsn, "admin", "revoke-key", "ffffffff")
        assert unknown.returncode == 1 and "no admin key" in unknown.stderr
    finally:
        for p in procs:
            cleanup(p)


def test_mm_migrate_registers_the_token_without_any_other_process(fresh_database_sync: str) -> None:
    token = new_api_key()[0]
    out = mm(fresh_database_sync, "migrate", MM_ADMIN_TOKEN=token)
    assert out.returncode == 0 and "MM_ADMIN_TOKEN is registered" in out.stdout and token not in out.stdout
    listed = mm(fresh_database_sync, "admin", "list-keys")
    assert listed.returncode == 0 and token.split("_")[1] in listed.stdout and "bootstrap" in listed.stdout


def test_the_first_admin_key_can_come_from_create_key(fresh_database_sync: str) -> None:
    out = mm(fresh_database_sync, "admin", "revoke-key", "ffffffff")
    assert out.returncode == 1 and "no admin key exists yet" in out.stderr
    created = mm(fresh_database_sync, "admin", "create-key", "--label", "first")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    listed = mm(fresh_database_sync, "admin", "list-keys").stdout
    assert key.split("_")[1] in listed and "first" in listed and "active" in listed and key not in listed
    # Setting MM_ADMIN_TOKEN to that key later records nothing new (same key, by its hash).
    assert mm(fresh_database_sync, "migrate", MM_ADMIN_TOKEN=key).returncode == 0
    assert mm(fresh_database_sync, "admin", "list-keys").stdout == listed
