"""Reads of the orders read model for the API: an account's orders as buyer or seller, keyset pages."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg


async def list_orders(pool: asyncpg.Pool, account_id: uuid.UUID | None, *, role: str,
                      status: list[str] | None, machine_id: uuid.UUID | None,
                      after: tuple[datetime, uuid.UUID] | None, limit: int) -> list[Any]:
    """Oldest first. `account_id` None (an admin): every order; else the account's orders in `role`.
    `machine_id` filters on the buyer machine (role buyer) or the seller machine (role seller)."""
    side = "buyer" if role == "buyer" else "seller"
    where: list[str] = []
    args: list[Any] = []
    if account_id is not None:
        args.append(account_id)
        where.append(f"{side}_account_id = ${len(args)}")
    if status:
        args.append(status)
        where.append(f"status = ANY(${len(args)}::text[])")
    if machine_id is not None:
        args.append(machine_id)
        where.append(f"{side}_machine_id = ${len(args)}")
    if after is not None:
        args.extend(after)
        where.append(f"(created_at, id) > (${len(args) - 1}, ${len(args)})")
    args.append(limit)
    sql = ("SELECT * FROM orders_view" + (" WHERE " + " AND ".join(where) if where else "")
           + f" ORDER BY created_at, id LIMIT ${len(args)}")
    return list(await pool.fetch(sql, *args))
