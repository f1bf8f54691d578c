"""Request headers are capped in total: a 1 MiB header is a 431 problem, a large but sane one still works."""

from __future__ import annotations

from typing import Any

import httpx

from app.settings import Settings
from tests.api.helpers import assert_problem


async def test_oversized_headers_are_refused_with_431(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    limit = Settings().max_header_bytes
    huge = {**tenant["headers"], "X-Padding": "a" * (1024 * 1024)}
    for method, path in [("GET", "/v1/machines"), ("POST", "/v1/machines"), ("GET", "/health"), ("GET", "/nowhere")]:
        r = await client.request(method, path, headers=huge)
        body = assert_problem(r, 431, "HEADERS_TOO_LARGE")
        assert str(limit) in body["detail"]
    just_under = {**tenant["headers"], "X-Padding": "a" * (limit - 2048)}
    assert (await client.get("/v1/machines", headers=just_under)).status_code == 200
    many = {**tenant["headers"], **{f"X-Pad-{i}": "b" * 200 for i in range(100)}}  # 20 KB in small pieces
    assert_problem(await client.get("/v1/machines", headers=many), 431, "HEADERS_TOO_LARGE")
