"""Tamper evidence: hash chain and signed checkpoints over HTTP, and `mm audit verify` catching each kind of edit."""

from __future__ import annotations

import base64
import itertools
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from app.api.pagination import encode_cursor
from app.audit_verify import Tampered, verify
from app.migrate import create_database, drop_database
from projections.audit_chain import Checkpoint, chain_hash, signature_valid, utc_text
from tests.api.audit_stack import AUDIT_PUBLIC, Stack, audit_stack, seed
from tests.api.helpers import assert_problem
from tests.conftest import ROOT

SEEDED = 1200


@pytest.fixture(scope="module")
async def stack(server_url: str) -> AsyncIterator[Stack]:
    dsn = await create_database(server_url, "mm_audit_tamper")
    try:
        async with audit_stack(dsn) as s:
            await seed(s.container.store, [t["id"] for t in s.tenants], SEEDED)
            await s.catch_up()
            yield s
    finally:
        await drop_database(server_url, dsn)


async def _lines(stack: Stack, fmt: str = "ndjson", headers: dict[str, str] | None = None) -> list[str]:
    r = await stack.client.get("/v1/audit-events/export", params={"format": fmt}, headers=headers or stack.admin)
    assert r.status_code == 200, r.text
    return r.text.splitlines(keepends=True)


def _record_lines(lines: list[str]) -> list[int]:
    return [i for i, line in enumerate(lines) if json.loads(line).get("kind") != "checkpoint"]


async def test_the_signing_key_is_published(stack: Stack) -> None:
    r = await stack.client.get("/v1/audit-events/signing-key", headers=stack.tenants[0]["headers"])
    assert r.status_code == 200, r.text
    assert r.json()["publicKey"] == AUDIT_PUBLIC and len(base64.b64decode(r.json()["publicKey"])) == 32
    assert_problem(await stack.client.get("/v1/audit-events/signing-key"), 401, "UNAUTHORIZED")


