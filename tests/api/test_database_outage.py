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


async def _resumes(api: httpx.AsyncClient, path: str, headers: dict[str, str], within_s: float = 15) -> None:
    """Once the database is back, `path` answers 200 within `within_s`, and only 503 until then."""
    deadline = time.monotonic() + within_s
    while (r := await api.get(path, headers=headers)).status_code != 200:
        assert r.status_code == 503, r.text
        assert time.monotonic() < deadline, "service did not resume after the database came back"
        await asyncio.sleep(0.2)


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
    await _resumes(api, f"/v1/machines/{mid}", h)
    ready = await api.get("/ready")
    assert {c["name"]: c["ok"] for c in ready.json()["checks"]}["database"] is True


# How the statement that loads aggregates' streams (app/store/loads.py) ends; a fresh pool sends its text.
_STREAM_LOAD = b" ORDER BY 4, 6"
_LOST_MID_LOAD = [
    ("GET", "/v1/machines/{mid}/graph", {}),  # a read: the machine guard loads the machine
    ("PATCH", "/v1/machines/{mid}", {"json": {"description": "x"}}),
    ("POST", "/v1/machines/{mid}/identity/challenge", {"headers": {"Idempotency-Key": "fresh"}}),
    ("POST", "/v1/market/orders", {"json": {"buyerMachineId": "{mid}", "capability": "outage", "input": {}}}),
    ("POST", "/v1/market/orders", {"json": {"buyerMachineId": "{mid}", "capability": "outage", "input": {}},
                                   "headers": {"Idempotency-Key": "fresh"}}),
]


@pytest.mark.parametrize(("method", "path", "kwargs"), _LOST_MID_LOAD,
                         ids=[f"{m} {p}{' idempotent' if 'headers' in k else ''}" for m, p, k in _LOST_MID_LOAD])
async def test_the_server_dying_while_a_stream_loads_is_a_503_not_a_500(
    proxied: tuple[httpx.AsyncClient, TcpProxy], client: httpx.AsyncClient, tenant: dict[str, Any],
    method: str, path: str, kwargs: dict[str, Any],
) -> None:
    """The restart seen under load: the connection dies with the load statement in flight. The load's
    unreadable-snapshot fallback took that for a snapshot problem and re-ran the load on the dead connection,
    which asyncpg had already detached ("connection has been released back to the pool"): a 500."""
    api, proxy = proxied
    h = tenant["headers"]
    mid = (await active_machine(client, h)).json()["id"]  # set up through the shared API, not the proxy
    headers = {**h, **{k: uuid.uuid4().hex for k in kwargs.get("headers", {})}}
    body = kwargs.get("json")
    if body is not None:
        body = {k: v.format(mid=mid) if isinstance(v, str) else v for k, v in body.items()}

    proxy.cut_on(_STREAM_LOAD)
    r = await api.request(method, path.format(mid=mid), headers=headers, json=body)
    assert proxy.tripped.is_set(), "the request never loaded a stream: the cut proved nothing"
    assert_problem(r, 503, "DATABASE_UNAVAILABLE")
    assert int(r.headers["retry-after"]) > 0

    await proxy.restore()
    await _resumes(api, f"/v1/machines/{mid}", h)
