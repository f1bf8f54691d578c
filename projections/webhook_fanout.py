"""Webhook fan-out: decides, in log order, which endpoint gets which audit record, and wakes their drainers.

Why here: a projection writes the pending deliveries in the SAME transaction as its checkpoint, so each
(endpoint, event) pair is decided exactly once however often the runner restarts; the row's unique key
(endpoint, event) then makes every later redelivery of a message a no-op. Subscriptions are folded from the
endpoints' own events in this same pass, so "does this endpoint get this event" depends only on the log's
order (an endpoint gets what was recorded after it was registered, until it is disabled or deleted), never on
another projection's lag. The drain messages it sends are wake-ups only (at least once, ids derived from the
batch): the deliveries table, not the broker, is the work list. Like the relay, it is a hand-off, not a read
model: it is not rebuilt (a replay would re-send history).
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import dramatiq

from app.store.types import LogPosition, RecordedEvent
from domain.shared.ids import derived_id
from domain.webhooks.rules import matches
from projections.audit import account_of, record_of
from projections.base import AsksWrites, Tables

P = "webhooks:WebhookEndpoint."
QUEUE, DRAIN_ACTOR = "webhooks", "drain_webhook_endpoint"


class Subscription:
    def __init__(self, account_id: uuid.UUID, types: list[str], enabled: bool) -> None:
        self.account_id, self.types, self.enabled = account_id, types, enabled


class WebhookFanoutProjection(AsksWrites):
    name = "webhook_fanout"
    tables: tuple[str, ...] = ()  # a hand-off like the relay: never rebuilt

    def __init__(self, broker: dramatiq.Broker | None = None) -> None:
        self.broker = broker  # None: decide deliveries only (tests drain them directly)
        # The accounts with an enabled subscription as of checkpoint `_as_of` (see writes).
        self._enabled: frozenset[uuid.UUID] = frozenset()
        self._as_of: LogPosition | None = None

    async def apply_many(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
        accounts = {a for e in events if (a := _account(e)) is not None}
        subs = await _load(conn, accounts)
        rows: list[tuple[Any, ...]] = []
        changed: dict[uuid.UUID, Subscription | None] = {}
        for event in events:
            if event.type.startswith(P):
                _fold(subs, changed, event)
            account = _account(event)
            if account is None:
                continue
            name: str | None = None
            for endpoint_id, sub in subs.items():
                if sub is None or sub.account_id != account or not sub.enabled:
                    continue
                name = name or str(record_of(event)["type"])
                if matches(sub.types, name):
                    rows.append((derived_id("webhook-delivery", endpoint_id, event.event_id), endpoint_id,
                                 event.event_id, account, name, event.tx_id, event.position))
        await _write(conn, changed, rows)
        woken = sorted({r[1] for r in rows}, key=str)
        if woken and self.broker is not None:
            await asyncio.to_thread(self._wake, woken, events[-1])

    async def writes(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables,
                     at: LogPosition) -> bool:
        """Whether the batch has anything to write: a subscription change, or an event of an account with an
        enabled subscription. Most batches have neither, and the runner then moves only the checkpoint instead
        of running a transaction (see projections.base.writes: this projection alone writes these tables).

        The subscriptions are a function of the log up to this projection's checkpoint (only its batches write
        them, in log order), so the accounts read at one checkpoint hold at every later one reached through
        batches without a subscription change, whoever applied them. They are read again only when the batch
        starts anywhere else (after a batch that changed them, another leader's batches, a restart): not a
        round trip per batch."""
        if any(e.type.startswith(P) for e in events):
            self._as_of = None  # this batch changes them: read them again after it
            return True
        accounts = {a for e in events if (a := _account(e)) is not None}
        if not accounts:
            return False
        if self._as_of != at:
            rows = await conn.fetch("SELECT DISTINCT account_id FROM webhook_subscriptions WHERE enabled")
            self._enabled = frozenset(r["account_id"] for r in rows)
        if self._enabled.isdisjoint(accounts):
            self._as_of = events[-1].log_position  # nothing here changes them
            return False
        self._as_of = None
        return True

    def _wake(self, endpoints: list[uuid.UUID], last: RecordedEvent) -> None:
        """Sent before this batch commits (so a crash cannot lose them), the wake-ups may be taken before the
        rows they announce are visible: each carries the batch's last position, and a drainer that finds
        nothing pending waits until this projection's checkpoint has passed it (workers/webhooks.py)."""
        assert self.broker is not None
        try:  # where the drain actor listens, if this process declared it (a test may move it to its own queue)
            queue = self.broker.get_actor(DRAIN_ACTOR).queue_name
        except dramatiq.errors.ActorNotFound:
            queue = QUEUE
        outgoing: list[tuple[dramatiq.Message[Any], int | None]] = [
            (dramatiq.Message(queue_name=queue, actor_name=DRAIN_ACTOR, args=(), kwargs={"endpoint_id": str(e),
                              "fanned_out_to": [last.tx_id, last.position]},
                              options={}, message_id=str(derived_id("webhook-wake", e, last.event_id))), None)
            for e in endpoints]
        many = getattr(self.broker, "enqueue_many", None)
        if many is not None:
            many(outgoing)
            return
        for message, delay in outgoing:
            self.broker.enqueue(message, delay=delay)


def _account(event: RecordedEvent) -> uuid.UUID | None:
    raw = account_of(event)  # the account whose audit feed (and so whose subscriptions) the event belongs to
    if not raw:
        return None
    return raw if isinstance(raw, uuid.UUID) else _account_id(str(raw))


@functools.lru_cache(maxsize=10_000)
def _account_id(raw: str) -> uuid.UUID:
    return uuid.UUID(raw)  # parsed once: a few accounts make most of the log


def _fold(subs: dict[uuid.UUID, Subscription | None], changed: dict[uuid.UUID, Subscription | None],
          event: RecordedEvent) -> None:
    kind, d, sid = event.type[len(P):], event.data, event.stream_id
    current = subs.get(sid)
    if kind == "Registered":
        subs[sid] = Subscription(uuid.UUID(d["account_id"]), list(d["types"]), bool(d["enabled"]))
    elif kind == "Revised" and current is not None:
        current.types, current.enabled = list(d["types"]), bool(d["enabled"])
    elif kind == "DisabledForFailures" and current is not None:
        current.enabled = False
    elif kind == "Deleted":
        subs[sid] = None
    else:
        return
    changed[sid] = subs[sid]


async def _load(conn: asyncpg.Connection, accounts: set[uuid.UUID]) -> dict[uuid.UUID, Subscription | None]:
    if not accounts:
        return {}
    rows = await conn.fetch("SELECT endpoint_id, account_id, types, enabled FROM webhook_subscriptions"
                            " WHERE account_id = ANY($1::uuid[])", list(accounts))
    return {r["endpoint_id"]: Subscription(r["account_id"], list(r["types"]), r["enabled"]) for r in rows}


async def _write(conn: asyncpg.Connection, changed: dict[uuid.UUID, Subscription | None],
                 rows: list[tuple[Any, ...]]) -> None:
    gone = [e for e, s in changed.items() if s is None]
    kept = [(e, s.account_id, s.types, s.enabled) for e, s in changed.items() if s is not None]
    if gone:
        await conn.execute("DELETE FROM webhook_subscriptions WHERE endpoint_id = ANY($1::uuid[])", gone)
    if kept:
        await conn.executemany(
            "INSERT INTO webhook_subscriptions (endpoint_id, account_id, types, enabled) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (endpoint_id) DO UPDATE SET types = EXCLUDED.types, enabled = EXCLUDED.enabled", kept)
    if rows:
        await conn.executemany(
            "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, account_id, type, tx_id, position)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (endpoint_id, event_id) DO NOTHING", rows)
