"""A database of its own with a seeded audit feed (many records, two tenants), a signing projector and an API."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from app.api.app import create_app
from app.container import Container
from app.settings import Settings
from app.store.event_store import EventStore
from app.store.types import LogPosition, NewEvent
from domain.shared.context import CommandContext
from projections import checkpoints
from projections.registry import read_models
from projections.runner import ProjectionRunner
from tests.api.conftest import auth
from tests.conftest import TEST_AUDIT_KEY, TEST_AUDIT_PUBLIC, TEST_SECRET_KEY

AUDIT_KEY, AUDIT_PUBLIC = TEST_AUDIT_KEY, TEST_AUDIT_PUBLIC


@dataclass
class Stack:
    client: httpx.AsyncClient
    container: Container
    runner: ProjectionRunner
    admin: dict[str, str]
    tenants: list[dict[str, Any]] = field(default_factory=list)

    async def catch_up(self) -> None:
        await caught_up(self.runner)


async def caught_up(runner: ProjectionRunner, within_s: float = 60) -> None:
    """Every projection of `runner` has applied the whole log as it is now. Several passes if needed: on the
    shared test server another database's open transaction can hold back the (cluster-wide) visibility horizon."""
    row = await runner.pool.fetchrow("SELECT tx_id::text::bigint AS tx_id, position FROM events"
                                     " ORDER BY tx_id DESC, position DESC LIMIT 1")  # committed, if not yet visible
    head = None if row is None else LogPosition(row["tx_id"], row["position"])
    async with asyncio.timeout(within_s):
        for p in runner.projections:
            while True:
                await runner.catch_up(p)
                async with runner.pool.acquire() as conn:
                    at = await checkpoints.position(conn, p.name)
                if head is None or (at is not None and at >= head):
                    break
                await asyncio.sleep(0.05)


def settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {"secret_key": TEST_SECRET_KEY, "audit_signing_key": AUDIT_KEY,
                            "audit_checkpoint_every": 50, "audit_checkpoint_interval_s": 30.0,
                            "audit_export_batch_size": 128}
    return Settings(**{**base, **overrides})


@asynccontextmanager
async def audit_stack(dsn: str, tenants: int = 2, **overrides: Any) -> AsyncIterator[Stack]:
    s = settings(**overrides)
    models = read_models(s)
    # A live runner holds one session per projection (its advisory lock, ARCHITECTURE §4): the pool must leave
    # room for the API's requests beside them, however many read models there are (ten answered no stream once
    # the ninth projection landed: every connection was a lock session).
    container = await Container.open(s, dsn, min_size=1, max_size=len(models) + 10)
    runner = ProjectionRunner(container.pool, container.store, models, batch_size=97)
    token = "mm_audit_admin_" + uuid.uuid4().hex
    await container.accounts.bootstrap_admin(CommandContext(at=datetime.now(UTC), actor="system:test"), token)
    transport = httpx.ASGITransport(app=create_app(s, container=container), raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            stack = Stack(client, container, runner, auth(token))
            await stack.catch_up()
            for i in range(tenants):
                r = await client.post("/v1/accounts", json={"name": f"audited-{i}"}, headers=stack.admin)
                assert r.status_code == 201, r.text
                body = r.json()
                stack.tenants.append({"id": body["account"]["id"], "headers": auth(body["apiKey"]["key"])})
            yield stack
    finally:
        await container.close()


async def seed(store: EventStore, account_ids: list[str], n: int, start: datetime | None = None,
               step: timedelta = timedelta(seconds=1), chunk: int = 250) -> None:
    """`n` audit-worthy events round-robin over the accounts' machines, `chunk` per append, times `step` apart."""
    at = start or datetime(2026, 1, 1, tzinfo=UTC)
    machines = {a: (uuid.uuid4(), 0) for a in account_ids}
    made = 0
    while made < n:
        account = account_ids[(made // chunk) % len(account_ids)]
        mid, version = machines[account]
        events = []
        for _ in range(min(chunk, n - made)):
            version += 1
            events.append(NewEvent(
                event_id=uuid.uuid4(), stream_id=mid, stream_type="machines:Machine", version=version,
                type="machines:Machine.ProfileRevised",
                data={"timestamp": at.isoformat(), "name": f"m-{made}", "labels": {"n": str(made)}},
                metadata={"ownerAccountId": account, "actor": "system:seed", "requestId": f"seed-{made}"},
            ))
            at += step
            made += 1
        machines[account] = (mid, version)
        await store.append(events)

