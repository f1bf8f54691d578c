"""Execute over HTTP, the API's side: ROUTE_REQUIRED, 202 + Location, and the answer mapping, with the runs and
outcomes written through TasksService.next_run/finish_run exactly as the worker writes them."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from app.api.consistency import wait_for
from app.container import Container
from app.services.task_waiter import OutcomeWaiter
from domain.shared.context import CommandContext
from domain.tasks.commands import RunResult
from tests.api.helpers import assert_problem, new_tenant
from tests.api.task_helpers import (
    ENDPOINT_TOKEN,
    ENDPOINT_URL,
    buyer,
    capability,
    resolved_task,
    seller,
    submit,
    task_url,
)


def worker_ctx() -> CommandContext:
    return CommandContext(at=datetime.now(UTC), actor="system:test-worker", causation_id=str(uuid.uuid4()))


async def run_once(container: Container, task_id: str, status: int | None, body: Any = None,
                   error: str | None = None) -> uuid.UUID:
    """One attempt as the worker records it: the run opened, then its result. Returns the run id."""
    tid = uuid.UUID(task_id)
    _, run = await container.tasks.next_run(worker_ctx(), tid)
    assert run is not None
    result = RunResult(run_id=run["run_id"], http_status=status, latency_ms=42, error_class=error,
                       response_digest="sha256:abc" if body is not None else None, body=body)
    out = await container.tasks.finish_run(worker_ctx(), tid, result)
    assert out.position is not None and await wait_for(container.pool, "tasks", out.position, 15)
    run_id: uuid.UUID = run["run_id"]
    return run_id


@pytest.fixture
async def market(client: httpx.AsyncClient, tenant: dict[str, Any], admin: dict[str, str]) -> dict[str, Any]:
    """A seller in an account of its own with two listings of one capability, and a buyer in `tenant`."""
    sellers = await new_tenant(client, admin)
    cap = capability()
    first_mid, _, _ = await seller(client, sellers["headers"], cap, price=100)
    second_mid, _, last = await seller(client, sellers["headers"], cap, price=200)
    return {"cap": cap, "last": last, "sellers": sellers, "first": first_mid, "second": second_mid,
            "buyer": await buyer(client, tenant["headers"]), "h": tenant["headers"]}


async def _executing(client: httpx.AsyncClient, container: Container, m: dict[str, Any], fallbacks: int = 1,
                     ) -> str:
    tid, _ = await resolved_task(client, container, m["h"], m["buyer"], m["cap"], m["last"],
                                 constraints={"strategy": "cheapest", "fallbacks": fallbacks})
    r = await client.post(task_url(m["buyer"], tid, "execute"), headers={**m["h"], "Prefer": "wait=0"})
    assert r.status_code == 202, r.text
    return tid


async def test_route_required(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    bid = await buyer(client, h)
    tid = (await submit(client, h, bid, capability())).json()["id"]
    assert_problem(await client.post(task_url(bid, tid, "execute"), headers=h), 409, "ROUTE_REQUIRED")
    await client.post(task_url(bid, tid, "discover"), headers=h)
    assert_problem(await client.post(task_url(bid, tid, "execute"), headers=h), 409, "ROUTE_REQUIRED")
    assert_problem(await client.post(task_url(bid, str(uuid.uuid4()), "execute"), headers=h), 404, "NOT_FOUND")


async def test_accepted_then_followed(client: httpx.AsyncClient, container: Container, market: dict[str, Any],
                                      admin: dict[str, str]) -> None:
    m, h = market, market["h"]
    tid, _ = await resolved_task(client, container, h, m["buyer"], m["cap"], m["last"])
    r = await client.post(task_url(m["buyer"], tid, "execute"), headers={**h, "Prefer": "wait=0"})
    assert r.status_code == 202, r.text
    assert r.headers["location"] == task_url(m["buyer"], tid)  # no run has started yet
    assert r.headers["preference-applied"] == "wait=0" and r.headers["x-log-position"]
    assert r.json() == {"taskId": tid, "status": "executing", "runId": None, "outcome": None}
    task = (await client.get(task_url(m["buyer"], tid), headers=h)).json()
    assert task["status"] == "executing"
    assert_problem(await client.post(task_url(m["buyer"], tid, "cancel"), headers=h), 409, "TASK_NOT_CANCELLABLE")

    _, run = await container.tasks.next_run(worker_ctx(), uuid.UUID(tid))
    assert run is not None
    r = await client.post(task_url(m["buyer"], tid, "execute"), headers={**h, "Prefer": "respond-async"})
    assert r.status_code == 202 and r.headers["preference-applied"] == "respond-async"
    for _ in range(200):  # the run reaches the read model within a projection lag
        if r.json()["runId"]:
            break
        await asyncio.sleep(0.05)
        r = await client.post(task_url(m["buyer"], tid, "execute"), headers={**h, "Prefer": "wait=0"})
    assert r.json()["runId"] == str(run["run_id"]) and r.headers["location"] == f"/v1/runs/{run['run_id']}"
    got = await client.get(r.headers["location"], headers=h)
    assert got.status_code == 200, got.text
    assert got.json()["status"] == "started" and got.json()["sellerMachineId"] == m["first"]
    seller_view = await client.get(r.headers["location"], headers=m["sellers"]["headers"])
    assert seller_view.status_code == 200 and seller_view.json() == got.json()
    stranger = (await new_tenant(client, admin))["headers"]
    assert_problem(await client.get(r.headers["location"], headers=stranger), 404, "NOT_FOUND")
    assert (await client.get(r.headers["location"], headers=admin)).status_code == 200


async def test_success_wakes_a_waiting_request(client: httpx.AsyncClient, container: Container,
                                               market: dict[str, Any]) -> None:
    m, h = market, market["h"]
    tid, _ = await resolved_task(client, container, h, m["buyer"], m["cap"], m["last"])
    started = time.monotonic()
    waiting = asyncio.create_task(client.post(task_url(m["buyer"], tid, "execute"),
                                              headers={**h, "Prefer": "wait=30"}))
    for _ in range(200):  # until the request has recorded ExecutionRequested
        if (await container.tasks.load(uuid.UUID(tid))).status == "executing":
            break
        await asyncio.sleep(0.02)
    run_id = await run_once(container, tid, 200, {"translated": "hola", "secretless": True})
    r = await waiting
    assert r.status_code == 200, r.text
    assert time.monotonic() - started < 10
    assert r.headers["preference-applied"] == "wait=30"
    outcome = r.json()
    assert outcome["status"] == "succeeded" and outcome["output"] == {"translated": "hola", "secretless": True}
    assert outcome["runId"] == str(run_id) and outcome["httpStatus"] == 200 and outcome["code"] is None
    again = await client.post(task_url(m["buyer"], tid, "execute"), headers=h)  # finished: same answer, no event
    assert again.status_code == 200 and again.json() == outcome and "x-log-position" not in again.headers
    listed = await client.get(f"/v1/machines/{m['buyer']}/outcomes", headers=h, params={"status": "succeeded"})
    assert [o["taskId"] for o in listed.json()["data"]] == [tid]
    run = (await client.get(f"/v1/runs/{run_id}", headers=h)).json()
    assert run["status"] == "succeeded" and run["latencyMs"] == 42 and run["body"] == outcome["output"]
    assert run["responseDigest"] == "sha256:abc" and run["attempt"] == 1
    assert ENDPOINT_URL not in str(run) and ENDPOINT_TOKEN not in str(run)


async def test_the_wait_is_woken_by_notify_not_by_polling(client: httpx.AsyncClient, container: Container,
                                                          market: dict[str, Any], database_url: str) -> None:
    """A waiter that would poll only once a minute still answers at once: the projection's NOTIFY woke it."""
    tid = await _executing(client, container, market)
    waiter = OutcomeWaiter(container.pool, database_url, poll_s=60)
    try:
        first = asyncio.create_task(waiter.wait(uuid.UUID(tid), 0.01))  # starts the listener
        assert await first is None
        for _ in range(200):
            if waiter.listening:
                break
            await asyncio.sleep(0.02)
        assert waiter.listening
        waiting = asyncio.create_task(waiter.wait(uuid.UUID(tid), 50))
        await asyncio.sleep(0.2)  # parked on the event, its first read found nothing
        started = time.monotonic()
        await run_once(container, tid, 200, {"ok": True})
        row = await asyncio.wait_for(waiting, 20)
        assert row is not None and row["output"] == {"ok": True}
        assert time.monotonic() - started < 20  # far below the 60 s poll
    finally:
        await waiter.stop()


