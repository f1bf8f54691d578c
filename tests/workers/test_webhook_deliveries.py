"""Webhook deliveries through a real broker (PostgreSQL; the main path through RabbitMQ too) to a real local
receiver (the stub seller): signed CloudEvents bodies, retries after 5xx, in order, no double on redelivery,
both secrets during a rotation, and an endpoint failing past the retry span disabled with an audit event."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker

from app.container import Container
from app.outbound.stub_seller import StubSeller
from app.settings import Settings
from domain.shared.context import CommandContext
from domain.webhooks.commands import ReviseWebhookEndpoint
from domain.webhooks.signing import verify
from projections.audit import AuditProjection
from projections.runner import ProjectionRunner
from projections.webhook_fanout import WebhookFanoutProjection
from tests.api.audit_stack import caught_up
from tests.conftest import TEST_SECRET_KEY
from tests.workers.harness import broker_url_for, eventually, relay_through, worker_on
from workers.pg_broker import PostgresBroker

dramatiq.set_broker(StubBroker())  # actors bind at import; never let dramatiq pick a default broker here
from workers.webhooks import drain_webhook_endpoint  # noqa: E402

FAST = Settings(secret_key=TEST_SECRET_KEY, allow_private_endpoints=True, webhook_backoff_base_s=0.1,
                webhook_backoff_max_s=0.3, webhook_retry_span_s=3600)
ACCOUNT = uuid.uuid4()


def ctx() -> CommandContext:
    return CommandContext(at=datetime.now(UTC), actor="test", account_id=ACCOUNT)


async def project(c: Container, broker: dramatiq.Broker | None) -> None:
    """The audit projection (the bodies) and the fan-out (the deliveries, and wake-ups through `broker`), up to
    the log's end: one pass could stop short of it while another database's transaction holds the server's
    visibility horizon back (seen under load: a rotation never delivered, a fan-out that wrote nothing)."""
    await caught_up(ProjectionRunner(c.pool, c.store, [AuditProjection(), WebhookFanoutProjection(broker)]))


async def delivered(c: Container, endpoint_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await c.pool.fetch("SELECT id, type, status, attempts FROM webhook_deliveries WHERE endpoint_id = $1"
                              " ORDER BY tx_id, position", endpoint_id)
    return [dict(r) for r in rows]


def bodies(stub: StubSeller) -> list[tuple[dict[str, Any], dict[str, Any], bytes]]:
    return [(json.loads(r["body"]), r["headers"], r["body"]) for r in stub.stats.requests]


@pytest.mark.parametrize("kind", ["postgresql", "rabbitmq"])
async def test_signed_in_order_retried_after_503s_never_doubled_and_both_secrets_during_rotation(
    c: Container, fresh_database: str, stub: StubSeller, kind: str
) -> None:
    made = await c.webhooks.register(ctx(), url=f"{stub.url}/flaky/2", types=["webhook-endpoint.*"],
                                     description="", enabled=True)
    old_secret, eid = made.secret, made.endpoint.id
    assert old_secret is not None
    await c.webhooks.revise(ctx(), eid, ReviseWebhookEndpoint(description="second"), None)
    # On RabbitMQ (shared by everything on this host) the actor gets a queue of its own, or another run's worker
    # on `webhooks` could take a wake-up; the fan-out addresses the actor's queue.
    async with worker_on(broker_url_for(kind, fresh_database), fresh_database, [drain_webhook_endpoint],
                         settings=FAST, private_queues=kind == "rabbitmq") as (broker, w):
        assert isinstance(broker, RabbitmqBroker if kind == "rabbitmq" else PostgresBroker)
        w.start()
        await project(c, broker)
        assert await eventually(lambda: _all_delivered(c, eid, 2), 20), await delivered(c, eid)
        got = bodies(stub)
        # Each delivery got two 503s (flaky/2 counts per Idempotency-Key), then 200; the second waited for the
        # first (order per endpoint).
        assert [b["type"] for b, _, _ in got] == ["webhook-endpoint.created"] * 3 + ["webhook-endpoint.updated"] * 3
        rows = await delivered(c, eid)
        assert [(r["status"], r["attempts"]) for r in rows] == [("delivered", 3), ("delivered", 3)]
        for body, headers, raw in got:
            assert headers["idempotency-key"] in {str(r["id"]) for r in rows}
            assert headers["content-type"] == "application/cloudevents+json"
            assert verify(headers["mm-signature"], old_secret, raw, int(time.time()))
            assert body["specversion"] == "1.0" and body["source"] and body["data"]["accountId"] == str(ACCOUNT)
            assert "mmseal" not in raw.decode() and old_secret not in raw.decode()
        # Redelivery: the fan-out applied again and wake-ups sent again change nothing.
        async with c.pool.acquire() as conn, conn.transaction():
            await WebhookFanoutProjection(broker).apply_many(conn, await c.store.load(eid), {})
        for _ in range(3):
            drain_webhook_endpoint.send(str(eid))
        await _settle(c, eid)
        assert len(stub.stats.requests) == 6
        # Rotation: the next delivery carries two v1 signatures, one per secret; each verifies alone.
        rotated = await c.webhooks.rotate_secret(ctx(), eid, None)
        assert rotated.secret is not None and rotated.secret != old_secret
        await project(c, broker)
        assert await eventually(lambda: _all_delivered(c, eid, 3), 20), await delivered(c, eid)
        body, headers, raw = bodies(stub)[-1]
        assert body["type"] == "webhook-endpoint.secret-rotated"
        assert headers["mm-signature"].count("v1=") == 2
        now = int(time.time())
        assert verify(headers["mm-signature"], rotated.secret, raw, now)
        assert verify(headers["mm-signature"], old_secret, raw, now)
        assert not verify(headers["mm-signature"], "whsec_wrong", raw, now)


async def _all_delivered(c: Container, eid: uuid.UUID, n: int) -> bool:
    rows = await delivered(c, eid)
    return len(rows) == n and all(r["status"] == "delivered" for r in rows)


async def _settle(c: Container, eid: uuid.UUID) -> None:
    """Until no drainer holds the endpoint (the wake-ups above have run)."""
    async def idle() -> bool:
        return await c.pool.fetchval("SELECT count(*) FROM webhook_endpoint_leases WHERE endpoint_id = $1",
                                     eid) == 0
    await asyncio.sleep(1.0)
    assert await eventually(idle, 10)


class _SlowToCommit(WebhookFanoutProjection):
    """The fan-out with its batch's transaction held open a while after the wake-ups went out."""

    async def apply_many(self, conn: Any, events: Any, t: Any) -> None:
        await super().apply_many(conn, events, t)
        await self.hold()

    async def hold(self) -> None:
        await asyncio.sleep(1.5)


