"""Chain heads and signed checkpoints of the audit projection, decided per event so rebuilds reproduce them.

A checkpoint is signed after every `every` records of an account, and whenever an account's oldest unsigned
record is `interval_s` older than the event being applied. Both triggers read the log (counts, occurredAt),
never the wall clock or batch boundaries, so a replay with other batch sizes signs the very same checkpoints.
"""

from __future__ import annotations

import heapq
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from projections.audit_chain import GENESIS, NO_ACCOUNT, Checkpoint, Signer, cursor_of, utc_text
from projections.base import Tables
from projections.one_statement import OneStatementBatch
from projections.rows import Columns, unnest_select


@dataclass
class Head:
    account_key: uuid.UUID
    seq: int = 0
    hash: bytes = GENESIS
    tx_id: int = 0
    position: int = 0
    checkpointed_seq: int = 0
    pending_since: datetime | None = None


_HEAD: Columns = {"account_key": "uuid", "seq": "bigint", "hash": "bytea", "tx_id": "bigint", "position": "bigint",
                  "checkpointed_seq": "bigint", "pending_since": "timestamptz"}


class ChainState:
    """The heads a batch touches, advanced in memory event by event, then written back with the feed's rows."""

    def __init__(self, t: Tables, signer: Signer | None, every: int, interval_s: float) -> None:
        self.t, self.signer, self.every = t, signer, every
        self.interval = timedelta(seconds=interval_s)
        self.heads: dict[uuid.UUID, Head] = {}
        self._due: list[tuple[datetime, uuid.UUID]] = []  # (pending_since, account): a min-heap, lazily pruned
        self._dirty: set[uuid.UUID] = set()
        self.checkpoints: list[tuple[Any, ...]] = []

    async def load(self, conn: asyncpg.Connection, keys: set[uuid.UUID], latest: datetime) -> None:
        """The batch's accounts, plus every account whose unsigned records fall due before `latest`."""
        # A live batch reads the heads before its transaction: only this projection writes them, and a batch
        # committed meanwhile moved the checkpoint too, so this one's compare-and-set fails (OneStatementBatch).
        read = conn.prefetch if isinstance(conn, OneStatementBatch) else conn.fetch
        rows = await read(
            "SELECT account_key, seq, hash, tx_id, position, checkpointed_seq, pending_since"
            f" FROM {self.t['audit_chain_heads']}"
            " WHERE account_key = ANY($1::uuid[]) OR pending_since <= $2",
            list(keys), latest - self.interval,
        )
        for r in rows:
            head = Head(**dict(r))
            self.heads[head.account_key] = head
            if head.pending_since is not None:
                heapq.heappush(self._due, (head.pending_since, head.account_key))

    def head(self, key: uuid.UUID) -> Head:
        if key not in self.heads:
            self.heads[key] = Head(account_key=key)
        return self.heads[key]

    def advance(self, head: Head, record: dict[str, Any], digest: bytes, tx_id: int, position: int) -> None:
        at: datetime = record["occurredAt"]
        head.seq, head.hash, head.tx_id, head.position = record["seq"], digest, tx_id, position
        self._dirty.add(head.account_key)
        if head.pending_since is None:
            head.pending_since = at
            heapq.heappush(self._due, (at, head.account_key))
        if head.seq - head.checkpointed_seq >= self.every:
            self._checkpoint(head, at)
        while self._due and self._due[0][0] <= at - self.interval:
            since, key = heapq.heappop(self._due)
            due = self.heads[key]
            if due.pending_since == since:  # else a stale entry: signed since, or pending anew
                self._checkpoint(due, at)

    def _checkpoint(self, head: Head, at: datetime) -> None:
        head.checkpointed_seq, head.pending_since = head.seq, None
        self._dirty.add(head.account_key)
        if self.signer is None:
            return
        signed = self.signer.sign(Checkpoint(
            account_id=None if head.account_key == NO_ACCOUNT else head.account_key, count=head.seq,
            last_cursor=cursor_of(head.tx_id, head.position), last_hash=head.hash.hex(), at=utc_text(at),
            key_id=self.signer.key_id,
        ))
        self.checkpoints.append((head.account_key, head.seq, head.tx_id, head.position, head.hash, at,
                                 signed.key_id, signed.signature))

    def heads_upsert(self, first: int) -> tuple[str, list[list[Any]]]:
        """The upsert of every head the batch moved, as SQL with parameters numbered from `first`, and their
        arguments: one multi-row statement (executemany would run the executor once per account touched),
        which the projection runs together with its feed rows. ("", []) if no head moved."""
        if not self._dirty:
            return "", []
        heads = [self.heads[k] for k in sorted(self._dirty)]
        sql = (f"INSERT INTO {self.t['audit_chain_heads']} AS h ({', '.join(_HEAD)})"
               f" SELECT * FROM {unnest_select(_HEAD, first)}"
               " ON CONFLICT (account_key) DO UPDATE SET "
               + ", ".join(f"{c} = EXCLUDED.{c}" for c in _HEAD if c != "account_key"))
        return sql, [[getattr(h, c) for h in heads] for c in _HEAD]

    async def save_checkpoints(self, conn: asyncpg.Connection) -> None:
        """The checkpoints signed in this batch (a few per thousand records)."""
        if self.checkpoints:
            await conn.executemany(
                f"INSERT INTO {self.t['audit_checkpoints']} (account_key, seq, tx_id, position, last_hash, at,"
                " key_id, signature) VALUES ($1, $2, $3, $4, $5, $6, $7, decode($8, 'base64'))",
                self.checkpoints,
            )