@pytest.mark.parametrize(("status", "error", "fallbacks", "answer", "code"), [
    (422, None, 1, 422, "UPSTREAM_REJECTED"),
    (404, None, 1, 404, "UPSTREAM_REJECTED"),
    (499, None, 1, 422, "UPSTREAM_REJECTED"),
    (401, None, 1, 502, "UPSTREAM_AUTH_FAILED"),
    (403, None, 1, 502, "UPSTREAM_AUTH_FAILED"),
    (503, None, 0, 502, "UPSTREAM_FAILED"),
    (None, "connect", 0, 502, "UPSTREAM_FAILED"),
    (None, "timeout", 0, 504, "UPSTREAM_TIMEOUT"),
])
async def test_failures_are_answered_by_kind(client: httpx.AsyncClient, container: Container,
                                             market: dict[str, Any], status: int | None, error: str | None,
                                             fallbacks: int, answer: int, code: str) -> None:
    m = market
    tid = await _executing(client, container, m, fallbacks)
    body = {"error": "no such language"} if status else None
    run_id = await run_once(container, tid, status, body, error if error else ("http-4xx" if status and status < 500
                                                                               else None))
    r = await client.post(task_url(m["buyer"], tid, "execute"), headers={**m["h"], "Prefer": "wait=5"})
    problem = assert_problem(r, answer, code)
    extra = problem["extra"]
    assert extra["taskId"] == tid and extra["runId"] == str(run_id) and extra["upstreamStatus"] == status
    if code == "UPSTREAM_REJECTED":
        assert extra["upstreamBody"] == body
    else:
        assert "upstreamBody" not in extra
    outcome = (await client.get(f"/v1/machines/{m['buyer']}/outcomes", headers=m["h"],
                                params={"taskId": tid})).json()["data"]
    assert [o["code"] for o in outcome] == [code]


