"""Queries over the audit feed: filtered, account-scoped, in log order with a keyset cursor."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

# NOTIFYed (by the runner, after each audit batch commits) to wake live tails, which then read the table.
AUDIT_CHANNEL = "mm_audit"


class AuditFilter(msgspec.Struct, frozen=True, kw_only=True):
    """What the feed, its export and its live stream select; account_id None means every account (admins)."""

    account_id: uuid.UUID | None = None
    types: list[str] | None = None
    machine_id: uuid.UUID | None = None
    subject: str | None = None
    actor: str | None = None
    correlation_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def where(self, after: tuple[int, int] | None, upto: tuple[int, int] | None = None) -> tuple[str, list[Any]]:
        """A WHERE clause naming only the filters in use, so the planner sees a plain keyset range scan."""
        clauses, args = [], []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        for column, value in (("account_id", self.account_id), ("machine_id", self.machine_id),
                              ("subject", self.subject), ("actor", self.actor),
                              ("correlation_id", self.correlation_id)):
            if value is not None:
                clauses.append(f"e.{column} = {arg(value)}")
        if self.types is not None:
            clauses.append(f"e.type = ANY({arg(self.types)}::text[])")
        if self.since is not None:
            clauses.append(f"e.occurred_at >= {arg(self.since)}")
        if self.until is not None:
            clauses.append(f"e.occurred_at < {arg(self.until)}")
        if after is not None:
            clauses.append(f"(e.tx_id, e.position) > ({arg(after[0])}::bigint, {arg(after[1])}::bigint)")
        if upto is not None:
            clauses.append(f"(e.tx_id, e.position) <= ({arg(upto[0])}::bigint, {arg(upto[1])}::bigint)")
        return " AND ".join(clauses) or "true", args


_COLUMNS = (
    "e.id, e.tx_id, e.position, e.type, e.occurred_at, e.actor, e.account_id, e.machine_id, e.subject,"
    " e.data::text AS data, e.request_id, e.correlation_id, e.causation_id, e.seq, e.prev_hash, e.hash"
)


def _row(r: asyncpg.Record) -> dict[str, Any]:
    d = dict(r)
    d["data"] = msgspec.json.decode(d["data"])
    return d


async def list_audit_events(
    conn: asyncpg.Pool | asyncpg.Connection, filt: AuditFilter, after: tuple[int, int] | None, limit: int,
) -> list[dict[str, Any]]:
    where, args = filt.where(after)
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM audit_events e WHERE {where} ORDER BY e.tx_id, e.position"
        f" LIMIT {int(limit)}", *args,
    )
    return [_row(r) for r in rows]


async def export_batch(
    conn: asyncpg.Pool | asyncpg.Connection, filt: AuditFilter, after: tuple[int, int] | None,
    upto: tuple[int, int], limit: int,
) -> list[asyncpg.Record]:
    """One keyset batch for an export: raw records (data as JSON text) with the checkpoint ending at each."""
    where, args = filt.where(after, upto)
    return await conn.fetch(
        f"SELECT {_COLUMNS}, c.seq AS cp_seq, c.at AS cp_at, c.key_id AS cp_key_id, c.signature AS cp_signature"
        f" FROM audit_events e LEFT JOIN audit_checkpoints c ON c.tx_id = e.tx_id AND c.position = e.position"
        f" WHERE {where} ORDER BY e.tx_id, e.position LIMIT {int(limit)}", *args,
    )


# The feed's cursor, built by PostgreSQL exactly as app.api.pagination.encode_cursor builds it in Python.
_CURSOR = ("rtrim(translate(encode(convert_to('[' || {t}.tx_id || ',' || {t}.position || ']', 'UTF8'), 'base64'),"
           " '+/', '-_'), '=')")
_UTC = "to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"


def _json_text(column: str) -> str:
    return f"coalesce(to_json({column})::text, 'null')"  # escaped as row_to_json escapes it


def _quoted(expression: str) -> str:
    return f"coalesce('\"' || {expression} || '\"', 'null')"  # uuids, hex, base64: nothing to escape


def _object(*fields: tuple[str, str]) -> str:
    """SQL concatenating a compact JSON object of (name, SQL of the value's JSON text) in this order."""
    return " || ".join(f"'{'{' if i == 0 else ','}\"{name}\":' || {value}" for i, (name, value) in
                       enumerate(fields)) + " || '}'"


# An export line per row, and the checkpoint line that follows it when one ends at it, rendered by PostgreSQL
# (compact JSON, the feed's field names and order, as app/api/audit_formats.py renders them): the API only joins
# lines. Concatenated rather than row_to_json: measured 5.5 against 6.6 us a row. The record's line is rendered
# once, when the audit projection inserts the row (column `line`, sql/0140_audit_events_line.sql): reading it costs
# PostgreSQL about a fifth of rendering it per export (ops/bench `export`); rows without one are rendered here.
_RECORD_JSON = _object(
    ("id", _quoted("e.id")), ("type", "to_json(e.type)::text"), ("occurredAt", _quoted(_UTC.format(c="e.occurred_at"))),
    ("actor", _json_text("e.actor")), ("accountId", _quoted("e.account_id")), ("machineId", _quoted("e.machine_id")),
    ("subject", "to_json(e.subject)::text"), ("data", "e.data::text"), ("requestId", _json_text("e.request_id")),
    ("correlationId", _json_text("e.correlation_id")), ("causationId", _json_text("e.causation_id")),
    ("cursor", _quoted(_CURSOR.format(t="e"))), ("seq", "coalesce(e.seq::text, 'null')"),
    ("prevHash", _quoted("encode(e.prev_hash, 'hex')")), ("hash", _quoted("encode(e.hash, 'hex')")),
)
# SQL of a row's export line as UTF-8 bytes with its newline, over the audit_events columns of a relation named `e`.
RECORD_LINE = f"convert_to({_RECORD_JSON} || E'\\n', 'UTF8')"
_CHECKPOINT_LINE = _object(
    ("kind", "'\"checkpoint\"'"),
    ("accountId", _quoted("NULLIF(c.account_key, '00000000-0000-0000-0000-000000000000')")),
    ("count", "c.seq::text"), ("lastCursor", _quoted(_CURSOR.format(t="c"))),
    ("lastHash", _quoted("encode(c.last_hash, 'hex')")), ("at", _quoted(_UTC.format(c="c.at"))),
    ("keyId", "to_json(c.key_id)::text"), ("signature", _quoted("replace(encode(c.signature, 'base64'), E'\\n', '')")),
)
_STORED_LINE = f"coalesce(e.line, {RECORD_LINE})"
_LINES = (  # the stored line as it is (no copy) unless a checkpoint line follows it
    f"SELECT e.tx_id, e.position, CASE WHEN c.seq IS NULL THEN {_STORED_LINE}"
    f" ELSE {_STORED_LINE} || convert_to({_CHECKPOINT_LINE} || E'\\n', 'UTF8') END AS lines"
    " FROM audit_events e LEFT JOIN audit_checkpoints c ON c.tx_id = e.tx_id AND c.position = e.position"
)


async def export_lines(
    conn: asyncpg.Pool | asyncpg.Connection, filt: AuditFilter, after: tuple[int, int] | None,
    upto: tuple[int, int], limit: int,
) -> list[asyncpg.Record]:
    """One keyset batch for an NDJSON export: (tx_id, position, lines) per record, `lines` the record's line and
    the line of the checkpoint that ends at it (if any), as UTF-8 bytes with their newlines."""
    where, args = filt.where(after, upto)
    return await conn.fetch(f"{_LINES} WHERE {where} ORDER BY e.tx_id, e.position LIMIT {int(limit)}", *args)


async def last_position(conn: asyncpg.Pool | asyncpg.Connection) -> tuple[int, int] | None:
    """Where the feed ends now (one index probe): an export stops here, so a busy feed cannot keep it going."""
    row = await conn.fetchrow("SELECT tx_id, position FROM audit_events ORDER BY tx_id DESC, position DESC LIMIT 1")
    return None if row is None else (row["tx_id"], row["position"])


async def list_checkpoints(
    conn: asyncpg.Pool | asyncpg.Connection, account_key: uuid.UUID | None, after: tuple[int, int] | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Signed checkpoints in log order (of the record each ends at); account_key None: every account."""
    return await conn.fetch(
        "SELECT account_key, seq, tx_id, position, last_hash, at, key_id, signature FROM audit_checkpoints"
        " WHERE ($1::uuid IS NULL OR account_key = $1)"
        " AND ($2::bigint IS NULL OR (tx_id, position) > ($2, $3::bigint))"
        " ORDER BY tx_id, position LIMIT $4",
        account_key, after[0] if after else None, after[1] if after else None, limit,
    )
