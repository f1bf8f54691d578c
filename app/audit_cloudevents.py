"""The CloudEvents 1.0 structured form of an audit record: one renderer for the export and for webhook bodies."""

from __future__ import annotations

import base64
from typing import Any

import asyncpg
import msgspec

SOURCE = "urn:machine-markets:audit"
CONTENT_TYPE = "application/cloudevents+json"  # one structured event (a webhook body)
# The columns `cloudevent` reads (projections.audit_reader.export_batch selects them, among others).
COLUMNS = ("id, tx_id, position, type, occurred_at, actor, account_id, machine_id, subject, data::text AS data,"
           " request_id, correlation_id, causation_id, seq, prev_hash, hash")


def feed_cursor(tx_id: int, position: int) -> str:
    """The feed's cursor, as app.api.pagination.encode_cursor spells [tx_id, position] (kept free of the
    HTTP layer, which the workers must not import)."""
    return base64.urlsafe_b64encode(b"[%d,%d]" % (tx_id, position)).rstrip(b"=").decode()


def cloudevent(r: asyncpg.Record) -> dict[str, Any]:
    """The record as a CloudEvents 1.0 structured event, ready for msgspec: extension attributes (lower-case
    alphanumerics, per the spec) carry the feed cursor and the record's place in its hash chain; the feed's own
    fields and `data` (passed through as stored) go in `data`. Absent attributes are left out, not null."""
    event = {
        "specversion": "1.0", "id": str(r["id"]), "source": SOURCE, "type": r["type"], "time": r["occurred_at"],
        "subject": r["subject"], "datacontenttype": "application/json",
        "cursor": feed_cursor(r["tx_id"], r["position"]), "seq": r["seq"],
        "prevhash": r["prev_hash"].hex() if r["prev_hash"] is not None else None,
        "hash": r["hash"].hex() if r["hash"] is not None else None,
        "data": {"actor": r["actor"], "accountId": r["account_id"], "machineId": r["machine_id"],
                 "data": msgspec.Raw(r["data"].encode()), "requestId": r["request_id"],
                 "correlationId": r["correlation_id"], "causationId": r["causation_id"]},
    }
    return {k: v for k, v in event.items() if v is not None}
