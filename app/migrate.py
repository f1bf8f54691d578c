"""Applies the numbered DDL files under sql/ in order, once each, under an advisory lock."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
_LOCK_KEY = 0x6D6D5F6D69677261  # "mm_migra": one migrator at a time across processes


def migration_files(sql_dir: Path = SQL_DIR) -> list[Path]:
    return sorted(p for p in sql_dir.glob("[0-9][0-9][0-9][0-9]_*.sql"))


async def migrate(dsn: str, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply pending files; returns the names applied. Files are idempotent DDL, so a re-run is harmless."""
    conn = await asyncpg.connect(dsn)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"]: r["checksum"] for r in await conn.fetch("SELECT name, checksum FROM schema_migrations")}
        for path in migration_files(sql_dir):
            text = path.read_text()
            checksum = hashlib.sha256(text.encode()).hexdigest()
            if path.name in done:
                if done[path.name] != checksum:
                    raise RuntimeError(f"migration {path.name} changed after it was applied; add a new file instead")
                continue
            async with conn.transaction():
                await conn.execute(text)
                await conn.execute(
                    "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)", path.name, checksum
                )
            applied.append(path.name)
    finally:
        try:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
        finally:
            await conn.close()
    return applied


def with_database(url: str, name: str) -> str:
    """The same server URL (TCP or unix socket) pointing at database `name`."""
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


async def create_database(server_url: str, prefix: str) -> str:
    """CREATE DATABASE `<prefix>_<random>` on the server, apply sql/, return its URL (tests, benchmarks)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    await _on_server(server_url, f'CREATE DATABASE "{name}"')
    url = with_database(server_url, name)
    await migrate(url)
    return url


async def copy_database(server_url: str, template_url: str, prefix: str) -> str:
    """CREATE DATABASE `<prefix>_<random>` as a copy of the migrated database `template_url` (which nothing may
    be connected to meanwhile); returns its URL. A copy costs about a fifth of migrating a new one (tests)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    template = urlsplit(template_url).path.lstrip("/")
    await _on_server(server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return with_database(server_url, name)


async def drop_database(server_url: str, url: str) -> None:
    """Drop the database `url` names, disconnecting whoever is still on it."""
    name = urlsplit(url).path.lstrip("/")
    await _on_server(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _on_server(server_url: str, sql: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