async def _one_delivery_through_a_slow_fan_out(c: Container, fresh_database: str, stub: StubSeller,
                                               fan_out: type[_SlowToCommit] = _SlowToCommit) -> None:
    """One endpoint, one event for it, fanned out by a projection slow to commit: delivered exactly once."""
    made = await c.webhooks.register(ctx(), url=f"{stub.url}/echo", types=["webhook-endpoint.created"],
                                     description="", enabled=True)
    eid = made.endpoint.id
    async with worker_on(fresh_database, fresh_database, [drain_webhook_endpoint], settings=FAST) as (broker, w):
        w.start()
        await caught_up(ProjectionRunner(c.pool, c.store, [AuditProjection(), fan_out(broker)]))
        assert await eventually(lambda: _all_delivered(c, eid, 1), 10), await delivered(c, eid)
    assert len(stub.stats.requests) == 1


async def test_a_wake_up_taken_before_its_batch_commits_still_delivers(
    c: Container, fresh_database: str, stub: StubSeller
) -> None:
    """The wake-ups leave before the fan-out's batch commits (a crash then cannot lose them), so a drainer can
    find nothing pending yet: it must come back until the batch is visible, not end and strand the delivery."""
    await _one_delivery_through_a_slow_fan_out(c, fresh_database, stub)


