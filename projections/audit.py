"""The audit feed: every event, under its public name, with secrets redacted, in log order."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from app.store.types import RecordedEvent
from projections.audit_names import ENVELOPE_KEYS, REDACTED_KEYS, camel, public_name
from projections.base import Tables


def public_data(data: dict[str, Any]) -> dict[str, Any]:
    return {camel(k): v for k, v in data.items() if k not in ENVELOPE_KEYS and k not in REDACTED_KEYS}


def subject_of(event: RecordedEvent) -> str:
    entity = event.stream_type.partition(":")[2].lower() or event.stream_type
    return f"{entity}:{event.stream_id}"


class AuditProjection:
    name = "audit"
    tables = ("audit_events",)

    async def apply(self, conn: asyncpg.Connection, event: RecordedEvent, t: Tables) -> None:
        d, m = event.data, event.metadata
        machine_id = event.stream_id if event.stream_type == "machines:Machine" else d.get("machine_id")
        account_id = m.get("ownerAccountId") or (
            event.stream_id if event.stream_type == "accounts:Account" else m.get("accountId")
        )
        occurred = datetime.fromisoformat(d["timestamp"]) if "timestamp" in d else event.recorded_at
        await conn.execute(
            f"INSERT INTO {t['audit_events']} (id, tx_id, position, type, occurred_at, actor, account_id,"
            " machine_id, subject, data, request_id, correlation_id, causation_id)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12, $13)",
            event.event_id, event.tx_id, event.position, public_name(event.type), occurred,
            m.get("actor"), account_id, machine_id, subject_of(event),
            msgspec.json.encode(public_data(d)).decode(),
            m.get("requestId"), m.get("correlationId"), m.get("causationId"),
        )
