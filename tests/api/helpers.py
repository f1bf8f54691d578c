"""Test helpers: real Ed25519 key pairs, and registering, verifying and activating machines over HTTP."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from app.api.app import create_app
from app.container import Container
from app.settings import Settings

PROBLEM_JSON = "application/problem+json"


@asynccontextmanager
async def api_on(settings: Settings, dsn: str, **pool_sizes: int) -> AsyncIterator[tuple[httpx.AsyncClient, Container]]:
    """An in-process API with settings of its own on `dsn` (no projection runner): for the tests that need a
    setting the shared `client` does not have, or a database path they can cut."""
    container = await Container.open(settings, dsn, **pool_sizes)
    transport = httpx.ASGITransport(app=create_app(settings, container=container), raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client, container
    finally:
        await container.close()


class Keys:
    """An Ed25519 key pair as a machine holds it: the public half is sent as standard base64."""

    def __init__(self) -> None:
        self.private = Ed25519PrivateKey.generate()
        raw = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public_b64 = base64.b64encode(raw).decode()

    def sign(self, nonce: str) -> str:
        return base64.b64encode(self.private.sign(nonce.encode("utf-8"))).decode()


def fresh(headers: dict[str, str], response: httpx.Response) -> dict[str, str]:
    """Headers for a read that must see the write behind `response` (read-your-writes)."""
    return {**headers, "X-Min-Position": response.headers["x-log-position"]}


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """An RFC 9457 problem with a stable code, the HTTP status, and the response's request id."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM_JSON), r.headers.get("content-type")
    body: dict[str, Any] = r.json()
    assert body["code"] == code, body
    assert body["status"] == status, body
    assert body["title"] and body["type"], body
    assert body["requestId"] and body["requestId"] == r.headers["x-request-id"], body
    return body


async def register(client: httpx.AsyncClient, headers: dict[str, str], *, keys: Keys | None = None,
                   **fields: Any) -> tuple[httpx.Response, Keys]:
    keys = keys or Keys()
    body = {"name": f"m-{uuid.uuid4().hex[:8]}", "publicKey": keys.public_b64, **fields}
    r = await client.post("/v1/machines", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return r, keys


async def challenge(client: httpx.AsyncClient, headers: dict[str, str], machine_id: str) -> dict[str, Any]:
    r = await client.post(f"/v1/machines/{machine_id}/identity/challenge", headers=headers)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def verify(client: httpx.AsyncClient, headers: dict[str, str], machine_id: str, keys: Keys) -> httpx.Response:
    c = await challenge(client, headers, machine_id)
    r = await client.post(f"/v1/machines/{machine_id}/identity/verify", headers=headers,
                          json={"challengeId": c["challengeId"], "signature": keys.sign(c["nonce"])})
    assert r.status_code == 200, r.text
    return r


async def action(client: httpx.AsyncClient, headers: dict[str, str], machine_id: str, name: str,
                 **kwargs: Any) -> httpx.Response:
    return await client.post(f"/v1/machines/{machine_id}/{name}", headers=headers, **kwargs)


async def active_machine(client: httpx.AsyncClient, headers: dict[str, str], **fields: Any) -> httpx.Response:
    """Register, verify and activate; returns the activation response."""
    r, keys = await register(client, headers, **fields)
    mid = r.json()["id"]
    await verify(client, headers, mid, keys)
    r = await action(client, headers, mid, "activate")
    assert r.status_code == 200, r.text
    return r


async def new_tenant(client: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, Any]:
    """Another fresh ordinary account (the `tenant` fixture gives one per test)."""
    r = await client.post("/v1/accounts", json={"name": f"tenant-{uuid.uuid4().hex[:6]}"}, headers=admin)
    assert r.status_code == 201, r.text
    body = r.json()
    return {"id": body["account"]["id"], "headers": {"Authorization": f"Bearer {body['apiKey']['key']}"},
            "key": body["apiKey"], "opened": r}


async def walk_pages(client: httpx.AsyncClient, path: str, headers: dict[str, str], limit: int,
                     **params: Any) -> tuple[list[str], int]:
    """Follow nextCursor to the end; returns the ids seen, in order, and the number of pages."""
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        query: dict[str, Any] = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        r = await client.get(path, params=query, headers=headers)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["data"]) <= limit
        seen += [item["id"] for item in page["data"]]
        pages += 1
        cursor = page["nextCursor"]
        if cursor is None:
            return seen, pages


async def audit_feed(client: httpx.AsyncClient, headers: dict[str, str], last: httpx.Response,
                     **params: Any) -> list[dict[str, Any]]:
    """The audit entries matching `params` (e.g. machineId=...), read once `last`'s write is in the feed."""
    r = await client.get("/v1/audit-events", params={"limit": 200, **params},
                         headers={**headers, "X-Min-Position": last.headers["x-log-position"]})
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data
