"""`mm audit export` against a real `mm api` (progress, cut and --resume), `mm audit verify`, and the key checks
of `mm api` and `mm projector`."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.container import Container
from app.services.accounts import bootstrap_admin_key
from projections.registry import read_models
from projections.runner import ProjectionRunner
from tests.api.audit_stack import AUDIT_PUBLIC, caught_up, seed, settings
from tests.live_stack import ROOT, free_port, mm_processes

NO_AUDIT_KEYS = {"MM_AUDIT_SIGNING_KEY": "", "MM_AUDIT_PUBLIC_KEY": ""}


def mm(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    full = {**os.environ, "MM_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=full, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


async def _seeded(dsn: str, admin_key: str, n: int) -> None:
    await bootstrap_admin_key(dsn, admin_key, "system:test")
    s = settings()
    c = await Container.open(s, dsn, min_size=1, max_size=4)
    try:
        await seed(c.store, [str(uuid.uuid4()), str(uuid.uuid4())], n)
        await caught_up(ProjectionRunner(c.pool, c.store, read_models(s), batch_size=500))
    finally:
        await c.close()


@pytest.fixture(scope="module")
def api(server_url: str) -> Iterator[dict[str, Any]]:
    """`mm api` holding only the audit public key (as `mm up` runs it), over a feed of 3,000 records."""
    from app.migrate import create_database, drop_database

    admin_key = "mm_cli_admin_" + uuid.uuid4().hex
    dsn = asyncio.run(create_database(server_url, "mm_audit_cli"))
    try:
        asyncio.run(_seeded(dsn, admin_key, 3000))
        env = {"MM_DATABASE_URL": dsn, "MM_SECRET_KEY": settings().secret_key or "", **NO_AUDIT_KEYS,
               "MM_AUDIT_PUBLIC_KEY": AUDIT_PUBLIC}
        with mm_processes(["api"], env, free_port()) as base:
            yield {"base": base, "key": admin_key}
    finally:
        asyncio.run(drop_database(server_url, dsn))


def _export(api: dict[str, Any], out: Path, fmt: str, *more: str) -> subprocess.CompletedProcess[str]:
    return mm("audit", "export", "--format", fmt, "--out", str(out), "--url", api["base"], *more,
              MM_API_KEY=api["key"])


@pytest.mark.parametrize("fmt", ["ndjson", "csv", "cloudevents"])
def test_export_cut_anywhere_and_resumed_equals_the_uncut_download(api: dict[str, Any], tmp_path: Path,
                                                                    fmt: str) -> None:
    whole = tmp_path / f"whole.{fmt}"
    done = _export(api, whole, fmt)
    assert done.returncode == 0, done.stderr
    assert "rows/s" in done.stderr and "exported" in done.stderr
    direct = httpx.get(api["base"] + "/v1/audit-events/export", params={"format": fmt},
                       headers={"Authorization": f"Bearer {api['key']}"}, timeout=60)
    assert whole.read_bytes() == direct.content and whole.read_bytes().count(b"\n") > 3000
    for seed_ in range(3):  # cut mid-line, as a dropped connection leaves the file
        cut = tmp_path / f"cut-{seed_}.{fmt}"
        data = whole.read_bytes()
        cut.write_bytes(data[: random.Random(seed_).randrange(1, len(data) - 1)])
        resumed = _export(api, cut, fmt, "--resume")
        assert resumed.returncode == 0, resumed.stderr
        assert cut.read_bytes() == data
    key = httpx.get(api["base"] + "/v1/audit-events/signing-key",
                    headers={"Authorization": f"Bearer {api['key']}"}).json()["publicKey"]
    verified = mm("audit", "verify", str(whole), "--public-key", key)
    assert verified.returncode == 0 and "verified 3" in verified.stdout, verified.stderr


def test_resume_of_a_complete_file_adds_nothing_new(api: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "feed.ndjson"
    assert _export(api, out, "ndjson").returncode == 0
    first = out.read_bytes()
    again = _export(api, out, "ndjson", "--resume")
    assert again.returncode == 0, again.stderr
    assert out.read_bytes() == first


def test_export_names_a_refusal(api: dict[str, Any], tmp_path: Path) -> None:
    bad = mm("audit", "export", "--out", str(tmp_path / "x"), "--url", api["base"], MM_API_KEY="mm_wrong")
    assert bad.returncode == 1 and "HTTP 401" in bad.stderr
    missing = mm("audit", "export", "--out", str(tmp_path / "x"), "--url", api["base"], MM_API_KEY="")
    assert missing.returncode == 2 and "MM_API_KEY" in missing.stderr


def test_mm_api_refuses_to_start_without_an_audit_key(fresh_database_sync: str) -> None:
    out = mm("api", MM_DATABASE_URL=fresh_database_sync, MM_SECRET_KEY=settings().secret_key or "",
             **NO_AUDIT_KEYS)
    assert out.returncode == 2 and "MM_AUDIT_PUBLIC_KEY nor MM_AUDIT_SIGNING_KEY" in out.stderr, out.stderr


def test_mm_projector_refuses_to_start_without_the_signing_key(fresh_database_sync: str) -> None:
    out = mm("projector", MM_DATABASE_URL=fresh_database_sync, MM_AUDIT_PUBLIC_KEY=AUDIT_PUBLIC,
             MM_AUDIT_SIGNING_KEY="")
    assert out.returncode == 2 and "MM_AUDIT_SIGNING_KEY is not set" in out.stderr, out.stderr


def test_a_new_signing_key_is_usable() -> None:
    out = mm("audit", "new-signing-key")
    assert out.returncode == 0, out.stderr
    assert settings(audit_signing_key=out.stdout.strip()).audit_public_key_b64 in out.stderr
