"""This process's copies of long streams' aggregates, so a load reads only what was appended since.

An agent's and its endpoint's streams grow by an event per heartbeat; a load of either read the latest snapshot
and replayed up to SNAPSHOT_EVERY events after it (about half of that on average), every heartbeat. With a copy
of the aggregate as this process last loaded or saved it, a load reads the events from the copy's version on
(one row, as a rule) instead.

Only aggregates that take snapshots (SNAPSHOT_EVERY) are kept: short streams gain little. A copy is pickled bytes,
never a live object: each load unpickles its own, so no two callers share state, and a decision that fails after
mutating its aggregate leaves the copy as it was. Freshness never rests on the copy: the load always reads the
stream from the copy's version on and applies what follows, so another process's appends (a revoked agent, a
deleted endpoint) are seen as before. That read includes the copy's own last event, whose id must match: a stream
that is not the one the copy was taken from (a database restored under a running process) is loaded whole.
"""

from __future__ import annotations

import logging
import pickle
import uuid
from collections import OrderedDict
from typing import NamedTuple

from eventsourcing.domain import Aggregate

from app.store.snapshots import snapshot_every

log = logging.getLogger("mm.store")

# A copy larger than this (a capability graph with very large node data) is not kept: memory, and the pickling
# of every save, would grow with it. And all copies together stay under the budget, however many entries.
MAX_COPY_BYTES = 256 * 1024
MAX_TOTAL_BYTES = 64 * 1024 * 1024


class Copy(NamedTuple):
    version: int
    event_id: uuid.UUID  # the stream's event at `version`, as this process saw it
    blob: bytes


class AggregateCache:
    def __init__(self, entries: int) -> None:
        self.entries = entries  # 0: nothing kept
        self._copies: OrderedDict[uuid.UUID, tuple[type[Aggregate], Copy]] = OrderedDict()
        self.bytes = 0  # of every copy's blob
        self.hits = self.misses = 0  # tests and benchmarks count them

    def get(self, cls: type[Aggregate], stream_id: uuid.UUID) -> Copy | None:
        found = self._copies.get(stream_id)
        if found is None or found[0] is not cls:
            if self.entries and snapshot_every(cls):
                self.misses += 1
            return None
        self._copies.move_to_end(stream_id)
        return found[1]

    def restore(self, copy: Copy) -> Aggregate:
        aggregate: Aggregate = pickle.loads(copy.blob)  # bytes this process pickled itself
        self.hits += 1
        return aggregate

    def put(self, aggregate: Aggregate, event_id: uuid.UUID) -> None:
        """Keep a copy of `aggregate`, whose stream's latest event (at aggregate.version) is `event_id`."""
        cls = type(aggregate)
        if not self.entries or not snapshot_every(cls):
            return
        self.drop(aggregate.id)  # the older copy goes, whether or not this one can be kept
        try:
            blob = pickle.dumps(aggregate, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            log.debug("no cached copy of %s: %s", cls.__qualname__, exc)
            return
        if len(blob) > MAX_COPY_BYTES:
            return
        self._copies[aggregate.id] = (cls, Copy(aggregate.version, event_id, blob))
        self.bytes += len(blob)
        while len(self._copies) > self.entries or self.bytes > MAX_TOTAL_BYTES:
            _, (_, oldest) = self._copies.popitem(last=False)
            self.bytes -= len(oldest.blob)

    def drop(self, stream_id: uuid.UUID) -> None:
        found = self._copies.pop(stream_id, None)
        if found is not None:
            self.bytes -= len(found[1].blob)

    def __len__(self) -> int:
        return len(self._copies)