async def test_a_batch_committing_between_an_empty_read_and_the_check_still_delivers(
    c: Container, fresh_database: str, stub: StubSeller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interleaving seen under CPU load (a rotation's delivery left pending, never attempted): the drainer
    reads an empty work list, then the fan-out's batch commits, then the drainer asks whether that batch is
    visible. Forced here: the fan-out holds its batch open until a drainer has run against it, and an empty read
    before any delivery returns only once the fan-out's checkpoint has moved. A drainer that reads before it
    checks then finds the batch visible with nothing seen and strands the delivery; one that checks first comes
    back."""
    import threading

    from app.services import webhook_deliveries
    from projections import checkpoints
    from workers import webhooks

    real_read, real_check = webhook_deliveries.next_pending, webhooks._fanned_out
    drainer_ran = threading.Event()  # the drainer runs on the worker's event loop, in another thread
    ran_before_commit: list[bool] = []

    async def empty_read_then_commit(pool: Any, endpoint_id: uuid.UUID) -> Any:
        drainer_ran.set()
        row = await real_read(pool, endpoint_id)
        if row is None and not await pool.fetchval(
                "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1 AND status = 'delivered'",
                endpoint_id):
            async with pool.acquire() as conn:
                at = await checkpoints.position(conn, WebhookFanoutProjection.name)
                for _ in range(250):  # 5 s at most
                    if await checkpoints.position(conn, WebhookFanoutProjection.name) != at:
                        break
                    await asyncio.sleep(0.02)
        return row

    async def checked(pool: Any, to: list[int]) -> bool:
        drainer_ran.set()
        return await real_check(pool, to)

    class _HeldUntilADrainerRan(_SlowToCommit):
        async def hold(self) -> None:
            ran_before_commit.append(await asyncio.to_thread(drainer_ran.wait, 10))

    monkeypatch.setattr(webhook_deliveries, "next_pending", empty_read_then_commit)
    monkeypatch.setattr(webhooks, "_fanned_out", checked)
    await _one_delivery_through_a_slow_fan_out(c, fresh_database, stub, _HeldUntilADrainerRan)
    assert ran_before_commit and all(ran_before_commit), "no drainer ran before the batch committed"


async def test_a_redelivered_fan_out_batch_writes_no_second_delivery(c: Container, stub: StubSeller) -> None:
    made = await c.webhooks.register(ctx(), url=f"{stub.url}/echo", types=["*"], description="", enabled=True)
    events = await c.store.load(made.endpoint.id)
    projection = WebhookFanoutProjection(None)
    for _ in range(2):
        async with c.pool.acquire() as conn, conn.transaction():
            await projection.apply_many(conn, events, {})
    assert len(await delivered(c, made.endpoint.id)) == 1


async def test_an_endpoint_failing_longer_than_the_span_is_disabled_with_an_audit_event(
    c: Container, fresh_database: str, stub: StubSeller
) -> None:
    short = Settings(secret_key=TEST_SECRET_KEY, allow_private_endpoints=True, webhook_backoff_base_s=0.1,
                     webhook_backoff_max_s=0.2, webhook_retry_span_s=0.5)
    made = await c.webhooks.register(ctx(), url=f"{stub.url}/status/500", types=["*"], description="",
                                     enabled=True)
    eid = made.endpoint.id
    async with worker_on(fresh_database, fresh_database, [drain_webhook_endpoint], settings=short) as (broker, w):
        w.start()
        await project(c, broker)

        async def disabled() -> bool:
            e = await c.webhooks.load(eid)
            return e is not None and not e.enabled
        assert await eventually(disabled, 20)
    [row] = await delivered(c, eid)
    assert row["status"] == "failed" and row["attempts"] >= 2 and stub.stats.total == row["attempts"]
    types = [e.type for e in await c.store.load(eid)]
    assert types[-1] == "webhooks:WebhookEndpoint.DisabledForFailures"


async def test_a_clients_retry_goes_through_the_relay_and_sends_a_failed_delivery_again(
    c: Container, fresh_database: str, stub: StubSeller
) -> None:
    short = Settings(secret_key=TEST_SECRET_KEY, allow_private_endpoints=True, webhook_backoff_base_s=0.1,
                     webhook_backoff_max_s=0.2, webhook_retry_span_s=0.3)
    made = await c.webhooks.register(ctx(), url=f"{stub.url}/status/500", types=["webhook-endpoint.created"],
                                     description="", enabled=True)
    eid = made.endpoint.id
    async with worker_on(fresh_database, fresh_database, [drain_webhook_endpoint], settings=short) as (broker, w):
        w.start()
        await project(c, broker)

        async def failed() -> bool:
            # Failed for good, and the endpoint disabled for it: the worker records the two one after the other,
            # and a re-enabling that came between them would be undone by the disabling (as for any client).
            endpoint = await c.webhooks.load(eid)
            return [r["status"] for r in await delivered(c, eid)] == ["failed"] and endpoint is not None \
                and not endpoint.enabled
        assert await eventually(failed, 20)
        # The receiver is fixed and the endpoint enabled again; the client retries the failed delivery.
        await c.webhooks.revise(ctx(), eid, ReviseWebhookEndpoint(url=f"{stub.url}/echo", enabled=True), None)
        [row] = await delivered(c, eid)
        outcome = await c.webhooks.request_delivery_retry(ctx(), eid, row["id"])
        assert outcome.position is not None
        await relay_through(c, broker, eid)
        assert await eventually(lambda: _all_delivered(c, eid, 1), 20)
    assert stub.stats.requests[-1]["path"] == "/echo" and stub.stats.calls(str(row["id"])) == row["attempts"] + 1


def test_the_worker_entry_module_declares_the_drain_actor_on_queue_webhooks(database_url: str) -> None:
    """`mm worker` imports workers.actors: without the import there, nothing would ever drain (own process:
    importing it here would replace this test process's broker)."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = ("import workers.actors as a; b = a.broker;"
            " print(b.get_actor('drain_webhook_endpoint').queue_name, 'webhooks' in b.get_declared_queues())")
    env = {**os.environ, "MM_DATABASE_URL": database_url, "MM_SECRET_KEY": TEST_SECRET_KEY}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.split() == ["webhooks", "True"], out.stderr


async def test_fan_out_follows_the_log_account_types_enabled_and_deleted(c: Container) -> None:
    """An endpoint gets its own account's matching records recorded while it is registered and enabled."""
    other = CommandContext(at=datetime.now(UTC), actor="test", account_id=uuid.uuid4())
    made = await c.webhooks.register(ctx(), url="https://h.example/x", types=["webhook-endpoint.updated"],
                                     description="", enabled=True)
    eid = made.endpoint.id
    theirs = await c.webhooks.register(other, url="https://h.example/y", types=["*"], description="", enabled=True)
    await c.webhooks.revise(other, theirs.endpoint.id, ReviseWebhookEndpoint(description="not ours"), None)
    await c.webhooks.revise(ctx(), eid, ReviseWebhookEndpoint(description="one"), None)  # delivered
    await c.webhooks.revise(ctx(), eid, ReviseWebhookEndpoint(enabled=False), None)  # disabled: not delivered
    await c.webhooks.revise(ctx(), eid, ReviseWebhookEndpoint(description="two"), None)  # disabled: none
    await c.webhooks.revise(ctx(), eid, ReviseWebhookEndpoint(enabled=True), None)  # delivered
    await c.webhooks.delete(ctx(), eid, None)
    await project(c, None)
    rows = await delivered(c, eid)
    assert [r["type"] for r in rows] == ["webhook-endpoint.updated"] * 2
    events = {e.event_id: e for e in await c.store.load(eid)}
    got = await c.pool.fetch("SELECT event_id FROM webhook_deliveries WHERE endpoint_id = $1 ORDER BY tx_id, position",
                             eid)
    assert [events[r["event_id"]].data["description"] for r in got] == ["one", "two"]
    assert [events[r["event_id"]].data["enabled"] for r in got] == [True, True]
    assert await c.pool.fetchval("SELECT count(*) FROM webhook_subscriptions WHERE endpoint_id = $1", eid) == 0
