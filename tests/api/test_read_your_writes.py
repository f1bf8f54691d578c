"""A client that only uses what the API returns reads its own writes: keys work at once (authentication never
waits for a projection), and single-resource GETs wait for the resource's newest event, with no header."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from app.container import Container
from app.settings import Settings
from domain.shared.context import CommandContext
from projections.registry import read_models
from projections.runner import ProjectionRunner
from tests.api.helpers import Keys, active_machine, api_on, assert_problem
from tests.conftest import TEST_SECRET_KEY

ADMIN = "mm_rw_admin_" + uuid.uuid4().hex
MIGRATION = Path(__file__).resolve().parents[2] / "sql" / "0014_api_key_credentials.sql"


class Stack(msgspec.Struct):
    """An API on its own database whose projections run only when the test says so."""

    container: Container
    client: httpx.AsyncClient
    runner: ProjectionRunner

    async def run_projections_after(self, delay: float) -> asyncio.Task[None]:
        stop = asyncio.Event()

        async def later() -> None:
            await asyncio.sleep(delay)
            try:
                await self.runner.run(stop)
            except asyncio.CancelledError:
                stop.set()
                raise

        return asyncio.create_task(later())


@pytest.fixture
async def stack(fresh_database: str) -> AsyncIterator[Stack]:
    settings = Settings(secret_key=TEST_SECRET_KEY, read_your_writes_timeout_s=5.0, projection_poll_interval_s=0.05)
    async with api_on(settings, fresh_database, min_size=1, max_size=20) as (client, container):
        await container.accounts.bootstrap_admin(CommandContext(at=datetime.now(UTC), actor="test"), ADMIN)
        runner = ProjectionRunner(container.pool, container.store, read_models(), poll_interval=0.05)
        yield Stack(container=container, client=client, runner=runner)


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _open_account(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.post("/v1/accounts", json={"name": "rw"}, headers=_bearer(ADMIN))
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_keys_work_and_stop_working_with_no_projector_running(stack: Stack) -> None:
    """No projection runs in this test at all: the admin key, a new account's key and a key issued later all
    authenticate at once, and a revoked one is refused at once."""
    opened = await _open_account(stack.client)  # the bootstrap admin key authenticated with nothing projected
    h = _bearer(opened["apiKey"]["key"])
    r = await stack.client.post("/v1/machines", json={"name": "m", "publicKey": Keys().public_b64}, headers=h)
    assert r.status_code == 201, r.text

    account = opened["account"]["id"]
    issued = await stack.client.post(f"/v1/accounts/{account}/api-keys", json={"label": "ci"}, headers=h)
    assert issued.status_code == 201, issued.text
    second = _bearer(issued.json()["key"])
    assert (await stack.client.post("/v1/machines", json={"name": "n", "publicKey": Keys().public_b64},
                                    headers=second)).status_code == 201

    revoked = await stack.client.delete(f"/v1/accounts/{account}/api-keys/{issued.json()['id']}", headers=h)
    assert revoked.status_code == 204, revoked.text
    assert_problem(await stack.client.post("/v1/machines", json={"name": "o", "publicKey": Keys().public_b64},
                                           headers=second), 401, "UNAUTHORIZED")


async def test_a_single_resource_get_waits_for_its_own_write(stack: Stack) -> None:
    opened = await _open_account(stack.client)
    h = _bearer(opened["apiKey"]["key"])
    created = await stack.client.post("/v1/machines", json={"name": "rw", "publicKey": Keys().public_b64}, headers=h)
    mid = created.json()["id"]
    projections = await stack.run_projections_after(0.3)
    try:
        started = time.monotonic()
        got = await stack.client.get(f"/v1/machines/{mid}", headers=h)  # no X-Min-Position
        assert got.status_code == 200, got.text
        assert time.monotonic() - started >= 0.25  # it waited for the projector, which started late

        revised = await stack.client.patch(f"/v1/machines/{mid}", json={"description": "after"}, headers=h)
        assert revised.status_code == 200, revised.text
        for _ in range(20):  # every GET right after a write shows it (the runner is live now)
            got = await stack.client.get(f"/v1/machines/{mid}", headers=h)
            assert got.json()["description"] == "after" and got.headers["etag"] == revised.headers["etag"]
        me = await stack.client.get("/v1/accounts/me", headers=h)
        assert me.status_code == 200 and me.json()["id"] == opened["account"]["id"]
        keys = await stack.client.get(f"/v1/accounts/{opened['account']['id']}/api-keys", headers=h)
        assert [k["id"] for k in keys.json()] == [opened["apiKey"]["id"]]
    finally:
        projections.cancel()
        await asyncio.gather(projections, return_exceptions=True)


async def test_a_read_model_that_stays_behind_answers_503_not_a_stale_404(fresh_database: str) -> None:
    settings = Settings(secret_key=TEST_SECRET_KEY, read_your_writes_timeout_s=0.3)
    async with api_on(settings, fresh_database, min_size=1, max_size=4) as (client, container):
        await container.accounts.bootstrap_admin(CommandContext(at=datetime.now(UTC), actor="test"), ADMIN)
        h = _bearer((await _open_account(client))["apiKey"]["key"])
        mid = (await client.post("/v1/machines", json={"name": "x", "publicKey": Keys().public_b64},
                                 headers=h)).json()["id"]
        r = await client.get(f"/v1/machines/{mid}", headers=h)
        assert_problem(r, 503, "PROJECTION_LAGGING")
        assert int(r.headers["retry-after"]) > 0
        # A resource that was never written is still a plain 404, at once.
        assert_problem(await client.get(f"/v1/machines/{uuid.uuid4()}", headers=h), 404, "NOT_FOUND")


async def test_the_migration_backfills_keys_recorded_before_the_credentials_table(fresh_container: Container) -> None:
    c = fresh_container
    ctx = CommandContext(at=datetime.now(UTC), actor="test", account_id=uuid.uuid4())
    account, _ = await c.accounts.open(ctx, "old", is_admin=False)
    other = await c.accounts.issue_key(ctx, account.id, "gone")
    await c.accounts.revoke_key(ctx, account.id, other.key_id)
    before = await c.pool.fetch("SELECT * FROM api_key_credentials ORDER BY key_id")
    await c.pool.execute("DELETE FROM api_key_credentials")
    sql = MIGRATION.read_text()
    await c.pool.execute(sql)
    after = await c.pool.fetch("SELECT * FROM api_key_credentials ORDER BY key_id")
    assert len(after) == 2 and [dict(r) for r in after] == [dict(r) for r in before]
    assert sum(r["revoked_at"] is not None for r in after) == 1



async def test_graph_reads_show_the_write_just_made(stack: Stack) -> None:
    h = _bearer((await _open_account(stack.client))["apiKey"]["key"])
    mid = (await active_machine(stack.client, h)).json()["id"]  # commands load aggregates: no projector needed
    node = await stack.client.post(f"/v1/machines/{mid}/graph/nodes", headers=h,
                                   json={"type": "resource", "label": "before"})
    assert node.status_code == 201, node.text
    projections = await stack.run_projections_after(0.2)
    try:
        got = await stack.client.get(node.headers["location"], headers=h)
        assert got.status_code == 200 and got.json()["label"] == "before", got.text
        patched = await stack.client.patch(node.headers["location"], json={"label": "after"}, headers=h)
        assert patched.status_code == 200, patched.text
        graph = await stack.client.get(f"/v1/machines/{mid}/graph", headers=h)
        assert [n["label"] for n in graph.json()["nodes"]] == ["after"], graph.text
    finally:
        projections.cancel()
        await asyncio.gather(projections, return_exceptions=True)
