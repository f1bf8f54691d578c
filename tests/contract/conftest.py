"""A real `mm api` + `mm projector` pair on a database of their own, shared by the contract tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
import schemathesis

from app.migrate import create_database, drop_database
from app.services.accounts import bootstrap_admin_key
from tests.conftest import TEST_SECRET_KEY
from tests.contract.fuzzing import TENANT, TenantKey, machine_with_agent
from tests.live_stack import free_port, mm_processes

# The OpenAPI's example X-Min-Position. Schemathesis sends it as documented (explicit examples skip the hooks
# in fuzzing.py), and a position the log has not reached waits MM_READ_YOUR_WRITES_TIMEOUT_S before its 503.
_EXAMPLE_TX_ID = 1234


async def _past_example_position(server_url: str) -> None:
    """Move a fresh server's transaction ids past the example's, as on any server in use: each file's first
    test may run on a just-created embedded server (make test), whose ids start below a thousand."""
    conn = await asyncpg.connect(server_url)
    try:
        while await conn.fetchval("SELECT pg_current_xact_id()::text::bigint") <= _EXAMPLE_TX_ID:
            pass  # each autocommit call above takes a new transaction id
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def api_server(server_url: str) -> Iterator[dict[str, Any]]:
    """Its base URL and a bootstrap admin key that already authenticates. One per module, so no API and
    projector process outlives the tests that use it (their polling would load the rest of the suite)."""
    asyncio.run(_past_example_position(server_url))
    admin_key = "mm_contract_admin_" + uuid.uuid4().hex
    url = asyncio.run(create_database(server_url, "mm_contract"))
    asyncio.run(bootstrap_admin_key(url, admin_key, "system:contract-test"))
    env = {"MM_DATABASE_URL": url, "MM_PROJECTION_POLL_INTERVAL_S": "0.05", "MM_SECRET_KEY": TEST_SECRET_KEY,
           "MM_READ_YOUR_WRITES_TIMEOUT_S": "10",  # a loaded box: reads after writes wait, not 503
           "MM_AUDIT_STREAM_MAX_S": "0.3"}  # an SSE stream ends (with its `resume` event) so a case can finish
    try:
        with mm_processes(["api", "projector"], env, free_port()) as base:
            yield {"base": base, "admin_key": admin_key}
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
