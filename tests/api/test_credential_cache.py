"""API-key credentials cached per API process: a key revoked through one process stops working in another,
as soon as the revocation's NOTIFY arrives, and within MM_CREDENTIAL_CACHE_TTL_S (<= 1 s) even without it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.api.app import create_app
from app.container import Container
from app.crypto import digest
from app.settings import Settings
from tests.api.conftest import auth
from tests.api.helpers import assert_problem
from tests.conftest import TEST_SECRET_KEY


@pytest.fixture
async def other_process(database_url: str) -> AsyncIterator[tuple[Container, httpx.AsyncClient]]:
    """A second API 'process': its own container (pool, cache, listener) and app on the same database."""
    c = await Container.open(Settings(secret_key=TEST_SECRET_KEY), database_url, min_size=1, max_size=4)
    transport = httpx.ASGITransport(app=create_app(c.settings, container=c), raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://other") as client:
            yield c, client
    finally:
        await c.close()


async def _new_key(client: httpx.AsyncClient, tenant: dict[str, Any]) -> dict[str, Any]:
    r = await client.post(f"/v1/accounts/{tenant['id']}/api-keys", json={}, headers=tenant["headers"])
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def _cached_and_listening(other: Container, client: httpx.AsyncClient, key: str) -> None:
    """Authenticate through the other process until its listener is up and the key's row is cached."""
    deadline = time.monotonic() + 10
    while not (other.credentials.listening and other.credentials.holds(digest(key))):
        assert time.monotonic() < deadline, "the other process never cached the credential"
        assert (await client.get("/v1/machines", headers=auth(key))).status_code == 200
        await asyncio.sleep(0.01)


async def test_revocation_in_one_process_reaches_the_others_cache_by_notify(
    client: httpx.AsyncClient, tenant: dict[str, Any], other_process: tuple[Container, httpx.AsyncClient],
) -> None:
    other, other_client = other_process
    other.credentials.ttl = 3600.0  # only the NOTIFY can drop the row now
    doomed = await _new_key(client, tenant)
    await _cached_and_listening(other, other_client, doomed["key"])

    d = await client.delete(f"/v1/accounts/{tenant['id']}/api-keys/{doomed['id']}", headers=tenant["headers"])
    assert d.status_code == 204, d.text
    revoked_at = time.monotonic()
    # Generous for a loaded box: the notification normally lands within milliseconds of the commit.
    while (r := await other_client.get("/v1/machines", headers=auth(doomed["key"]))).status_code == 200:
        assert time.monotonic() - revoked_at < 10, "the other process still accepts the revoked key"
        await asyncio.sleep(0.01)
    assert_problem(r, 401, "UNAUTHORIZED")
    assert not other.credentials.holds(digest(doomed["key"]))
    assert (await other_client.get("/v1/machines", headers=tenant["headers"])).status_code == 200


async def test_a_lost_notification_still_expires_within_the_ttl(
    client: httpx.AsyncClient, tenant: dict[str, Any], other_process: tuple[Container, httpx.AsyncClient],
    database_url: str,
) -> None:
    """A revocation whose NOTIFY never arrives (written straight to the table here) is honoured once the
    cached row is older than the TTL, which is at most 1 s."""
    other, other_client = other_process
    assert other.credentials.ttl <= 1.0
    doomed = await _new_key(client, tenant)
    await _cached_and_listening(other, other_client, doomed["key"])
    read_by = time.monotonic()  # the cached row was read before this instant

    await other.pool.execute("UPDATE api_key_credentials SET revoked_at = now() WHERE key_id = $1::uuid",
                             doomed["id"])
    await asyncio.sleep(max(0.0, read_by + other.credentials.ttl - time.monotonic()))
    assert_problem(await other_client.get("/v1/machines", headers=auth(doomed["key"])), 401, "UNAUTHORIZED")



class _CountingPool:
    """The real pool, counting the credential reads that go through it."""

    def __init__(self, pool: Any) -> None:
        self.pool, self.reads = pool, 0

    async def fetchrow(self, *args: Any) -> Any:
        self.reads += 1
        await asyncio.sleep(0.05)  # a slow read, so the other lookups arrive while it is in flight
        return await self.pool.fetchrow(*args)


async def test_lookups_that_miss_together_share_one_read(
    client: httpx.AsyncClient, tenant: dict[str, Any], other_process: tuple[Container, httpx.AsyncClient],
) -> None:
    other, other_client = other_process
    key = (await _new_key(client, tenant))["key"]
    await _cached_and_listening(other, other_client, key)
    counting = _CountingPool(other.credentials.pool)
    other.credentials.pool = counting  # type: ignore[assignment]
    other.credentials.ttl = 0.0  # every lookup now misses the cache

    rows = await asyncio.gather(*(other.credentials.lookup(digest(key)) for _ in range(20)))
    assert counting.reads == 1
    assert all(r is not None and r["key_hash"] == digest(key) for r in rows)

    # A revocation's invalidation mid-read: a lookup after it reads afresh instead of joining the old read.
    first = asyncio.ensure_future(other.credentials.lookup(digest(key)))
    await asyncio.sleep(0.01)
    other.credentials.invalidate()
    await asyncio.gather(first, other.credentials.lookup(digest(key)))
    assert counting.reads == 3
