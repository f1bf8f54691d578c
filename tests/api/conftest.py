"""API fixtures: the real app on the test database, a live projection runner, and an admin key."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from app.api.app import create_app
from app.container import Container
from app.settings import Settings
from domain.shared.context import CommandContext
from projections.registry import read_models
from projections.runner import ProjectionRunner
from tests.conftest import TEST_AUDIT_KEY, TEST_SECRET_KEY

ADMIN_TOKEN = "mm_test_admin_" + uuid.uuid4().hex


@pytest.fixture(scope="session")
async def container(database_url: str) -> AsyncIterator[Container]:
    settings = Settings(projection_poll_interval_s=0.05, secret_key=TEST_SECRET_KEY, audit_signing_key=TEST_AUDIT_KEY)
    c = await Container.open(settings, database_url, min_size=2, max_size=20)
    runner = ProjectionRunner(c.pool, c.store, read_models(settings), poll_interval=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    ctx = CommandContext(at=datetime.now(UTC), actor="system:test-bootstrap")
    position = await c.accounts.bootstrap_admin(ctx, ADMIN_TOKEN)
    from app.api.consistency import wait_for

    assert position is not None and await wait_for(c.pool, "accounts", position, 10)
    try:
        yield c
    finally:
        stop.set()
        await task
        await c.close()


@pytest.fixture(scope="session")
async def client(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    # ASGITransport runs the app on this test's event loop, where the asyncpg pool lives.
    app = create_app(container.settings, container=container)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="session")
def admin() -> dict[str, str]:
    return auth(ADMIN_TOKEN)


@pytest.fixture
async def tenant(client: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, Any]:
    """A fresh ordinary account and its key headers."""
    r = await client.post("/v1/accounts", json={"name": f"tenant-{uuid.uuid4().hex[:6]}"}, headers=admin)
    assert r.status_code == 201, r.text
    body = r.json()
    return {"id": body["account"]["id"], "headers": auth(body["apiKey"]["key"])}