async def test_checkpoints_are_listed_signed_and_scoped(stack: Stack) -> None:
    tenant = stack.tenants[0]
    seen, cursor = [], None
    while True:
        r = await stack.client.get("/v1/audit-events/checkpoints", headers=tenant["headers"],
                                   params={"limit": 4, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        seen += r.json()["data"]
        if not (cursor := r.json()["nextCursor"]):
            break
    assert len(seen) >= SEEDED // 2 // 50 and {c["accountId"] for c in seen} == {tenant["id"]}
    assert [c["count"] for c in seen] == sorted(c["count"] for c in seen)
    public = base64.b64decode(AUDIT_PUBLIC)
    for c in seen:
        assert signature_valid(public, Checkpoint(
            account_id=c["accountId"], count=c["count"], last_cursor=c["lastCursor"], last_hash=c["lastHash"],
            at=utc_text(c["at"]), key_id=c["keyId"], signature=c["signature"]))
    other = await stack.client.get("/v1/audit-events/checkpoints", params={"accountId": stack.tenants[1]["id"]},
                                   headers=tenant["headers"])
    assert other.status_code == 200 and other.json()["data"] == []
    mine = await stack.client.get("/v1/audit-events/checkpoints", params={"accountId": tenant["id"]},
                                  headers=stack.admin)
    assert {c["accountId"] for c in mine.json()["data"]} == {tenant["id"]}


async def test_the_chain_links_every_record_of_an_account(stack: Stack) -> None:
    lines = await _lines(stack, headers=stack.tenants[1]["headers"])
    records = [json.loads(lines[i]) for i in _record_lines(lines)]
    prev = "00" * 32
    for i, r in enumerate(records, 1):
        assert r["seq"] == i and r["prevHash"] == prev
        assert chain_hash(bytes.fromhex(prev), r).hex() == r["hash"]
        prev = r["hash"]


@pytest.mark.parametrize("fmt", ["ndjson", "csv", "cloudevents"])
async def test_an_untouched_export_verifies(stack: Stack, fmt: str) -> None:
    report = verify(await _lines(stack, fmt), AUDIT_PUBLIC)
    assert report.records >= SEEDED and report.checkpoints >= SEEDED // 50 and report.accounts >= 3
    resumed = await _lines(stack, fmt, stack.tenants[0]["headers"])
    assert verify(resumed, AUDIT_PUBLIC).accounts == 1


async def test_another_key_does_not_verify(stack: Stack) -> None:
    from projections.audit_chain import new_signing_key

    with pytest.raises(Tampered, match="no valid signature"):
        verify(await _lines(stack), new_signing_key()[1])


def _edit(line: str, **changes: Any) -> str:
    return json.dumps({**json.loads(line), **changes}) + "\n"


def _rehash(line: str, **changes: Any) -> str:
    x = {**json.loads(line), **changes}
    x["hash"] = chain_hash(bytes.fromhex(x["prevHash"]), x).hex()
    return json.dumps(x) + "\n"


async def test_an_altered_record_is_named(stack: Stack) -> None:
    lines = await _lines(stack)
    k = _record_lines(lines)[500]
    lines[k] = _edit(lines[k], data={"name": "forged"})
    with pytest.raises(Tampered, match=rf"^line {k + 1}: record .* was altered"):
        verify(lines, AUDIT_PUBLIC)


async def test_an_altered_and_rehashed_record_is_named(stack: Stack) -> None:
    lines = await _lines(stack, headers=stack.tenants[0]["headers"])
    k = _record_lines(lines)[100]
    lines[k] = _rehash(lines[k], actor="someone-else")
    with pytest.raises(Tampered, match=rf"line {k + 1} was altered"):
        verify(lines, AUDIT_PUBLIC)


async def test_a_removed_record_is_named(stack: Stack) -> None:
    lines = await _lines(stack)
    records = _record_lines(lines)
    k = records[700]
    account = json.loads(lines[k])["accountId"]
    nxt = next(i for i in records if i > k and json.loads(lines[i])["accountId"] == account)
    del lines[k]
    with pytest.raises(Tampered, match=rf"^line {nxt}: 1 record\(s\) .* removed"):
        verify(lines, AUDIT_PUBLIC)


async def test_a_copied_record_is_named_as_inserted(stack: Stack) -> None:
    lines = await _lines(stack)
    k = _record_lines(lines)[300]
    lines.insert(k + 5, lines[k])
    with pytest.raises(Tampered, match=rf"^line {k + 6}: record .* was inserted: a copy of line {k + 1}"):
        verify(lines, AUDIT_PUBLIC)


async def test_a_forged_record_that_fits_the_log_order_is_named_as_inserted(stack: Stack) -> None:
    lines = await _lines(stack)
    records = _record_lines(lines)
    # Between two transactions there is room in the log order for a forged cursor.
    j = next(j for j in range(10, len(records) - 1)
             if _pos(lines[records[j]])[0] != _pos(lines[records[j + 1]])[0])
    prev_line = lines[records[j]]
    prev = json.loads(prev_line)
    tx, pos = _pos(prev_line)
    forged = _rehash(prev_line, id=str(uuid.uuid4()), seq=prev["seq"] + 1, prevHash=prev["hash"],
                     cursor=encode_cursor(tx, pos + 1_000_000_000), data={"name": "forged"})
    insert_at = records[j] + 1
    lines.insert(insert_at, forged)
    with pytest.raises(Tampered, match=rf"^line {insert_at + 1}: record at place \d+ .* was inserted"):
        verify(lines, AUDIT_PUBLIC)


def _pos(line: str) -> tuple[int, int]:
    c = json.loads(line)["cursor"]
    tx, pos = json.loads(base64.urlsafe_b64decode(c + "=" * (-len(c) % 4)))
    return tx, pos


async def test_swapped_records_are_named_as_reordered(stack: Stack) -> None:
    lines = await _lines(stack, headers=stack.tenants[1]["headers"])
    records = _record_lines(lines)
    a, b = next((x, y) for x, y in itertools.pairwise(records[200:]) if y == x + 1)
    lines[a], lines[b] = lines[b], lines[a]
    with pytest.raises(Tampered, match=rf"^line {b + 1}: record .* was reordered: it belongs before line {a + 1}"):
        verify(lines, AUDIT_PUBLIC)


async def test_a_forged_checkpoint_is_named(stack: Stack) -> None:
    lines = await _lines(stack)
    k = next(i for i, line in enumerate(lines) if json.loads(line).get("kind") == "checkpoint")
    lines[k] = _edit(lines[k], count=json.loads(lines[k])["count"] - 1)
    with pytest.raises(Tampered, match=rf"^line {k + 1}: checkpoint .* no valid signature"):
        verify(lines, AUDIT_PUBLIC)


async def test_mm_audit_verify_on_files(stack: Stack, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    lines = await _lines(stack, "csv")
    good.write_text("".join(lines))
    bad.write_text("".join(lines[:40] + lines[41:]))

    def mm_verify(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "app.cli", "audit", "verify", str(path), "--public-key",
                               AUDIT_PUBLIC], capture_output=True, text=True, cwd=ROOT, timeout=60)

    ok, tampered = mm_verify(good), mm_verify(bad)
    assert ok.returncode == 0 and "verified" in ok.stdout, ok.stderr
    assert tampered.returncode == 1 and "FAILED: line" in tampered.stderr and "removed" in tampered.stderr
