"""Wire formats of audit exports: NDJSON, CSV (fixed header) and CloudEvents 1.0 structured records as NDJSON.

A batch of rows (projections.audit_reader.export_batch: records with the checkpoint ending at each) renders
to one chunk of bytes. Each record carries its cursor; a checkpoint follows the record it ends at.
"""

from __future__ import annotations

import base64
import csv
import io
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

import asyncpg
import msgspec

from app.api.pagination import encode_cursor
from app.api.schema_types import UtcTime
from app.audit_cloudevents import SOURCE, cloudevent
from projections.audit_chain import NO_ACCOUNT, utc_text

ExportFormat = Literal["ndjson", "csv", "cloudevents"]
MEDIA_TYPES: dict[str, str] = {
    "ndjson": "application/x-ndjson",
    "csv": "text/csv",
    "cloudevents": "application/cloudevents+x-ndjson",
}
EXTENSIONS = {"ndjson": "ndjson", "csv": "csv", "cloudevents": "ndjson"}
CHECKPOINT_TYPE = "audit.checkpoint"
CSV_HEADER = ("kind", "cursor", "id", "type", "occurredAt", "actor", "accountId", "machineId", "subject",
              "requestId", "correlationId", "causationId", "seq", "prevHash", "hash", "data")


class ExportRecord(msgspec.Struct, rename="camel", frozen=True):
    """An NDJSON export line for a record: the feed's record, data passed through as stored."""

    id: uuid.UUID
    type: str
    occurred_at: datetime
    actor: str | None
    account_id: uuid.UUID | None
    machine_id: uuid.UUID | None
    subject: str
    data: msgspec.Raw
    request_id: str | None
    correlation_id: str | None
    causation_id: str | None
    cursor: str
    seq: int | None
    prev_hash: str | None
    hash: str | None


class CheckpointLine(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """A signed checkpoint: the account's chain had `count` records, the last at `lastCursor` with `lastHash`.

    Verify `signature` (Ed25519, base64) with GET /v1/audit-events/signing-key, as `mm audit verify` does."""

    kind: Literal["checkpoint"] = "checkpoint"
    account_id: uuid.UUID | None
    count: int
    last_cursor: str
    last_hash: str
    at: UtcTime
    key_id: str
    signature: str


def _hex(value: bytes | None) -> str | None:
    return value.hex() if value is not None else None


def record_of(r: asyncpg.Record) -> ExportRecord:
    return ExportRecord(r["id"], r["type"], r["occurred_at"], r["actor"], r["account_id"], r["machine_id"],
                        r["subject"], msgspec.Raw(r["data"].encode()), r["request_id"], r["correlation_id"],
                        r["causation_id"], encode_cursor(r["tx_id"], r["position"]), r["seq"],
                        _hex(r["prev_hash"]), _hex(r["hash"]))


def checkpoint_of(r: asyncpg.Record) -> CheckpointLine | None:
    if r["cp_seq"] is None:
        return None
    return CheckpointLine(account_id=r["account_id"], count=r["cp_seq"], last_cursor=encode_cursor(r["tx_id"],
                          r["position"]), last_hash=r["hash"].hex(), at=r["cp_at"], key_id=r["cp_key_id"],
                          signature=base64.b64encode(r["cp_signature"]).decode())


_encoder = msgspec.json.Encoder()


def ndjson(rows: list[asyncpg.Record]) -> bytes:
    buf = bytearray()
    for r in rows:
        _encoder.encode_into(record_of(r), buf, -1)
        buf += b"\n"
        if (cp := checkpoint_of(r)) is not None:
            _encoder.encode_into(cp, buf, -1)
            buf += b"\n"
    return bytes(buf)


def ndjson_lines(rows: list[asyncpg.Record]) -> bytes:
    """NDJSON from lines PostgreSQL rendered (projections.audit_reader.export_lines): the fast path."""
    return b"".join([r["lines"] for r in rows])


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def csv_rows(rows: list[asyncpg.Record]) -> bytes:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    for r in rows:
        rec = record_of(r)
        w.writerow(["event", rec.cursor, rec.id, rec.type, utc_text(rec.occurred_at), _text(rec.actor),
                    _text(rec.account_id), _text(rec.machine_id), rec.subject, _text(rec.request_id),
                    _text(rec.correlation_id), _text(rec.causation_id), _text(rec.seq), _text(rec.prev_hash),
                    _text(rec.hash), r["data"]])
        if (cp := checkpoint_of(r)) is not None:
            w.writerow(["checkpoint", cp.last_cursor, "", CHECKPOINT_TYPE, utc_text(cp.at), "",
                        _text(cp.account_id), "", "", "", "", "", cp.count, "", cp.last_hash,
                        msgspec.json.encode({"keyId": cp.key_id, "signature": cp.signature}).decode()])
    return out.getvalue().encode()


def csv_header() -> bytes:
    return (",".join(CSV_HEADER) + "\n").encode()


def cloudevents(rows: list[asyncpg.Record]) -> bytes:
    buf = bytearray()
    for r in rows:
        _encoder.encode_into(cloudevent(r), buf, -1)
        buf += b"\n"
        if (cp := checkpoint_of(r)) is not None:
            account = cp.account_id or NO_ACCOUNT
            _encoder.encode_into({
                "specversion": "1.0", "id": f"checkpoint:{account}:{cp.count}", "source": SOURCE,
                "type": CHECKPOINT_TYPE, "time": cp.at, "subject": f"account:{account}",
                "datacontenttype": "application/json", "data": cp,
            }, buf, -1)
            buf += b"\n"
    return bytes(buf)


RENDER: dict[str, Callable[[list[asyncpg.Record]], bytes]] = {
    "ndjson": ndjson_lines, "csv": csv_rows, "cloudevents": cloudevents,
}
