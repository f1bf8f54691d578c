"""Offline verification of an audit export (any format): each hash, each chain link, each signed checkpoint.

Needs the export file and the platform's public key only (no database, no server): names the first record
that was altered, removed, inserted or reordered.
"""

from __future__ import annotations

import base64
import binascii
import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from projections.audit_chain import (
    GENESIS,
    Checkpoint,
    chain_hash,
    chain_key,
    decode_raw_key,
    signature_valid,
    utc_text,
)


class Tampered(Exception):
    """The export does not verify; the message names the line and what is wrong with it."""


@dataclass
class _Seen:
    seq: int
    hash: str
    cursor: str
    line: int
    first: int = 1  # the first place of the chain this export holds
    signed_upto: int = 0
    hashes: dict[int, tuple[str, int]] = field(default_factory=dict)  # seq -> (hash, line), this export


@dataclass
class Report:
    records: int = 0
    checkpoints: int = 0
    accounts: int = 0
    unsigned_tail: int = 0  # records after the last checkpoint of their account: chained, not yet signed


def _cursor_key(cursor: str) -> tuple[int, int]:
    padded = cursor + "=" * (-len(cursor) % 4)
    tx, pos = json.loads(base64.urlsafe_b64decode(padded))
    return int(tx), int(pos)


def parse_lines(lines: Iterable[str]) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """(line number, "record" | "checkpoint", fields in the feed's spelling) for each line, any format."""
    it = iter(enumerate(lines, 1))
    for n, line in it:
        if line.startswith("kind,cursor,"):
            yield from _csv(n, it)
            return
        if line.strip():
            yield _json_line(n, line)


def _json_line(n: int, line: str) -> tuple[int, str, dict[str, Any]]:
    try:
        x = json.loads(line)
    except ValueError:
        raise Tampered(f"line {n}: not a JSON record") from None
    if x.get("specversion"):  # CloudEvents: map the envelope back to the feed's fields
        if x.get("type") == "audit.checkpoint":
            return n, "checkpoint", x["data"]
        d = x.get("data") or {}
        return n, "record", {**d, "id": x.get("id"), "type": x.get("type"), "occurredAt": x.get("time"),
                             "subject": x.get("subject"), "cursor": x.get("cursor"), "seq": x.get("seq"),
                             "prevHash": x.get("prevhash"), "hash": x.get("hash")}
    return n, "checkpoint" if x.get("kind") == "checkpoint" else "record", x


def _csv(header_line: int, it: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str, dict[str, Any]]]:
    columns = ["kind", "cursor", "id", "type", "occurredAt", "actor", "accountId", "machineId", "subject",
               "requestId", "correlationId", "causationId", "seq", "prevHash", "hash", "data"]
    numbered = list(it)  # csv needs the lines; numbers are kept to name them
    for (n, _), row in zip(numbered, csv.reader(line for _, line in numbered), strict=True):
        r: dict[str, Any] = {k: (v if v != "" else None) for k, v in zip(columns, row, strict=False)}
        data = json.loads(r["data"]) if r.get("data") else None
        seq = int(r["seq"]) if r.get("seq") else None
        if r["kind"] == "checkpoint":
            yield n, "checkpoint", {"accountId": r["accountId"], "count": seq, "lastCursor": r["cursor"],
                                    "lastHash": r["hash"], "at": r["occurredAt"], **(data or {})}
        else:
            yield n, "record", {**r, "data": data, "seq": seq}


def verify(lines: Iterable[str], public_key_b64: str, partial: bool = False) -> Report:
    """Raises Tampered naming the earliest problem. `partial`: the export was filtered or started after a
    cursor, so a chain may start past its first record and skip records (each one is still verified)."""
    public = decode_raw_key(public_key_b64, "the public key")
    v = _Verifier(public, partial)
    for n, kind, x in parse_lines(lines):
        if kind == "checkpoint":
            v.checkpoint(n, x)
        else:
            v.record(n, x)
    return v.finish()


