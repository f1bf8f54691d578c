"""Test helpers for tasks over HTTP: sellers with listed capabilities, buyers, tasks driven to a route."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from app.api.consistency import wait_for
from app.container import Container
from app.store.types import LogPosition
from domain.shared.ids import derived_id
from tests.api.helpers import active_machine

ENDPOINT_URL, ENDPOINT_TOKEN = "https://seller-secret-host.example/run", "tok-" + uuid.uuid4().hex
TEXT_SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}


def capability() -> str:
    return f"translate-{uuid.uuid4().hex[:8]}"


async def caught_up(container: Container, response: httpx.Response, *projections: str) -> None:
    """Wait until each projection (default: catalogue and tasks) has applied the write behind `response`."""
    target = LogPosition.parse(response.headers["x-log-position"])
    for name in projections or ("catalogue", "tasks"):
        assert await wait_for(container.pool, name, target, 15), f"{name} did not catch up"


async def listing(client: httpx.AsyncClient, h: dict[str, str], machine_id: str, cap: str, *, price: int = 100,
                  currency: str = "USD", provider_key: str = "p1", schema: dict[str, Any] | None = None,
                  ) -> tuple[str, httpx.Response]:
    """An active capability node and its endpoint on `machine_id`: the listing id and the last write."""
    data = {"name": cap, "price": {"amount": price, "currency": currency}, "providerKey": provider_key,
            "inputSchema": TEXT_SCHEMA if schema is None else schema}
    r = await client.post(f"/v1/machines/{machine_id}/graph/nodes", headers=h,
                          json={"type": "capability", "label": cap, "status": "active", "data": data})
    assert r.status_code == 201, r.text
    node_id = r.json()["id"]
    last = await client.put(f"/v1/machines/{machine_id}/runtime-endpoints/{provider_key}", headers=h,
                            json={"url": ENDPOINT_URL, "authToken": ENDPOINT_TOKEN})
    assert last.status_code in (200, 201), last.text
    return str(derived_id("listing", uuid.UUID(node_id))), last


async def seller(client: httpx.AsyncClient, h: dict[str, str], cap: str, **kwargs: Any,
                 ) -> tuple[str, str, httpx.Response]:
    """A new active machine with one listing: (machine id, listing id, last write)."""
    mid = (await active_machine(client, h, name=f"seller-{uuid.uuid4().hex[:6]}")).json()["id"]
    listing_id, last = await listing(client, h, mid, cap, **kwargs)
    return mid, listing_id, last


async def buyer(client: httpx.AsyncClient, h: dict[str, str]) -> str:
    return str((await active_machine(client, h, name=f"buyer-{uuid.uuid4().hex[:6]}")).json()["id"])


async def submit(client: httpx.AsyncClient, h: dict[str, str], machine_id: str, cap: str, *,
                 input: Any = None, **fields: Any) -> httpx.Response:
    body = {"capability": cap, "input": {"text": "hello"} if input is None else input, **fields}
    r = await client.post(f"/v1/machines/{machine_id}/tasks", headers=h, json=body)
    assert r.status_code == 201, r.text
    return r


def task_url(machine_id: str, task_id: str, action: str = "") -> str:
    return f"/v1/machines/{machine_id}/tasks/{task_id}" + (f"/{action}" if action else "")


async def resolved_task(client: httpx.AsyncClient, container: Container, h: dict[str, str], buyer_id: str,
                        cap: str, last: httpx.Response, **fields: Any) -> tuple[str, dict[str, Any]]:
    """A task of `buyer_id` discovered (once `last` is in the catalogue) and resolved: (task id, route)."""
    await caught_up(container, last, "catalogue")
    task_id = (await submit(client, h, buyer_id, cap, **fields)).json()["id"]
    r = await client.post(task_url(buyer_id, task_id, "discover"), headers=h)
    assert r.status_code == 200 and r.json()["candidatesCount"] >= 1, r.text
    r = await client.post(task_url(buyer_id, task_id, "resolve"), headers=h)
    assert r.status_code == 201, r.text
    return task_id, r.json()
