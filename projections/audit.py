"""The audit feed: every event, under its public name, with secrets redacted, in log order."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from app.store.types import RecordedEvent
from projections.audit_names import ENVELOPE_KEYS, REDACTED_KEYS, camel, kebab, public_name
from projections.base import Tables

_encode = msgspec.json.Encoder().encode


def public_data(data: dict[str, Any]) -> dict[str, Any]:
    out = {camel(k): v for k, v in data.items() if k not in ENVELOPE_KEYS and k not in REDACTED_KEYS}
    if "auth_token" in data:
        out["hasAuthToken"] = data["auth_token"] is not None  # whether one was set, never what it is
    return out


def subject_of(event: RecordedEvent) -> str:
    """`machine:<id>`, `runtime-endpoint:<id>`, `machine-agent:<id>`: the entity kebab-cased, then its stream."""
    entity = event.stream_type.partition(":")[2] or event.stream_type
    return f"{kebab(entity)}:{event.stream_id}"


def _row(event: RecordedEvent) -> tuple[Any, ...]:
    d, m = event.data, event.metadata
    machine_id = event.stream_id if event.stream_type == "machines:Machine" else m.get("machineId")
    account_id = m.get("ownerAccountId") or (
        event.stream_id if event.stream_type == "accounts:Account" else m.get("accountId")
    )
    occurred = datetime.fromisoformat(d["timestamp"]) if "timestamp" in d else event.recorded_at
    return (
        event.event_id, event.tx_id, event.position, public_name(event.type), occurred,
        m.get("actor"), account_id, machine_id, subject_of(event), _encode(public_data(d)).decode(),
        m.get("requestId"), m.get("correlationId"), m.get("causationId"),
    )


class AuditProjection:
    name = "audit"
    tables: tuple[str, ...] = ("audit_events",)

    async def apply_many(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
        # One pipelined executemany per batch; no ON CONFLICT, so a double application fails loudly.
        if not events:
            return
        await conn.executemany(
            f"INSERT INTO {t['audit_events']} (id, tx_id, position, type, occurred_at, actor, account_id,"
            " machine_id, subject, data, request_id, correlation_id, causation_id)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12, $13)",
            [_row(e) for e in events],
        )
