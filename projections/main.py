"""The projector process: runs every read model plus the relay until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from app.db import create_pool
from app.settings import Settings
from app.store.event_store import EventStore
from projections.audit_upgrade import hash_existing_rows
from projections.base import Projection
from projections.registry import read_models
from projections.relay import RelayProjection
from projections.runner import ProjectionRunner
from projections.webhook_fanout import WebhookFanoutProjection
from workers.broker import make_broker

log = logging.getLogger("mm.projections")


def all_projections(settings: Settings, dsn: str) -> list[Projection]:
    # The relay only builds messages; the broker is chosen in workers.broker, the one place for it.
    broker = make_broker(settings.broker_url or dsn, settings)
    # The default broker (no MM_BROKER_URL, or `mm up` passing the database's own URL) is the PostgreSQL one on
    # this very database: the relay hands its messages over on its own session then. Any other URL, even one
    # naming the same database another way, keeps the broker's own connections.
    relay = RelayProjection(broker, same_database=settings.broker_url in (None, "", dsn))
    return [*read_models(settings), relay, WebhookFanoutProjection(broker)]


async def run_projector(settings: Settings, dsn: str, stop: asyncio.Event) -> None:
    projections = all_projections(settings, dsn)
    # Each projection holds one connection (its leader lock, on which it also applies its batches), plus
    # the listener, the shared feed's log reads, the checkpoint flusher's and one spare: a smaller pool would
    # leave a projection waiting for a connection forever. Two more for a one-off audit upgrade (its lock
    # session and the rebuild's own).
    # Asynchronous commit: a batch's commit does not wait for the WAL flush. What this pool writes (read-model
    # rows, webhook deliveries with derived ids, checkpoints) is derived from the log; PostgreSQL flushes WAL in
    # order, so a server crash can lose only the newest batches, each whole with its checkpoint, and the runner
    # applies them again, to the same rows and ids. The log itself (the API's appends) and the broker's
    # messages (its own connections) stay synchronous. Measured (ops/bench commands, A/B stacks alternating under
    # the same load): 14 flushed commits per live batch were queueing with the API's own commits.
    pool = await create_pool(dsn, settings, min_size=2, max_size=len(projections) + 6, asynchronous_commit=True)
    try:
        runner = ProjectionRunner(
            pool, EventStore(pool), projections,
            batch_size=settings.projection_batch_size, poll_interval=settings.projection_poll_interval_s,
            coalesce=settings.projection_coalesce_ms / 1000,
        )
        log.info("projector running: %s", ", ".join(p.name for p in runner.projections))
        audit = next(p for p in projections if p.name == "audit")
        # Beside the runner, not before it: the other projections need not wait for the audit replay.
        upgrade = asyncio.create_task(hash_existing_rows(pool, runner.store, audit, settings.projection_batch_size))
        try:
            await runner.run(stop)
        finally:
            upgrade.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await upgrade
    finally:
        await pool.close()
