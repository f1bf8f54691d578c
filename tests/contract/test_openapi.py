"""Schemathesis over the whole OpenAPI of a real `mm api` process: no 5xx, responses match the schema."""

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
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app.services.accounts import bootstrap_admin_key
from tests.conftest import create_database, drop_database

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "mm_contract_admin_" + uuid.uuid4().hex


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def api(server_url: str) -> Iterator[dict[str, Any]]:
    """A real API and projector process on a database of their own, plus a tenant key."""
    url = asyncio.run(create_database(server_url, "mm_contract"))
    asyncio.run(bootstrap_admin_key(url, ADMIN, "system:contract-test"))
    port = _free_port()
    env = {**os.environ, "MM_DATABASE_URL": url, "MM_PORT": str(port), "MM_LOG_LEVEL": "WARNING",
           "MM_PROJECTION_POLL_INTERVAL_S": "0.05", "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "app.cli", cmd], env=env, cwd=ROOT)
             for cmd in ("api", "projector")]
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.1)
        admin = {"Authorization": f"Bearer {ADMIN}"}
        deadline = time.monotonic() + 10
        while (r := httpx.post(base + "/v1/accounts", json={"name": "contract"}, headers=admin)).status_code == 401:
            assert time.monotonic() < deadline, "the bootstrap admin key never became usable"
            time.sleep(0.05)
        assert r.status_code == 201, r.text
        yield {"base": base, "tenant": {"Authorization": f"Bearer {r.json()['apiKey']['key']}"}}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
        asyncio.run(drop_database(server_url, url))


@pytest.fixture(scope="module")
def api_schema(api: dict[str, Any]) -> Any:
    return schemathesis.openapi.from_url(api["base"] + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_responses_match_the_schema(case: schemathesis.Case, api: dict[str, Any]) -> None:
    # Business rules (unknown ids, states, permissions) legitimately refuse schema-valid input.
    case.call_and_validate(base_url=api["base"], headers=api["tenant"], excluded_checks=[positive_data_acceptance])
