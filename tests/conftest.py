"""Session fixtures: fresh, migrated PostgreSQL databases on a real server (never a stand-in)."""

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


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


async def create_database(server_url: str, prefix: str = "mm_test") -> str:
    """CREATE DATABASE with a random name, apply sql/, return its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = with_database(server_url, name)
    await migrate(url)
    return url


async def drop_database(server_url: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def server_url() -> str:
    return _server_url()


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """The session's shared database (API tests, store tests)."""
    url = asyncio.run(create_database(server_url))
    try:
        yield url
    finally:
        asyncio.run(drop_database(server_url, url))


@pytest.fixture
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    """A database of its own for tests that run projections from zero (no other runner touches it)."""
    url = await create_database(server_url)
    try:
        yield url
    finally:
        await drop_database(server_url, url)


@pytest.fixture
def fresh_database_sync(server_url: str) -> Iterator[str]:
    """`fresh_database` for synchronous tests (subprocess-driven ones)."""
    url = asyncio.run(create_database(server_url))
    try:
        yield url
    finally:
        asyncio.run(drop_database(server_url, url))


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