async def test_a_fallback_serves_after_a_retryable_failure(client: httpx.AsyncClient, container: Container,
                                                          market: dict[str, Any]) -> None:
    m, h = market, market["h"]
    tid = await _executing(client, container, m, fallbacks=1)
    first = await run_once(container, tid, 503, {"busy": True})
    second = await run_once(container, tid, 200, {"ok": 1})
    r = await client.post(task_url(m["buyer"], tid, "execute"), headers=h)
    assert r.status_code == 200 and r.json()["runId"] == str(second) and r.json()["output"] == {"ok": 1}
    runs = (await client.get("/v1/runs", headers=h, params={"machineId": m["buyer"], "taskId": tid})).json()
    assert [(x["id"], x["attempt"], x["status"], x["sellerMachineId"]) for x in runs["data"]] == [
        (str(first), 1, "failed", m["first"]), (str(second), 2, "succeeded", m["second"])]
    failed = (await client.get("/v1/runs", headers=h, params={"machineId": m["buyer"], "status": "failed"})).json()
    assert [x["id"] for x in failed["data"]] == [str(first)]
    sh = m["sellers"]["headers"]
    as_seller = await client.get("/v1/runs", headers=sh, params={"machineId": m["second"], "role": "seller"})
    assert [x["id"] for x in as_seller.json()["data"]] == [str(second)]
    as_buyer = await client.get("/v1/runs", headers=sh, params={"machineId": m["second"]})
    assert as_buyer.json()["data"] == []  # the seller machine bought nothing
    assert_problem(await client.get("/v1/runs", headers=sh, params={"machineId": m["buyer"]}), 404, "NOT_FOUND")
    assert_problem(await client.get("/v1/runs", headers=h), 400, "VALIDATION_ERROR")  # machineId is required
    page = await client.get("/v1/runs", headers=h, params={"machineId": m["buyer"], "taskId": tid, "limit": 1})
    nxt = await client.get("/v1/runs", headers=h,
                           params={"machineId": m["buyer"], "taskId": tid, "limit": 1,
                                   "cursor": page.json()["nextCursor"]})
    assert [x["id"] for x in nxt.json()["data"]] == [str(second)] and nxt.json()["nextCursor"] is None
