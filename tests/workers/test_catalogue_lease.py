"""A listing leaves the catalogue when the worker expires its endpoint's lease, and returns with the next beat."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import dramatiq
from dramatiq.brokers.stub import StubBroker

from app.container import Container
from app.services.agents import ReportedEndpoint
from domain.runtime.endpoint import endpoint_id
from domain.shared.context import CommandContext
from domain.shared.ids import derived_id
from projections.catalogue import CatalogueProjection
from projections.catalogue_reader import get_listing
from projections.runner import ProjectionRunner
from tests.journeys import enrolled_agent, operational_machine
from tests.workers.harness import eventually, relay_through, worker_on

dramatiq.set_broker(StubBroker())  # actors bind at import; never let dramatiq pick a default broker here
from workers.runtime_leases import expire_runtime_endpoint_lease  # noqa: E402

CAP = {"name": "render", "price": {"amount": 5, "currency": "USD"}, "providerKey": "gpu"}


def _ctx(account_id: uuid.UUID | None = None) -> CommandContext:
    return CommandContext(at=datetime.now(UTC), actor="test", account_id=account_id)


async def test_lease_expiry_by_the_worker_unlists_and_a_heartbeat_relists(c: Container, fresh_database: str) -> None:
    ctx = _ctx(uuid.uuid4())
    mid = (await operational_machine(c, ctx)).id
    out = await c.graph.create_node(ctx, mid, node_type="capability", label="r", status="active", data=CAP)
    assert out.item is not None
    listing = derived_id("listing", out.item["id"])
    _, token = await enrolled_agent(c, ctx, mid, keys=["gpu"], lease_seconds=1)
    stream = endpoint_id(mid, "gpu")
    runner, catalogue = ProjectionRunner(c.pool, c.store, []), CatalogueProjection()

    async def listed() -> bool:
        await runner.catch_up(catalogue)
        return await get_listing(c.pool, listing) is not None

    async def beat() -> None:
        await c.agents.heartbeat(_ctx(), token, [ReportedEndpoint(provider_key="gpu", url="https://gpu.example")])

    async with worker_on(fresh_database, fresh_database, [expire_runtime_endpoint_lease]) as (broker, worker):
        await beat()
        assert await eventually(listed, 10)
        await relay_through(c, broker, stream)
        worker.start()
        assert await eventually(lambda: _not(listed), 15), "the lease ran out but the listing stayed"
        endpoint = await c.runtime.load_stream(stream)
        assert endpoint is not None and endpoint.status == "expired"
        await beat()
        assert await eventually(listed, 10)


async def _not(check: Callable[[], Awaitable[bool]]) -> bool:
    return not await check()
