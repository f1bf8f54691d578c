"""A real `mm api` + `mm projector` pair on a database of their own, shared by the contract tests."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis

from app.migrate import create_database, drop_database
from app.services.accounts import bootstrap_admin_key
from tests.conftest import TEST_SECRET_KEY
from tests.contract.fuzzing import TENANT, TenantKey, machine_with_agent

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def api_server(server_url: str) -> Iterator[dict[str, Any]]:
    """Its base URL and a bootstrap admin key that already authenticates. One per module, so no API and
    projector process outlives the tests that use it (their polling would load the rest of the suite)."""
    admin_key = "mm_contract_admin_" + uuid.uuid4().hex
    url = asyncio.run(create_database(server_url, "mm_contract"))
    asyncio.run(bootstrap_admin_key(url, admin_key, "system:contract-test"))
    port = _free_port()
    env = {**os.environ, "MM_DATABASE_URL": url, "MM_PORT": str(port), "MM_LOG_LEVEL": "WARNING",
           "MM_PROJECTION_POLL_INTERVAL_S": "0.05", "PYTHONPATH": str(ROOT), "MM_SECRET_KEY": TEST_SECRET_KEY,
           "MM_READ_YOUR_WRITES_TIMEOUT_S": "10"}  # a loaded box: reads after writes wait, not 503
    procs = [subprocess.Popen([sys.executable, "-m", "app.cli", cmd], env=env, cwd=ROOT)
             for cmd in ("api", "projector")]
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and procs[0].poll() is None, "the API did not start"
            time.sleep(0.1)
        yield {"base": base, "admin_key": admin_key}
    finally:
        for p in procs:
            p.terminate()
        try:
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
        finally:
            asyncio.run(drop_database(server_url, url))


def open_account(server: dict[str, Any], name: str) -> str:
    """A new ordinary account's API key."""
    r = httpx.post(server["base"] + "/v1/accounts", json={"name": name},
                   headers={"Authorization": f"Bearer {server['admin_key']}"})
    assert r.status_code == 201, r.text
    return str(r.json()["apiKey"]["key"])


@pytest.fixture(scope="module")
def api(api_server: dict[str, Any]) -> dict[str, Any]:
    """The module's server, with a tenant whose active machine has an enrolled agent (the fuzz targets)."""
    TENANT["key"] = open_account(api_server, "contract")
    TENANT["machine"], TENANT["agent_token"] = machine_with_agent(api_server["base"], TENANT["key"])
    return api_server


@pytest.fixture(scope="module")
def api_schema(api: dict[str, Any]) -> Any:
    loaded = schemathesis.openapi.from_url(api["base"] + "/openapi.json")
    loaded.auth()(TenantKey)
    return loaded
