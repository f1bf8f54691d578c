"""The audit feed: every event, under its public name, with secrets redacted, in log order, hash-chained."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from app.store.types import RecordedEvent
from projections.audit_chain import Signer, chain_hash, chain_key, cursor_of, sorted_json
from projections.audit_checkpoints import ChainState
from projections.audit_names import ENVELOPE_KEYS, REDACTED_KEYS, camel, kebab, public_name
from projections.audit_reader import AUDIT_CHANNEL, RECORD_LINE
from projections.base import Tables
from projections.one_statement import OneStatementBatch
from projections.rows import Columns, arrays, unnest_select

_encode = msgspec.json.Encoder().encode
_FEED: Columns = {
    "id": "uuid", "tx_id": "bigint", "position": "bigint", "type": "text", "occurred_at": "timestamptz",
    "actor": "text", "account_id": "uuid", "machine_id": "uuid", "subject": "text", "data": "jsonb",
    "request_id": "text", "correlation_id": "text", "causation_id": "text", "seq": "bigint", "prev_hash": "bytea",
    "hash": "bytea",
}


def public_data(data: dict[str, Any]) -> dict[str, Any]:
    out = {camel(k): v for k, v in data.items() if k not in ENVELOPE_KEYS and k not in REDACTED_KEYS}
    if "auth_token" in data:
        out["hasAuthToken"] = data["auth_token"] is not None  # whether one was set, never what it is
    return out


def subject_of(event: RecordedEvent) -> str:
    """`machine:<id>`, `runtime-endpoint:<id>`, `machine-agent:<id>`: the entity kebab-cased, then its stream."""
    entity = event.stream_type.partition(":")[2] or event.stream_type
    return f"{kebab(entity)}:{event.stream_id}"


def account_of(event: RecordedEvent) -> Any:
    """The account whose feed (and chain) the event belongs to: the owner, else the actor's account."""
    m = event.metadata
    return m.get("ownerAccountId") or (
        event.stream_id if event.stream_type == "accounts:Account" else m.get("accountId"))


def occurred_of(event: RecordedEvent) -> datetime:
    d = event.data
    return datetime.fromisoformat(d["timestamp"]) if "timestamp" in d else event.recorded_at


def record_of(event: RecordedEvent) -> dict[str, Any]:
    """The public record (the feed's field names) without its chain fields."""
    d, m = event.data, event.metadata
    machine_id = event.stream_id if event.stream_type == "machines:Machine" else m.get("machineId")
    account_id = account_of(event)
    occurred = occurred_of(event)
    # Encoded once, keys sorted: the jsonb column's input, and the hash's canonical form of `data` as is.
    data = msgspec.Raw(sorted_json(public_data(d)))
    return {
        "id": event.event_id, "type": public_name(event.type), "occurredAt": occurred, "actor": m.get("actor"),
        "accountId": account_id, "machineId": machine_id, "subject": subject_of(event), "data": data,
        "requestId": m.get("requestId"), "correlationId": m.get("correlationId"),
        "causationId": m.get("causationId"), "cursor": cursor_of(event.tx_id, event.position),
    }


# Rows per statement of a large batch (see apply_many); a live batch is usually smaller and goes in one.
CHUNK = 125


class AuditProjection:
    name = "audit"
    tables: tuple[str, ...] = ("audit_events", "audit_chain_heads", "audit_checkpoints")
    # The runner NOTIFYs it after each batch commits: API processes' live tails (SSE) wake and read the table.
    notify_channel = AUDIT_CHANNEL

    def __init__(self, signer: Signer | None = None, checkpoint_every: int = 1000,
                 checkpoint_interval_s: float = 60.0) -> None:
        # Without a signer (library use in tests) the chain is kept but no checkpoint is written; `mm projector`
        # and `mm projections rebuild` refuse to run without MM_AUDIT_SIGNING_KEY.
        self.signer = signer
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval_s = checkpoint_interval_s

    async def apply_many(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
        # The chain heads' read, then the writes (one statement, or one per chunk of a large batch); no ON
        # CONFLICT on the feed, so a double application fails loudly.
        if not events:
            return
        # Each event's chain, parsed once per account id in the batch (a batch is mostly a few accounts'); the
        # records themselves are made chunk by chunk below, while the previous chunk is inserted.
        keys: dict[Any, uuid.UUID] = {}
        chains = [keys.get(a) or keys.setdefault(a, chain_key(a)) for a in map(account_of, events)]
        state = ChainState(t, self.signer, self.checkpoint_every, self.checkpoint_interval_s)
        await state.load(conn, set(keys.values()), max(map(occurred_of, events)))
        # The feed's rows, each with its export line rendered from the values as inserted (the SQL the export
        # falls back to for older rows), as multi-row inserts (one executor run, not one per row as executemany
        # would), the last with the moved chain heads after it in a data-modifying CTE. A live batch is one
        # statement. A large one (catch-up, rebuild) goes in chunks, each chunk's rows built while PostgreSQL
        # inserts the previous one: the chain is Python's work, the rows PostgreSQL's, and they took turns.
        columns = ", ".join(_FEED)
        feed = (f"INSERT INTO {t['audit_events']} ({columns}, line) SELECT e.*, {RECORD_LINE}"
                f" FROM {unnest_select(_FEED)} AS e({columns})")
        inserting: asyncio.Task[str] | None = None
        try:
            for start in range(0, len(events), CHUNK):
                rows = [self._row(state, e, record_of(e), chain) for e, chain in
                        zip(events[start:start + CHUNK], chains[start:start + CHUNK], strict=True)]
                if inserting is not None:
                    await inserting  # one statement at a time on the batch's session
                if start + CHUNK < len(events):
                    inserting = asyncio.ensure_future(conn.execute(feed, *arrays(_FEED, rows)))
                    await asyncio.sleep(0)  # sent now; the next chunk is built meanwhile
                else:
                    heads_sql, heads_args = state.heads_upsert(len(_FEED) + 1)
                    assert heads_sql, "every record moves its account's chain head"
                    inserting = None
                    args = [*arrays(_FEED, rows), *heads_args]
                    # The feed's rows and the moved heads never read each other (the heads are parameters).
                    if not (isinstance(conn, OneStatementBatch) and conn.independent([feed, heads_sql], args)):
                        await conn.execute(f"WITH feed AS ({feed}) {heads_sql}", *args)
        finally:
            if inserting is not None:  # building a chunk failed: let the statement in flight finish first
                with contextlib.suppress(Exception):
                    await inserting
        await state.save_checkpoints(conn)

    @staticmethod
    def _row(state: ChainState, e: RecordedEvent, r: dict[str, Any], chain: uuid.UUID) -> tuple[Any, ...]:
        """The record's feed row, chained after its account's head (which moves on to it)."""
        head = state.head(chain)
        r["seq"] = head.seq + 1
        digest = chain_hash(head.hash, r)
        row = (e.event_id, e.tx_id, e.position, r["type"], r["occurredAt"], r["actor"], r["accountId"],
               r["machineId"], r["subject"], bytes(r["data"]).decode(), r["requestId"], r["correlationId"],
               r["causationId"], r["seq"], head.hash, digest)
        state.advance(head, r, digest, e.tx_id, e.position)
        return row
