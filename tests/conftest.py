"""Session fixtures: fresh, migrated PostgreSQL databases on a real server (never a stand-in)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from app.container import Container
from app.migrate import copy_database, create_database, drop_database
from app.sealing import new_secret_key
from app.settings import Settings
from app.store.event_store import EventStore
from projections.audit_chain import new_signing_key

ROOT = Path(__file__).resolve().parent.parent
# Seals runtime-endpoint credentials in every test container (and the API processes tests start).
TEST_SECRET_KEY = new_secret_key()
# The platform audit key: every `mm api` and `mm projector` a test starts inherits it from the environment,
# as an operator sets it once for all their services (`mm up` keeps one in its data directory instead).
TEST_AUDIT_KEY, TEST_AUDIT_PUBLIC = new_signing_key()
os.environ["MM_AUDIT_SIGNING_KEY"] = TEST_AUDIT_KEY


def _server_url() -> str:
    url = os.environ.get("MM_DATABASE_URL")
    if url:
        return url
    from app.embedded_db import ensure_embedded_postgres

    # Under pytest-xdist (`make test`) each worker has a server of its own: transaction ids are server-wide, so
    # one worker's open transaction would hold back the log readers' horizon (EventStore.read_all) in the other
    # worker's databases, and a catch-up would find nothing to apply yet.
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return ensure_embedded_postgres(ROOT / ".data" / (f"test-pg-{worker}" if worker else "test-pg"))


@pytest.fixture(scope="session")
def server_url() -> str:
    return _server_url()


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """The session's shared database (API tests, store tests)."""
    url = asyncio.run(create_database(server_url, "mm_test"))
    try:
        yield url
    finally:
        asyncio.run(drop_database(server_url, url))


@pytest.fixture(scope="session")
def template_database(server_url: str) -> Iterator[str]:
    """The session's migrated database that every fresh one is copied from (nothing ever connects to it again):
    a copy takes about a fifth of the time of migrating a new database, and hundreds of tests take one."""
    url = asyncio.run(create_database(server_url, "mm_template"))
    try:
        yield url
    finally:
        asyncio.run(drop_database(server_url, url))


@pytest.fixture
async def fresh_database(server_url: str, template_database: str) -> AsyncIterator[str]:
    """A database of its own for tests that run projections from zero (no other runner touches it)."""
    url = await copy_database(server_url, template_database, "mm_test")
    try:
        yield url
    finally:
        await drop_database(server_url, url)


@pytest.fixture
async def fresh_container(fresh_database: str) -> AsyncIterator[Container]:
    """The application's services on a database of their own (no projection runner)."""
    c = await Container.open(Settings(secret_key=TEST_SECRET_KEY), fresh_database, min_size=1, max_size=8)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
def fresh_database_sync(server_url: str, template_database: str) -> Iterator[str]:
    """`fresh_database` for synchronous tests (subprocess-driven ones)."""
    url = asyncio.run(copy_database(server_url, template_database, "mm_test"))
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


# The longest files, started first so the other worker is never left waiting for one at the end (`make test`
# has pytest-xdist hand files out in collection order, --no-loadscope-reorder; by default it would start the
# files with the most tests first): the schemathesis run takes about a third of the suite on its own.
_LONGEST_FIRST = ("tests/contract/test_openapi.py", "tests/integration/test_bench_smoke.py",
                  "tests/contract/test_stateful.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.partition("::")[0]
        return _LONGEST_FIRST.index(path) if path in _LONGEST_FIRST else len(_LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within each file, and of the other files, is kept
