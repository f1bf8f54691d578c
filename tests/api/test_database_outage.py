"""A database outage answers 503 DATABASE_UNAVAILABLE with Retry-After on every kind of route, never a 500,
and service resumes by itself once the database is back."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.settings import Settings
from tests.api.helpers import active_machine, api_on, assert_problem
from tests.conftest import TEST_SECRET_KEY
from tests.tcp_proxy import TcpProxy


@pytest.fixture
async def proxied(database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, TcpProxy]]:
    """An API whose every database connection runs through a proxy the test can cut."""
    proxy = TcpProxy.for_url(database_url)
    await proxy.start()
    settings = Settings(secret_key=TEST_SECRET_KEY, database_connect_timeout_s=2.0, read_your_writes_timeout_s=10.0)
    try:
        async with api_on(settings, proxy.url(database_url), min_size=1, max_size=4) as (client, _):
            yield client, proxy
    finally:
        await proxy.cut()


def _outage_requests(machine_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    body = {"name": "during-outage", "publicKey": "A" * 43 + "="}
    return [
        ("GET", f"/v1/machines/{machine_id}", {}),
        ("GET", "/v1/machines", {}),
        ("POST", "/v1/machines", {"json": body}),
        ("POST", "/v1/machines", {"json": body, "headers": {"Idempotency-Key": uuid.uuid4().hex}}),
        ("PATCH", f"/v1/machines/{machine_id}", {"json": {"description": "x"}}),
        ("GET", f"/v1/machines/{machine_id}/graph", {}),
        ("GET", "/v1/audit-events", {}),
        ("GET", "/v1/accounts/me", {}),
        ("GET", "/metrics", {}),
    ]


async def test_every_route_answers_503_while_the_database_is_down_and_recovers(
    proxied: tuple[httpx.AsyncClient, TcpProxy], client: httpx.AsyncClient, tenant: dict[str, Any],
) -> None:
    api, proxy = proxied
    h = tenant["headers"]
    mid = (await active_machine(client, h)).json()["id"]
    assert (await api.get(f"/v1/machines/{mid}", headers=h)).status_code == 200
    assert (await api.get("/ready")).status_code in (200, 503)  # lag may vary; it answers either way

    await proxy.cut()
    for method, path, kwargs in _outage_requests(mid):
        headers = {**h, **kwargs.pop("headers", {})}
        r = await api.request(method, path, headers=headers, **kwargs)
        assert_problem(r, 503, "DATABASE_UNAVAILABLE")
        assert int(r.headers["retry-after"]) > 0, (method, path)

    ready = await api.get("/ready")
    assert ready.status_code == 503, ready.text
    assert ready.headers["retry-after"]
    checks = {c["name"]: c for c in ready.json()["checks"]}
    assert checks["database"]["ok"] is False and checks["database"]["detail"], checks
    assert checks["broker"]["ok"] is False, checks

    await proxy.restore()
    deadline = time.monotonic() + 15
    while (r := await api.get(f"/v1/machines/{mid}", headers=h)).status_code != 200:
        assert r.status_code == 503, r.text
        assert time.monotonic() < deadline, "service did not resume after the database came back"
        await asyncio.sleep(0.2)
    ready = await api.get("/ready")
    assert {c["name"]: c["ok"] for c in ready.json()["checks"]}["database"] is True
