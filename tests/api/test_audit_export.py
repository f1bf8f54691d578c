"""GET /v1/audit-events/export: streamed NDJSON, CSV and CloudEvents, account-scoped, filtered, resumable."""

from __future__ import annotations

import csv
import io
import json
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cloudevents.core.formats.json import JSONFormat

from app.migrate import create_database, drop_database
from tests.api.audit_stack import Stack, audit_stack, seed
from tests.api.helpers import assert_problem

SEEDED = 1500


@pytest.fixture(scope="module")
async def stack(server_url: str) -> AsyncIterator[Stack]:
    dsn = await create_database(server_url, "mm_audit_export")
    try:
        async with audit_stack(dsn) as s:
            await seed(s.container.store, [t["id"] for t in s.tenants], SEEDED)
            await s.catch_up()
            yield s
    finally:
        await drop_database(server_url, dsn)


async def _export(stack: Stack, headers: dict[str, str], **params: Any) -> tuple[str, str]:
    r = await stack.client.get("/v1/audit-events/export", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.headers["content-type"], r.text


def _ndjson(text: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    lines = [json.loads(line) for line in text.splitlines()]
    return [x for x in lines if x.get("kind") != "checkpoint"], [x for x in lines if x.get("kind") == "checkpoint"]


async def _feed_ids(stack: Stack, headers: dict[str, str], **params: Any) -> list[str]:
    ids, cursor = [], None
    while True:
        r = await stack.client.get("/v1/audit-events", headers=headers,
                                   params={**params, "limit": 200, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        ids += [e["id"] for e in r.json()["data"]]
        cursor = r.json()["nextCursor"]
        if not cursor:
            return ids


async def test_ndjson_is_the_whole_feed_in_order_with_hashes_and_checkpoints(stack: Stack) -> None:
    content_type, text = await _export(stack, stack.admin)
    assert content_type.startswith("application/x-ndjson")
    records, checkpoints = _ndjson(text)
    assert [r["id"] for r in records] == await _feed_ids(stack, stack.admin)
    assert len(records) >= SEEDED
    assert all(r["hash"] and len(r["hash"]) == 64 and r["seq"] >= 1 for r in records)
    assert len({r["cursor"] for r in records}) == len(records)
    by_cursor = {r["cursor"]: r for r in records}
    assert len(checkpoints) >= SEEDED // 50
    for cp in checkpoints:  # each follows the record it ends at and names that record's hash
        ended = by_cursor[cp["lastCursor"]]
        assert ended["hash"] == cp["lastHash"] and ended["seq"] == cp["count"]
        assert cp["accountId"] == ended["accountId"] and cp["signature"]


async def test_a_tenant_exports_only_its_own_account(stack: Stack) -> None:
    tenant = stack.tenants[0]
    _, text = await _export(stack, tenant["headers"])
    records, checkpoints = _ndjson(text)
    assert records and {r["accountId"] for r in records} == {tenant["id"]}
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))  # its whole chain, in order
    assert {c["accountId"] for c in checkpoints} == {tenant["id"]}
    assert [r["id"] for r in records] == await _feed_ids(stack, tenant["headers"])


@pytest.mark.parametrize("params", [
    {"type": "machine.profile-revised"},
    {"actor": "system:seed"},
    {"since": "2026-01-01T00:05:00Z", "until": "2026-01-01T00:10:00Z"},
])
async def test_filters_select_what_the_feed_selects(stack: Stack, params: dict[str, str]) -> None:
    records, _ = _ndjson((await _export(stack, stack.admin, **params))[1])
    assert records and [r["id"] for r in records] == await _feed_ids(stack, stack.admin, **params)


async def test_filter_by_machine_and_subject(stack: Stack) -> None:
    records, _ = _ndjson((await _export(stack, stack.admin, type="machine.profile-revised"))[1])
    mid = records[-1]["machineId"]
    by_machine, _ = _ndjson((await _export(stack, stack.admin, machineId=mid))[1])
    by_subject, _ = _ndjson((await _export(stack, stack.admin, subject=f"machine:{mid}"))[1])
    assert by_machine == by_subject and {r["machineId"] for r in by_machine} == {mid}
    assert [r["id"] for r in by_machine] == await _feed_ids(stack, stack.admin, machineId=mid)


@pytest.mark.parametrize("fmt", ["ndjson", "csv", "cloudevents"])
async def test_an_export_resumed_after_a_cut_equals_the_uncut_one(stack: Stack, fmt: str) -> None:
    _, whole = await _export(stack, stack.admin, format=fmt)
    lines = whole.splitlines(keepends=True)
    body = lines[1:] if fmt == "csv" else lines
    cursors = [_cursor_of(fmt, line) for line in body]
    cut = random.Random(fmt).randrange(1, len(body) - 1)
    while cursors[cut] is None:  # cut after a record, as a broken download leaves it
        cut += 1
    _, rest = await _export(stack, stack.admin, format=fmt, after=cursors[cut])
    rest_lines = rest.splitlines(keepends=True)
    resumed = lines[: cut + (2 if fmt == "csv" else 1)] + (rest_lines[1:] if fmt == "csv" else rest_lines)
    assert "".join(resumed) == whole


def _cursor_of(fmt: str, line: str) -> str | None:
    """The cursor of a record line (None for a checkpoint line)."""
    if fmt == "csv":
        row = next(csv.reader([line]))
        return row[1] if row[0] == "event" else None
    x = json.loads(line)
    if fmt == "cloudevents":
        return None if x["type"] == "audit.checkpoint" else x["cursor"]
    return None if x.get("kind") == "checkpoint" else x["cursor"]


async def test_csv_has_the_documented_header(stack: Stack) -> None:
    content_type, text = await _export(stack, stack.tenants[1]["headers"], format="csv")
    assert content_type.startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert text.splitlines()[0] == ("kind,cursor,id,type,occurredAt,actor,accountId,machineId,subject,requestId,"
                                    "correlationId,causationId,seq,prevHash,hash,data")
    events = [r for r in rows if r["kind"] == "event"]
    ndjson, _ = _ndjson((await _export(stack, stack.tenants[1]["headers"]))[1])
    assert [r["id"] for r in events] == [r["id"] for r in ndjson]
    assert [json.loads(r["data"]) for r in events] == [r["data"] for r in ndjson]
    assert {r["kind"] for r in rows} == {"event", "checkpoint"}


async def test_cloudevents_are_valid_cloudevents_1_0(stack: Stack) -> None:
    content_type, text = await _export(stack, stack.tenants[0]["headers"], format="cloudevents")
    assert content_type.startswith("application/cloudevents+x-ndjson")
    ndjson, checkpoints = _ndjson((await _export(stack, stack.tenants[0]["headers"]))[1])
    fmt = JSONFormat()
    events = [fmt.read(None, line) for line in text.splitlines()]
    records = [e for e in events if e.get_type() != "audit.checkpoint"]
    assert len(records) == len(ndjson) and len(events) == len(ndjson) + len(checkpoints)
    for e, r in zip(records, ndjson, strict=True):
        assert e.get_specversion() == "1.0" and e.get_id() == r["id"] and e.get_type() == r["type"]
        assert e.get_subject() == r["subject"] and e.get_source() and e.get_datacontenttype() == "application/json"
        assert e.get_time() is not None and e.get_extension("cursor") == r["cursor"]
        assert e.get_extension("hash") == r["hash"]
        data = e.get_data()
        assert isinstance(data, dict) and data["data"] == r["data"] and data["accountId"] == r["accountId"]


async def test_a_webhook_body_is_the_exports_cloudevents_line_byte_for_byte(stack: Stack) -> None:
    """One renderer (app.audit_cloudevents) for both: what a receiver gets is what an export holds."""
    from app.services.webhook_deliveries import cloudevent_body

    _, text = await _export(stack, stack.tenants[1]["headers"], format="cloudevents")
    lines = [line for line in text.splitlines() if '"audit.checkpoint"' not in line][:25]
    for line in lines:
        body = await cloudevent_body(stack.container.pool, uuid.UUID(json.loads(line)["id"]))
        assert body == line.encode()


async def test_an_empty_selection_is_an_empty_export(stack: Stack) -> None:
    _, text = await _export(stack, stack.admin, type="no.such-type")
    assert text == ""
    _, text = await _export(stack, stack.admin, type="no.such-type", format="csv")
    assert text.count("\n") == 1


@pytest.mark.parametrize("params", [{"format": "xml"}, {"after": "garbage!!"}, {"since": "yesterday"},
                                    {"machineId": "nope"}, {"type": "Not A Type"}])
async def test_bad_parameters_are_400(stack: Stack, params: dict[str, str]) -> None:
    r = await stack.client.get("/v1/audit-events/export", params=params, headers=stack.admin)
    assert_problem(r, 400, "VALIDATION_ERROR")


async def test_without_a_key_it_is_401(stack: Stack) -> None:
    assert_problem(await stack.client.get("/v1/audit-events/export"), 401, "UNAUTHORIZED")


async def test_lines_rendered_by_postgres_match_the_feed_and_the_python_rendering(stack: Stack) -> None:
    """The NDJSON lines come from PostgreSQL (stored per row); the feed and the other formats from msgspec."""
    from datetime import datetime

    from app.api.audit_formats import ndjson
    from projections.audit_reader import AuditFilter, export_batch

    records, checkpoints = _ndjson((await _export(stack, stack.admin))[1])
    r = await stack.client.get("/v1/audit-events", params={"limit": 200}, headers=stack.admin)
    python = [json.loads(line) for line in ndjson(await export_batch(
        stack.container.pool, AuditFilter(), None, (2**62, 0), 10_000)).decode().splitlines()]

    def same(a: dict[str, Any], b: dict[str, Any], time_key: str) -> bool:
        return ({k: v for k, v in a.items() if k != time_key} == {k: v for k, v in b.items() if k != time_key}
                and datetime.fromisoformat(a[time_key]) == datetime.fromisoformat(b[time_key]))

    assert all(same(x, y, "occurredAt") for x, y in zip(r.json()["data"], records, strict=False))
    assert len(python) == len(records) + len(checkpoints)
    lines = [x for x in python if x.get("kind") != "checkpoint"]
    assert all(same(x, y, "occurredAt") for x, y in zip(lines, records, strict=True))
    assert all(same(x, y, "at") for x, y in zip([x for x in python if x.get("kind")], checkpoints, strict=True))


async def test_each_record_is_stored_with_the_line_the_export_would_render(stack: Stack) -> None:
    """The audit projection stores each row's NDJSON line (sql/0140): the bytes rendering it now gives."""
    from projections.audit_reader import RECORD_LINE

    pool = stack.container.pool
    assert await pool.fetchval("SELECT count(*) FROM audit_events") >= SEEDED
    assert await pool.fetchval("SELECT count(*) FROM audit_events WHERE line IS NULL") == 0
    assert await pool.fetchval(f"SELECT count(*) FROM audit_events e WHERE line IS DISTINCT FROM {RECORD_LINE}") == 0


async def test_rows_without_a_stored_line_export_the_same_bytes(stack: Stack) -> None:
    """Rows from before sql/0140 have no line: the export renders theirs, byte for byte the stored one."""
    from projections.audit_reader import RECORD_LINE

    tenant = stack.tenants[0]["headers"]
    cursors = [r["cursor"] for r in _ndjson((await _export(stack, tenant))[1])[0]]
    params: list[tuple[dict[str, str], dict[str, Any]]] = [
        (stack.admin, {}), (tenant, {}), (tenant, {"after": cursors[len(cursors) // 3]}),
        (stack.admin, {"format": "ndjson", "type": "machine.profile-revised"}),
    ]
    stored = [(await _export(stack, h, **p))[1] for h, p in params]
    pool = stack.container.pool
    try:
        nulled = await pool.execute("UPDATE audit_events SET line = NULL WHERE position % 2 = 0")
        assert int(nulled.split()[-1]) > 0
        assert [(await _export(stack, h, **p))[1] for h, p in params] == stored
    finally:
        await pool.execute(f"UPDATE audit_events e SET line = {RECORD_LINE} WHERE line IS NULL")
