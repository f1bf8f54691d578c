"""`mm audit export|verify|new-signing-key`: download the audit feed over HTTP, verify a download offline.

`export` talks to the API (like any client, with an API key), not to the database: it works against a
remote deployment, needs no database credentials, and gets exactly the account scoping of the key it uses.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from app.settings import Settings

if TYPE_CHECKING:
    import httpx

_FILTERS = (("type", "type"), ("machine_id", "machineId"), ("subject", "subject"), ("actor", "actor"),
            ("since", "since"), ("until", "until"))


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    audit = sub.add_parser("audit", help="audit feed: export, offline verification, signing keys")
    audit_sub = audit.add_subparsers(dest="action", required=True)
    export = audit_sub.add_parser("export", help="download the audit feed (resumable) through the API")
    export.add_argument("--format", choices=["ndjson", "csv", "cloudevents"], default="ndjson")
    export.add_argument("--out", required=True, type=Path, help="the file to write (or, with --resume, extend)")
    export.add_argument("--resume", action="store_true", help="continue after the file's last complete record")
    export.add_argument("--type", action="append", help="a public type name (repeatable)")
    export.add_argument("--machine-id")
    export.add_argument("--subject")
    export.add_argument("--actor")
    export.add_argument("--since", help="RFC 3339 time, inclusive")
    export.add_argument("--until", help="RFC 3339 time, exclusive")
    export.add_argument("--url", help="the API's base URL (default: http://MM_HOST:MM_PORT)")
    export.add_argument("--api-key", help="default: MM_API_KEY")
    check = audit_sub.add_parser("verify", help="verify an export offline: hashes, chain, checkpoint signatures")
    check.add_argument("file", type=Path)
    check.add_argument("--public-key", required=True, help="base64, from GET /v1/audit-events/signing-key")
    check.add_argument("--partial", action="store_true",
                       help="the export was filtered or resumed from a cursor: chains may start late and skip")
    audit_sub.add_parser("new-signing-key", help="print a new MM_AUDIT_SIGNING_KEY (its public key to stderr)")
    return audit


def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "verify":
        return _verify(args)
    if args.action == "new-signing-key":
        from projections.audit_chain import new_signing_key

        private, public = new_signing_key()
        print(private)
        print(f"public key (MM_AUDIT_PUBLIC_KEY, and what verifiers pin): {public}", file=sys.stderr)
        return 0
    return export(settings, args)


def _verify(args: argparse.Namespace) -> int:
    from app.audit_verify import Tampered, verify

    try:
        with args.file.open(encoding="utf-8", newline="") as f:
            report = verify(f, args.public_key, partial=args.partial)
    except Tampered as exc:
        print(f"mm audit verify: FAILED: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"mm audit verify: {exc}", file=sys.stderr)
        return 2
    print(f"verified {report.records} records of {report.accounts} account(s) and {report.checkpoints} signed"
          f" checkpoint(s)")
    if report.unsigned_tail:
        print(f"note: the last {report.unsigned_tail} record(s) are chained but not yet under a signed checkpoint")
    return 0


def resume_point(path: Path, fmt: str) -> tuple[int, str | None]:
    """Where to cut the file and the cursor to resume after: the file is cut before its last record line (and
    anything after it, such as a partial line), and the export resumes after the record before that one, so
    the last record comes again together with any checkpoint line that follows it."""
    offset, previous = 0, None
    last: tuple[int, str | None] = (0, None)  # (where the last record line starts, cursor of the record before it)
    with path.open("rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            cursor = _record_cursor(raw.decode(), fmt)
            if cursor is not None:
                last, previous = (offset, previous), cursor
            offset += len(raw)
    return last if previous is not None else (offset if fmt != "csv" else 0, None)


def _record_cursor(line: str, fmt: str) -> str | None:
    if fmt == "csv":
        kind, _, rest = line.partition(",")
        return rest.partition(",")[0] if kind == "event" else None
    try:
        x = json.loads(line)
    except ValueError:
        return None
    if x.get("kind") == "checkpoint" or x.get("type") == "audit.checkpoint":
        return None
    cursor = x.get("cursor")
    return cursor if isinstance(cursor, str) else None


def export(settings: Settings, args: argparse.Namespace) -> int:
    import httpx
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    key = args.api_key or settings.api_key
    if not key:
        print("mm audit export: pass --api-key or set MM_API_KEY", file=sys.stderr)
        return 2
    params: list[tuple[str, str]] = [("format", args.format)]
    for attr, name in _FILTERS:
        value = getattr(args, attr)
        params += [(name, v) for v in value] if isinstance(value, list) else [(name, value)] if value else []
    after, skip_header = None, False
    if args.resume and args.out.exists():
        cut, after = resume_point(args.out, args.format)
        with args.out.open("r+b") as f:
            f.truncate(cut)
        skip_header = args.format == "csv" and cut > 0
        if after:
            params.append(("after", after))
    base = (args.url or f"http://{settings.host}:{settings.port}").rstrip("/")
    console = Console(stderr=True)
    rows, started = 0, time.monotonic()
    columns = (SpinnerColumn(), TextColumn("{task.fields[rows]:,} rows"),
               TextColumn("{task.fields[rate]:,.0f} rows/s"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress, args.out.open("ab") as out, \
            httpx.Client(timeout=httpx.Timeout(30.0, read=300.0)) as client:
        task = progress.add_task("export", rows=0, rate=0.0)
        try:
            with client.stream("GET", base + "/v1/audit-events/export", params=tuple(params),
                               headers={"Authorization": f"Bearer {key}"}) as r:
                if r.status_code != 200:
                    r.read()
                    console.print(f"mm audit export: HTTP {r.status_code}: {_detail(r)}")
                    return 1
                for chunk in r.iter_bytes():
                    if skip_header:
                        _, sep, chunk = chunk.partition(b"\n")
                        skip_header = not sep
                    out.write(chunk)
                    rows += chunk.count(b"\n")
                    elapsed = max(time.monotonic() - started, 1e-6)
                    progress.update(task, rows=rows, rate=rows / elapsed)
        except httpx.HTTPError as exc:
            console.print(f"mm audit export: interrupted after {rows} rows ({type(exc).__name__}: {exc});"
                          " run it again with --resume to continue")
            return 1
    console.print(f"exported {rows} rows to {args.out}")
    return 0


def _detail(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:200]
    return str(body.get("detail") or body) if isinstance(body, dict) else str(body)
