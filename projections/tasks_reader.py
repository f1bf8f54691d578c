"""Queries the API runs against the tasks read models (callers have already checked the machine's owner)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
import msgspec

Conn: TypeAlias = asyncpg.Pool | asyncpg.Connection
After: TypeAlias = tuple[datetime, uuid.UUID] | None

_TASK_COLS = ("id, account_id, machine_id, capability, input::text AS input, constraints::text AS constraints, auto,"
              " status, candidates_count, candidates::text AS candidates, dropped::text AS dropped, route_id,"
              " runs_count, outcome_code, version, created_at, updated_at")
_ROUTE_COLS = ("id, task_id, account_id, machine_id, capability, strategy, chosen::text AS chosen,"
               " steps::text AS steps, ranked::text AS ranked, excluded::text AS excluded,"
               " dropped::text AS dropped, created_at")
_RUN_COLS = ("id, task_id, attempt, buyer_machine_id, buyer_account_id, seller_machine_id, seller_account_id,"
             " listing_id, capability, provider_key, status, http_status, latency_ms, error_class, retryable,"
             " response_digest, body::text AS body, started_at, finished_at")
_OUTCOME_COLS = ("task_id, account_id, machine_id, capability, status, code, detail, run_id, http_status,"
                 " output::text AS output, finished_at")
_JSON = frozenset({"input", "constraints", "candidates", "dropped", "chosen", "steps", "ranked", "excluded", "body",
                   "output"})


def _row(row: asyncpg.Record) -> dict[str, Any]:
    d = dict(row)
    for k in _JSON.intersection(d):
        d[k] = None if d[k] is None else msgspec.json.decode(d[k])
    return d


class _Where:
    """A WHERE clause built from the filters given, so each list's query keeps to its index."""

    def __init__(self) -> None:
        self.args: list[Any] = []
        self.clauses: list[str] = []

    def add(self, clause: str, *values: Any) -> None:
        refs = []
        for v in values:
            self.args.append(v)
            refs.append(f"${len(self.args)}")
        self.clauses.append(clause.format(*refs))

    def maybe(self, clause: str, value: Any) -> None:
        if value is not None:
            self.add(clause, value)

    def page(self, time_col: str, id_col: str, after: After) -> None:
        if after is not None:
            self.add(f"({time_col}, {id_col}) > ({{0}}::timestamptz, {{1}}::uuid)", after[0], after[1])

    async def fetch(self, conn: Conn, select: str, order: str, limit: int) -> list[dict[str, Any]]:
        self.args.append(limit)
        sql = f"{select} WHERE {' AND '.join(self.clauses)} ORDER BY {order} LIMIT ${len(self.args)}"
        return [_row(r) for r in await conn.fetch(sql, *self.args)]


async def get_task(conn: Conn, machine_id: uuid.UUID, task_id: uuid.UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow(f"SELECT {_TASK_COLS} FROM tasks_view WHERE id = $1 AND machine_id = $2",
                              task_id, machine_id)
    return None if row is None else _row(row)


async def list_tasks(conn: Conn, machine_id: uuid.UUID, *, status: list[str] | None, capability: str | None,
                     after: After, limit: int) -> list[dict[str, Any]]:
    w = _Where()
    w.add("machine_id = {0}", machine_id)
    w.maybe("status = ANY({0}::text[])", status)
    w.maybe("capability = {0}", capability)
    w.page("created_at", "id", after)
    return await w.fetch(conn, f"SELECT {_TASK_COLS} FROM tasks_view", "created_at, id", limit)


async def get_route(conn: Conn, route_id: uuid.UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow(f"SELECT {_ROUTE_COLS} FROM task_routes_view WHERE id = $1", route_id)
    return None if row is None else _row(row)


async def list_routes(conn: Conn, machine_id: uuid.UUID, *, task_id: uuid.UUID | None, capability: str | None,
                      after: After, limit: int) -> list[dict[str, Any]]:
    w = _Where()
    w.add("machine_id = {0}", machine_id)
    w.maybe("task_id = {0}", task_id)
    w.maybe("capability = {0}", capability)
    w.page("created_at", "id", after)
    return await w.fetch(conn, f"SELECT {_ROUTE_COLS} FROM task_routes_view", "created_at, id", limit)


async def get_run(conn: Conn, run_id: uuid.UUID, account_id: uuid.UUID | None) -> dict[str, Any] | None:
    """The run if `account_id` is its buyer's or its seller's account (None: an admin, no filter)."""
    row = await conn.fetchrow(
        f"SELECT {_RUN_COLS} FROM task_runs_view WHERE id = $1"
        " AND ($2::uuid IS NULL OR buyer_account_id = $2 OR seller_account_id = $2)", run_id, account_id)
    return None if row is None else _row(row)


async def latest_run_id(conn: Conn, task_id: uuid.UUID) -> uuid.UUID | None:
    value: uuid.UUID | None = await conn.fetchval(
        "SELECT id FROM task_runs_view WHERE task_id = $1 ORDER BY attempt DESC LIMIT 1", task_id)
    return value


async def list_runs(conn: Conn, machine_id: uuid.UUID, *, role: str, task_id: uuid.UUID | None,
                    status: list[str] | None, capability: str | None, after: After,
                    limit: int) -> list[dict[str, Any]]:
    w = _Where()
    w.add(("seller_machine_id" if role == "seller" else "buyer_machine_id") + " = {0}", machine_id)
    w.maybe("task_id = {0}", task_id)
    w.maybe("status = ANY({0}::text[])", status)
    w.maybe("capability = {0}", capability)
    w.page("started_at", "id", after)
    return await w.fetch(conn, f"SELECT {_RUN_COLS} FROM task_runs_view", "started_at, id", limit)


async def get_outcome(conn: Conn, task_id: uuid.UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow(f"SELECT {_OUTCOME_COLS} FROM task_outcomes_view WHERE task_id = $1", task_id)
    return None if row is None else _row(row)


async def list_outcomes(conn: Conn, machine_id: uuid.UUID, *, task_id: uuid.UUID | None, status: list[str] | None,
                        capability: str | None, after: After, limit: int) -> list[dict[str, Any]]:
    w = _Where()
    w.add("machine_id = {0}", machine_id)
    w.maybe("task_id = {0}", task_id)
    w.maybe("status = ANY({0}::text[])", status)
    w.maybe("capability = {0}", capability)
    w.page("finished_at", "task_id", after)
    return await w.fetch(conn, f"SELECT {_OUTCOME_COLS} FROM task_outcomes_view", "finished_at, task_id", limit)