class _Verifier:
    """Reads on after a problem (later ones are often its echo) and reports the one on the earliest line."""

    def __init__(self, public: bytes, partial: bool) -> None:
        self.public, self.partial = public, partial
        self.chains: dict[Any, _Seen] = {}
        self.gaps: dict[Any, tuple[int, int, int]] = {}  # account -> (first missing, last missing, line after)
        self.problems: list[tuple[int, str]] = []
        self.report, self.last_cursor = Report(), (-1, -1)

    def problem(self, line: int, message: str) -> None:
        self.problems.append((line, f"line {line}: {message}"))

    def record(self, n: int, x: dict[str, Any]) -> None:
        self.report.records += 1
        try:
            digest = chain_hash(bytes.fromhex(x["prevHash"]), x).hex()
            at, seq, key = _cursor_key(x["cursor"]), int(x["seq"]), chain_key(x.get("accountId"))
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            return self.problem(n, f"record {x.get('id')} is malformed ({type(exc).__name__}: {exc})")
        if digest != x["hash"]:
            self.problem(n, f"record {x['id']} was altered: its content does not match its hash")
        seen, gap = self.chains.get(key), self.gaps.get(key)
        if at <= self.last_cursor:
            if gap is not None and gap[0] <= seq <= gap[1]:
                del self.gaps[key]
                return self.problem(n, f"record {x['id']} was reordered: it belongs before line {gap[2]}")
            copy = seen.hashes.get(seq) if seen else None
            if copy is not None and copy[0] == x["hash"]:
                return self.problem(n, f"record {x['id']} was inserted: a copy of line {copy[1]}")
            return self.problem(n, f"record {x['id']} is out of log order: reordered or inserted")
        self.last_cursor = at
        if seen is None:
            if not self.partial and (seq != 1 or x["prevHash"] != GENESIS.hex()):
                self.problem(n, f"record {x['id']} is place {seq} of account {x.get('accountId')}'s chain, but the"
                                f" export has none before it: {seq - 1} record(s) removed before it")
            seen = self.chains[key] = _Seen(seq, x["hash"], x["cursor"], n, first=seq)
        elif seq in seen.hashes:
            self.problem(seen.hashes[seq][1], f"record at place {seq} of account {x.get('accountId')}'s chain was"
                                              f" inserted (line {n} holds place {seq} too)")
        elif seq < seen.seq:
            self.problem(n, f"record {x['id']} (place {seq}) comes after place {seen.seq}: reordered")
        elif seq > seen.seq + 1:
            if not self.partial and key not in self.gaps:
                self.gaps[key] = (seen.seq + 1, seq - 1, n)
        elif x["prevHash"] != seen.hash:
            self.problem(n, f"record {x['id']} does not link to line {seen.line}, the record before it in its"
                            f" chain: line {seen.line} was altered, or line {n} inserted")
        seen.seq, seen.hash, seen.cursor, seen.line = seq, x["hash"], x["cursor"], n
        seen.hashes[seq] = (x["hash"], n)

    def checkpoint(self, n: int, x: dict[str, Any]) -> None:
        self.report.checkpoints += 1
        message = _checkpoint(n, x, self.chains, self.public, self.partial)
        if message:
            self.problem(n, message)

    def finish(self) -> Report:
        for lo, hi, line in self.gaps.values():
            self.problem(line, f"{hi - lo + 1} record(s) (places {lo}..{hi} of this record's chain) were removed"
                               " before it")
        if self.problems:
            first = min(self.problems)[1]
            more = len(self.problems) - 1
            raise Tampered(first + (f" (and {more} more problem(s) after it)" if more else ""))
        self.report.accounts = len(self.chains)
        self.report.unsigned_tail = sum(s.seq - max(s.signed_upto, s.first - 1) for s in self.chains.values())
        return self.report


def _checkpoint(n: int, x: dict[str, Any], chains: dict[Any, _Seen], public: bytes, partial: bool) -> str | None:
    try:
        cp = Checkpoint(account_id=x.get("accountId"), count=int(x["count"]), last_cursor=x["lastCursor"],
                        last_hash=x["lastHash"], at=utc_text(x["at"]), key_id=x["keyId"], signature=x["signature"])
    except (KeyError, TypeError, ValueError) as exc:
        return f"checkpoint is malformed ({type(exc).__name__}: {exc})"
    if not signature_valid(public, cp):
        return (f"checkpoint of account {cp.account_id} at place {cp.count} has no valid signature under this"
                " public key: it was altered or forged")
    seen = chains.get(chain_key(cp.account_id))
    signed = seen.hashes.get(cp.count) if seen else None
    if seen is None or signed is None:
        if partial:
            return None
        return f"checkpoint signs place {cp.count} of account {cp.account_id}'s chain, but that record was removed"
    if signed[0] != cp.last_hash:
        return (f"the record at line {signed[1]} (place {cp.count} of account {cp.account_id}) is not the one this"
                " checkpoint signed: records up to it were altered, inserted or removed")
    seen.signed_upto = max(seen.signed_upto, cp.count)
    return None
