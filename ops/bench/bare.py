"""The `commands` phase's baseline: the thinnest Litestar endpoint that decodes the same msgspec body as
`POST /v1/machines` and does one asyncpg INSERT, run by uvicorn with `mm api`'s flags on the same database."""

from __future__ import annotations

import argparse
import os
import uuid
from typing import Any

import asyncpg
import msgspec
import uvicorn
from litestar import Litestar, Request, post

from app.api.schemas_machines import RegisterMachineRequest
from app.db import create_pool
from app.settings import Settings

TABLE = "bench_bare_machines"
CREATE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (id uuid PRIMARY KEY, name text NOT NULL, public_key text NOT NULL,"
    " data jsonb NOT NULL, recorded_at timestamptz NOT NULL DEFAULT now())"
)
_INSERT = f"INSERT INTO {TABLE} (id, name, public_key, data) VALUES ($1, $2, $3, $4::jsonb)"


class Created(msgspec.Struct, frozen=True):
    id: uuid.UUID


@post("/v1/machines", status_code=201)
async def register(request: Request[Any, Any, Any], data: RegisterMachineRequest) -> Created:
    pool: asyncpg.Pool = request.app.state.pool
    new_id = uuid.uuid4()
    body = msgspec.json.encode({"description": data.description, "labels": data.labels}).decode()
    await pool.execute(_INSERT, new_id, data.name, data.public_key, body)
    return Created(id=new_id)


def create_bare_app(dsn: str) -> Litestar:
    async def open_pool(app: Litestar) -> None:
        app.state.pool = await create_pool(dsn, Settings(), stateless_sessions=True)

    async def close_pool(app: Litestar) -> None:
        await app.state.pool.close()

    return Litestar([register], on_startup=[open_pool], on_shutdown=[close_pool], openapi_config=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = create_bare_app(os.environ["MM_DATABASE_URL"])
    # The flags `mm api` runs uvicorn with (log level as the bench sets MM_LOG_LEVEL for the API).
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, proxy_headers=True)


if __name__ == "__main__":
    main()
