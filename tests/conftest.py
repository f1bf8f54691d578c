"""Session fixtures: one fresh, migrated PostgreSQL database per test session (real server, never a stand-in)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from app.migrate import migrate
from app.store.event_store import EventStore

ROOT = Path(__file__).resolve().parent.parent


def _server_url() -> str:
    url = os.environ.get("MM_DATABASE_URL")
    if url:
        return url
    from app.embedded_db import ensure_embedded_postgres

    return ensure_embedded_postgres(ROOT / ".data" / "test-pg")


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def server_url() -> str:
    return _server_url()


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """A throw-away database on the real server, migrated with sql/."""
    name = f"mm_test_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        await migrate(_with_database(server_url, name))

    async def drop() -> None:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(create())
    try:
        yield _with_database(server_url, name)
    finally:
        asyncio.run(drop())


@pytest.fixture(scope="session")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    from app.db import create_pool
    from app.settings import Settings

    p = await create_pool(database_url, Settings(), min_size=2, max_size=40)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture(scope="session")
def store(pool: asyncpg.Pool) -> EventStore:
    return EventStore(pool)


@pytest.fixture
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    """A database of its own for tests that run projections from zero (no other runner touches it)."""
    name = f"mm_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = _with_database(server_url, name)
    await migrate(url)
    try:
        yield url
    finally:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
