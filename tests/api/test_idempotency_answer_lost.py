"""A command that ran, whose answer could not be kept for replay because the database went away just after it
committed, is still answered (not a 500): the client learns its command happened."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from app.api.idempotency import IdempotencyStore


async def test_the_answer_is_sent_when_keeping_it_for_replay_fails(
    client: httpx.AsyncClient, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def database_gone(self: IdempotencyStore, *args: Any) -> None:
        raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation")

    monkeypatch.setattr(IdempotencyStore, "finish", database_gone)
    name = f"kept-{uuid.uuid4().hex[:8]}"
    r = await client.post("/v1/accounts", json={"name": name}, headers={**admin, "Idempotency-Key": str(uuid.uuid4())})
    assert r.status_code == 201, r.text
    assert r.json()["account"]["name"] == name
    monkeypatch.undo()
    got = await client.get(f"/v1/accounts/{r.json()['account']['id']}", headers=admin)
    assert got.status_code == 200 and got.json()["name"] == name, got.text
