"""An Idempotency-Key's claim is short and renewed while its request runs: a retry after the API process died
proceeds within about one lease, while a live request keeps its claim however long it takes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest

from app.api.idempotency import IdempotencyStore
from app.api.middleware import fingerprint
from app.container import Container
from app.sealing import Sealer
from app.settings import Settings
from tests.api.helpers import Keys, api_on, assert_problem
from tests.conftest import TEST_SECRET_KEY

LEASE_S = 2.0  # renewed every 0.67 s: a loaded box may delay one renewal by a second and keep the claim


def _store(c: Container, account_id: uuid.UUID, key: str) -> IdempotencyStore:
    return IdempotencyStore(c.pool, account_id, key, 24, LEASE_S, Sealer(TEST_SECRET_KEY))


async def test_a_running_request_keeps_its_claim_and_a_dead_one_lapses_within_a_lease(container: Container) -> None:
    account, key = uuid.uuid4(), f"lease-{uuid.uuid4()}"
    first = _store(container, account, key)
    assert await first.claim("POST", "/v1/x", "h") == "claimed"
    renewing = asyncio.create_task(first.keep_claimed())
    try:
        await asyncio.sleep(3 * LEASE_S)  # three leases: only renewal keeps it claimed
        assert await _store(container, account, key).claim("POST", "/v1/x", "h") == "in_progress"
    finally:
        renewing.cancel()
        await asyncio.gather(renewing, return_exceptions=True)
    # The first holder stops renewing, as a killed process does: its claim runs out at `lapses`.
    lapses = await container.pool.fetchval(
        "SELECT locked_until FROM idempotency_keys WHERE account_id = $1 AND key = $2", account, key)
    died = time.monotonic()
    while (verdict := await _store(container, account, key).claim("POST", "/v1/x", "h")) != "claimed":
        assert verdict == "in_progress"
        assert time.monotonic() - died < LEASE_S + 5, "the claim of a dead request did not lapse"
        await asyncio.sleep(0.05)
    # Taken over only once the dead holder's lease had run out, by the database's own clock.
    assert await container.pool.fetchval("SELECT now() >= $1::timestamptz", lapses)


@pytest.fixture
async def short_lease_api(database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Container]]:
    async with api_on(Settings(secret_key=TEST_SECRET_KEY, idempotency_lease_s=LEASE_S), database_url,
                      min_size=1, max_size=4) as (client, c):
        yield client, c


async def test_a_retry_after_the_process_died_mid_request_proceeds_within_seconds(
    short_lease_api: tuple[httpx.AsyncClient, Container], tenant: dict[str, Any],
) -> None:
    api, c = short_lease_api
    body = msgspec.json.encode({"name": "retried", "publicKey": Keys().public_b64})
    key = f"crash-{uuid.uuid4()}"
    # The state a killed API process leaves: the key claimed for this very request, never renewed or answered.
    dead = _store(c, uuid.UUID(tenant["id"]), key)
    assert await dead.claim("POST", "/v1/machines", fingerprint("POST", "/v1/machines", b"", body)) == "claimed"
    headers = {**tenant["headers"], "Idempotency-Key": key, "Content-Type": "application/json"}

    died = time.monotonic()
    first = await api.post("/v1/machines", content=body, headers=headers)
    assert_problem(first, 409, "IDEMPOTENCY_KEY_IN_PROGRESS")
    while (r := await api.post("/v1/machines", content=body, headers=headers)).status_code == 409:
        assert time.monotonic() - died < LEASE_S + 5, "the retry stalled behind a dead request's claim"
        await asyncio.sleep(0.1)
    assert r.status_code == 201, r.text
    replay = await api.post("/v1/machines", content=body, headers=headers)
    assert replay.status_code == 201 and replay.json()["id"] == r.json()["id"]
    assert replay.headers["idempotent-replayed"] == "true"
