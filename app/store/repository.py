"""Loads aggregates from their streams and saves their pending events with command metadata."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

from eventsourcing.domain import Aggregate

from app.store.aggregate_cache import AggregateCache, Copy
from app.store.event_store import EventStore
from app.store.loads import StreamLoad, load_streams
from app.store.mapper import event_type, rebuild, to_data
from app.store.snapshots import SnapshotStore, restore, schema_version, snapshot_every
from app.store.types import AppendResult, NewEvent, RecordedEvent
from domain.shared.context import CommandContext
from domain.shared.errors import NotFound
from domain.shared.ids import derived_id, new_id

A = TypeVar("A", bound=Aggregate)


def stream_type_of(cls: type[Aggregate]) -> str:
    return str(getattr(cls, "TOPIC", cls.__qualname__))


class Repository:
    def __init__(self, store: EventStore, cache_entries: int = 0) -> None:
        """`cache_entries`: how many long streams' aggregates to keep a copy of (app/store/aggregate_cache.py)."""
        self.store = store
        self.snapshots = SnapshotStore(store.pool)
        self.cache = AggregateCache(cache_entries)

    async def get(self, cls: type[A], aggregate_id: uuid.UUID, *, what: str = "resource",
                  version: int | None = None) -> A:
        """The aggregate as it stands, or as it stood right after `version` (time travel: the same events
        and the same evolve steps, stopped early; a snapshot is used only if it is at or below `version`)."""
        if version is None:
            (found,) = await self.get_many([(cls, aggregate_id)])
            if found is None:
                raise NotFound(f"{what} {aggregate_id} not found")
            assert isinstance(found, cls)
            return found
        stream_type = stream_type_of(cls)
        start: Aggregate | None = None
        if snapshot_every(cls):
            start = await self.snapshots.load(cls, aggregate_id, stream_type, at_most=version)
        events = await self.store.load(aggregate_id, after_version=start.version if start else 0, to_version=version)
        if start is None and (not events or events[0].stream_type != stream_type):
            raise NotFound(f"{what} {aggregate_id} not found")
        aggregate = rebuild(events, start)
        assert isinstance(aggregate, cls)
        if version is not None and aggregate.version != version:
            raise NotFound(f"{what} {aggregate_id} has no version {version}")
        return aggregate

    async def get_many(self, wanted: Sequence[tuple[type[Aggregate], uuid.UUID]],
                       events_of: dict[uuid.UUID, list[RecordedEvent]] | None = None) -> list[Aggregate | None]:
        """Several aggregates as they stand, each from its snapshot and the events after it, in one statement;
        None for a stream that does not exist (or holds another type). `events_of`: filled with each stream's
        events as read (after its snapshot, if any), for a caller that shows them (an order's timeline)."""
        # A copy is used only when the caller wants the aggregate, not the events it was read from.
        copies = {} if events_of is not None else {
            aggregate_id: copy for cls, aggregate_id in wanted if (copy := self.cache.get(cls, aggregate_id))}
        loads = await load_streams(self.store.pool, [
            (aggregate_id, stream_type_of(cls), schema_version(cls) if snapshot_every(cls) else None,
             copies[aggregate_id].version if aggregate_id in copies else None)
            for cls, aggregate_id in wanted])
        out: list[Aggregate | None] = []
        for cls, aggregate_id in wanted:
            load = loads[aggregate_id]
            if aggregate_id in copies:
                found = self._from_copy(copies[aggregate_id], load)
                if found is None:  # not the stream the copy was taken from: forget it and load the stream whole
                    self.cache.drop(aggregate_id)
                    (found,) = await self.get_many([(cls, aggregate_id)])
                out.append(found)
                continue
            if events_of is not None:
                events_of[aggregate_id] = load.events
            start = None if load.snapshot is None else restore(
                cls, aggregate_id, load.snapshot["version"], load.snapshot["data"], load.snapshot["recorded_at"])
            if start is None and (not load.events or load.events[0].stream_type != stream_type_of(cls)):
                out.append(None)
                continue
            aggregate = rebuild(load.events, start)
            assert isinstance(aggregate, cls)
            if load.events:  # (one loaded from its snapshot alone: its last event's id is not at hand)
                self.cache.put(aggregate, load.events[-1].event_id)
            out.append(aggregate)
        return out

    def _from_copy(self, copy: Copy, load: StreamLoad) -> Aggregate | None:
        """The copy brought up to date with the events read after it; None if the stream's event at the copy's
        version is missing or another one (then the copy is of no use)."""
        events = load.events
        at = next((k for k, e in enumerate(events) if e.version == copy.version), None)
        if at is None or events[at].event_id != copy.event_id:
            return None
        aggregate = rebuild(events[at + 1:], self.cache.restore(copy))
        assert aggregate is not None
        if at + 1 < len(events):
            self.cache.put(aggregate, events[-1].event_id)
        return aggregate

    async def save(self, aggregate: Aggregate, ctx: CommandContext) -> AppendResult | None:
        """Append what the aggregate recorded; None when the decision recorded nothing."""
        return await self.save_all([aggregate], ctx)

    async def save_all(self, aggregates: Sequence[Aggregate], ctx: CommandContext) -> AppendResult | None:
        """Append what several aggregates recorded in one transaction: all of it or none of it.

        Every stream's versions are checked, so a concurrent change to any of them is a conflict.
        """
        pending = [(aggregate, aggregate.collect_events()) for aggregate in aggregates]
        new = [
            NewEvent(
                event_id=_event_id(ctx, aggregate.id, i),
                stream_id=aggregate.id,
                stream_type=stream_type_of(type(aggregate)),
                version=event.originator_version,
                type=event_type(event),
                data=to_data(event),
                metadata=_metadata(aggregate, ctx),
            )
            for aggregate, events in pending
            for i, event in enumerate(events)
        ]
        if not new:
            return None
        result = await self.store.append(new)
        if not result.duplicate:
            last = {e.stream_id: e.event_id for e in new}  # each stream's newest event (`new` is in version order)
            for aggregate, events in pending:
                every = snapshot_every(type(aggregate))
                if every and events and aggregate.version // every > (aggregate.version - len(events)) // every:
                    await self.snapshots.save(aggregate, stream_type_of(type(aggregate)))
                if events:
                    self.cache.put(aggregate, last[aggregate.id])
        return result

    async def recorded(self, ctx: CommandContext, stream_id: uuid.UUID) -> AppendResult | None:
        """The append this very request (its Idempotency-Key) already made on `stream_id`, or None.

        A retry whose first attempt committed but whose answer was lost (the connection dropped after the
        COMMIT, or the answer could not be kept for replay) decides again on the state its own first attempt
        left: a transition that is no longer allowed then (confirm a confirmed order, withdraw what is already
        gone) would refuse the client's own, successful, command. The services ask here before refusing."""
        if not ctx.idempotency_key:
            return None
        last = await self.store.command_of(_event_id(ctx, stream_id, 0))
        return None if last is None else AppendResult(last=last, duplicate=True)

    async def recorded_event(self, ctx: CommandContext, stream_id: uuid.UUID) -> RecordedEvent | None:
        """The first event this very request (its Idempotency-Key) recorded on `stream_id`, or None: what a retry
        shows when its answer carries something only the recorded command knows (a secret it generated)."""
        return await self.store.event(_event_id(ctx, stream_id, 0)) if ctx.idempotency_key else None


def _metadata(aggregate: Aggregate, ctx: CommandContext) -> dict[str, Any]:
    metadata: dict[str, Any] = {k: v for k, v in ctx.metadata().items() if v is not None}
    owner = getattr(aggregate, "account_id", None)
    if owner is not None:
        # The owning account, which scopes the audit feed (the actor may be an admin).
        metadata["ownerAccountId"] = str(owner)
    machine = getattr(aggregate, "machine_id", None)
    if machine is not None:
        # Machine-scoped streams (endpoints, agents, graphs) are filed under their machine in the audit feed.
        metadata["machineId"] = str(machine)
    return metadata


def _event_id(ctx: CommandContext, stream_id: uuid.UUID, index: int) -> uuid.UUID:
    # A retried request (same idempotency key) or a redelivered message (same causation id) yields
    # the same event ids, which the store refuses to record twice.
    if ctx.idempotency_key:
        return derived_id("idem", ctx.account_id, ctx.idempotency_key, stream_id, index)
    if ctx.causation_id:
        return derived_id("cause", ctx.causation_id, stream_id, index)
    return new_id()
