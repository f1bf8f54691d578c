"""Tasks read models: tasks, their routes (with the whole explanation), runs and outcomes, from the Task streams."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from app.store.types import RecordedEvent
from projections.base import Tables
from projections.rows import unnest_select

P = "tasks:Task."
# NOTIFY payload: the task id; sent inside the batch transaction, so it is delivered when the row is visible.
OUTCOMES_CHANNEL = "mm_task_outcomes"
_json = msgspec.json.Encoder().encode
_FINAL = {"Succeeded": "succeeded", "Failed": "failed", "Cancelled": "cancelled"}


def _text(value: Any) -> str:
    return _json(value).decode()


class _Table:
    """One table's rows touched by a batch: loaded once, folded in memory, written back with one upsert.

    Folding a whole batch per row keeps the writes to one per row however many events it had, and loading the
    rows first lets an event change any column without the writer knowing which ones the batch touched.
    `types`: each column after the key with its SQL type (jsonb ones travel as JSON text), for the multi-row
    upsert's array parameters.
    """

    def __init__(self, table: str, key: str, types: dict[str, str]) -> None:
        self.table, self.key, self.types = table, key, types
        self.columns = tuple(types)
        self.rows: dict[uuid.UUID, dict[str, Any]] = {}
        self.changed: set[uuid.UUID] = set()

    async def load(self, conn: asyncpg.Connection, ids: Iterable[uuid.UUID]) -> None:
        wanted = [i for i in set(ids) if i not in self.rows]
        if not wanted:
            return
        cols = ", ".join(f"{c}::text AS {c}" if self.types.get(c) == "jsonb" else c for c in (self.key, *self.columns))
        rows = await conn.fetch(f"SELECT {cols} FROM {self.table} WHERE {self.key} = ANY($1::uuid[])", wanted)
        for r in rows:
            self.rows[r[self.key]] = dict(r)

    def new(self, row_id: uuid.UUID, row: dict[str, Any]) -> None:
        self.rows[row_id] = {self.key: row_id, **row}
        self.changed.add(row_id)

    def change(self, row_id: uuid.UUID, **values: Any) -> dict[str, Any] | None:
        row = self.rows.get(row_id)
        if row is None:
            return None  # a stream this model never saw created (cannot happen in log order; never a crash)
        row.update(values)
        self.changed.add(row_id)
        return row

    async def write(self, conn: asyncpg.Connection) -> None:
        if not self.changed:
            return
        # One multi-row upsert (executemany would run the executor once per row); jsonb as text, cast per row.
        sent = {self.key: "uuid", **{c: "text" if t == "jsonb" else t for c, t in self.types.items()}}
        picked = ", ".join(f"{c}::jsonb" if t == "jsonb" else c for c, t in self.types.items())
        sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in self.columns)
        names = f"{self.key}, {', '.join(self.columns)}"
        changed = [self.rows[i] for i in self.changed]
        await conn.execute(
            f"INSERT INTO {self.table} ({names}) SELECT {self.key}, {picked}"
            f" FROM {unnest_select(sent)} AS u({names})"
            f" ON CONFLICT ({self.key}) DO UPDATE SET {sets}",
            [r[self.key] for r in changed], *([r.get(c) for r in changed] for c in self.columns),
        )


TASK_TYPES = {"account_id": "uuid", "machine_id": "uuid", "capability": "text", "input": "jsonb",
              "constraints": "jsonb", "auto": "boolean", "status": "text", "candidates_count": "integer",
              "candidates": "jsonb", "dropped": "jsonb", "route_id": "uuid", "runs_count": "integer",
              "outcome_code": "text", "version": "bigint", "created_at": "timestamptz", "updated_at": "timestamptz"}
ROUTE_TYPES = {"task_id": "uuid", "account_id": "uuid", "machine_id": "uuid", "capability": "text",
               "strategy": "text", "chosen": "jsonb", "steps": "jsonb", "ranked": "jsonb", "excluded": "jsonb",
               "dropped": "jsonb", "created_at": "timestamptz"}
RUN_TYPES = {"task_id": "uuid", "attempt": "integer", "buyer_machine_id": "uuid", "buyer_account_id": "uuid",
             "seller_machine_id": "uuid", "seller_account_id": "uuid", "listing_id": "uuid", "capability": "text",
             "provider_key": "text", "status": "text", "http_status": "integer", "latency_ms": "integer",
             "error_class": "text", "retryable": "boolean", "response_digest": "text", "body": "jsonb",
             "started_at": "timestamptz", "finished_at": "timestamptz"}
OUTCOME_TYPES = {"account_id": "uuid", "machine_id": "uuid", "capability": "text", "status": "text", "code": "text",
                 "detail": "text", "run_id": "uuid", "http_status": "integer", "output": "jsonb",
                 "finished_at": "timestamptz"}


class TasksProjection:
    name = "tasks"
    prefixes = (P,)
    tables: tuple[str, ...] = ("tasks_view", "task_routes_view", "task_runs_view", "task_outcomes_view")

    async def apply_many(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
        mine = [e for e in events if e.type.startswith(P)]
        if not mine:
            return
        tasks = _Table(t["tasks_view"], "id", TASK_TYPES)
        routes = _Table(t["task_routes_view"], "id", ROUTE_TYPES)
        runs = _Table(t["task_runs_view"], "id", RUN_TYPES)
        outcomes = _Table(t["task_outcomes_view"], "task_id", OUTCOME_TYPES)
        await tasks.load(conn, (e.stream_id for e in mine if not e.type.endswith(".Submitted")))
        await runs.load(conn, (uuid.UUID(e.data["run_id"]) for e in mine
                               if e.data.get("run_id") and not e.type.endswith(".RunStarted")))
        for event in mine:
            _fold(event, tasks, routes, runs, outcomes)
        for table in (tasks, routes, runs, outcomes):
            await table.write(conn)
        if outcomes.changed:
            await conn.execute("SELECT pg_notify($1, id) FROM unnest($2::text[]) AS id",
                               OUTCOMES_CHANNEL, [str(task_id) for task_id in outcomes.changed])


def _fold(event: RecordedEvent, tasks: _Table, routes: _Table, runs: _Table, outcomes: _Table) -> None:
    kind, d, task_id = event.type[len(P):], event.data, event.stream_id
    at = datetime.fromisoformat(d["timestamp"])
    if kind == "Submitted":
        tasks.new(task_id, {
            "account_id": uuid.UUID(d["account_id"]), "machine_id": uuid.UUID(d["machine_id"]),
            "capability": d["capability"], "input": _text(d["input"]), "constraints": _text(d["constraints"]),
            "auto": d["auto"], "status": "queued", "candidates_count": 0, "candidates": "[]", "dropped": "[]",
            "route_id": None, "runs_count": 0, "outcome_code": None, "version": event.version, "created_at": at,
            "updated_at": at})
        return
    task = tasks.change(task_id, version=event.version, updated_at=at)
    if task is None:
        return
    if kind == "Discovered":
        task.update(status="discovered", candidates_count=len(d["candidates"]), candidates=_text(d["candidates"]),
                    dropped=_text(d["dropped"]))
    elif kind == "Resolved":
        route_id = uuid.UUID(d["route_id"])
        task.update(status="resolved", route_id=route_id)
        routes.new(route_id, {
            "task_id": task_id, "account_id": task["account_id"], "machine_id": task["machine_id"],
            "capability": task["capability"], "strategy": d["strategy"], "chosen": _text(d["steps"][0]),
            "steps": _text(d["steps"]), "ranked": _text(d["ranked"]), "excluded": _text(d["excluded"]),
            "dropped": task["dropped"], "created_at": at})
    elif kind == "ExecutionRequested":
        task.update(status="executing")
    elif kind == "RunStarted":
        task.update(runs_count=task["runs_count"] + 1)
        runs.new(uuid.UUID(d["run_id"]), {
            "task_id": task_id, "attempt": d["attempt"], "buyer_machine_id": task["machine_id"],
            "buyer_account_id": task["account_id"], "seller_machine_id": uuid.UUID(d["seller_machine_id"]),
            "seller_account_id": uuid.UUID(d["seller_account_id"]), "listing_id": uuid.UUID(d["listing_id"]),
            "capability": d["capability"], "provider_key": d["provider_key"], "status": "started",
            "started_at": at})
    elif kind == "RunFinished":
        runs.change(uuid.UUID(d["run_id"]), status="succeeded" if d["succeeded"] else "failed",
                    http_status=d["http_status"], latency_ms=d["latency_ms"], error_class=d["error_class"],
                    retryable=d["retryable"], response_digest=d["response_digest"], body=_text(d["body"]),
                    finished_at=at)
    elif kind in _FINAL:
        status = _FINAL[kind]
        task.update(status=status, outcome_code=d.get("code"))
        run_id = uuid.UUID(d["run_id"]) if d.get("run_id") else None
        run = runs.rows.get(run_id) if run_id is not None else None
        outcomes.new(task_id, {
            "account_id": task["account_id"], "machine_id": task["machine_id"], "capability": task["capability"],
            "status": status, "code": d.get("code"), "detail": d.get("detail") or d.get("reason"),
            "run_id": run_id, "http_status": d.get("http_status"),
            "output": run.get("body") if run is not None else None, "finished_at": at})
