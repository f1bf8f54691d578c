"""Time travel and stream history for tasks and policies: random walks whose every version (?version=N,
?asOf=<recordedAt>) answers what the live GET said right after that command; their streams for the owner only
(a platform policy's for everyone, as GET shows it), secrets redacted."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from app.container import Container
from domain.shared.context import CommandContext
from domain.tasks.commands import RunResult
from tests.api.helpers import assert_problem, new_tenant
from tests.api.task_helpers import ENDPOINT_TOKEN, ENDPOINT_URL, buyer, capability, caught_up, seller, submit, task_url
from tests.api.walk import Step, Walk

CAPS = {"type": "capabilities", "deny": ["translate"]}
RULES: list[list[dict[str, Any]]] = [
    [CAPS],
    [{"type": "spend-limit", "amount": {"amount": 5000, "currency": "USD"}, "period": "month"}],
    [{"type": "rate-limit", "tasks": 10, "perSeconds": 60}, CAPS],
    [{"type": "provider-keys", "allow": ["openai"]}],
]
NOTHING = httpx.Response(200)  # a step that ran outside HTTP (the worker's side)


def worker_ctx() -> CommandContext:
    return CommandContext(at=datetime.now(UTC), actor="system:test-worker", causation_id=str(uuid.uuid4()))


class Worker:
    """The executor's two writes, as separate steps: open the next run, then record a result for it."""

    def __init__(self, container: Container, task_id: str) -> None:
        self.tasks, self.task_id = container.tasks, uuid.UUID(task_id)

    async def start(self) -> httpx.Response:
        await self.tasks.next_run(worker_ctx(), self.task_id)
        return NOTHING

    async def finish(self, status: int) -> httpx.Response:
        task = await self.tasks.load(self.task_id)
        if task.runs and task.runs[-1]["status"] == "started":
            await self.tasks.finish_run(worker_ctx(), self.task_id, RunResult(
                run_id=task.runs[-1]["run_id"], http_status=status, latency_ms=7, error_class=None,
                response_digest="sha256:abc", body={"text": f"hola {status}"}))
        return NOTHING


@pytest.fixture
async def market(client: httpx.AsyncClient, container: Container, tenant: dict[str, Any], admin: dict[str, str]
                 ) -> dict[str, Any]:
    """Two listings of one capability in a seller account of its own (a route with a fallback), and a buyer."""
    sellers = await new_tenant(client, admin)
    cap = capability()
    await seller(client, sellers["headers"], cap, price=100)
    _, _, last = await seller(client, sellers["headers"], cap, price=200)
    await caught_up(container, last, "catalogue")
    return {"cap": cap, "sellers": sellers, "buyer": await buyer(client, tenant["headers"]), "h": tenant["headers"]}


@pytest.mark.parametrize("seed", list(range(11, 17)))
async def test_task_walk(client: httpx.AsyncClient, container: Container, market: dict[str, Any],
                         admin: dict[str, str], seed: int) -> None:
    rng, h, bid = random.Random(seed), market["h"], market["buyer"]
    created = await submit(client, h, bid, market["cap"], constraints={"strategy": "cheapest", "fallbacks": 1})
    tid = created.json()["id"]
    walk = Walk(client, h, uuid.UUID(tid), task_url(bid, tid))
    await walk.step(lambda: _same(created))
    worker = Worker(container, tid)
    steps: list[Step] = [
        lambda: client.post(task_url(bid, tid, "discover"), headers=h),
        lambda: client.post(task_url(bid, tid, "resolve"), headers=h),
        lambda: client.post(task_url(bid, tid, "execute"), headers={**h, "Prefer": "wait=0"}),
        worker.start,
        lambda: worker.finish(503),  # retryable: the route's fallback gets the next run
        lambda: worker.finish(rng.choice([200, 400])),
    ]
    for _ in range(30):
        await walk.step(rng.choices(steps, weights=[2, 2, 2, 3, 3, 1])[0])
    for finishing in (*steps[:4], lambda: worker.finish(200)):  # whatever is left, to an outcome
        await walk.step(finishing)
    assert walk.seen[-1][1] is not None and walk.seen[-1][1]["status"] in ("succeeded", "failed")
    await walk.check()

    path = task_url(bid, tid)
    assert_problem(await client.get(path, headers=h, params={"version": 1, "asOf": "2026-01-01T00:00:00Z"}),
                   422, "AMBIGUOUS_POINT_IN_TIME")
    for stranger in (market["sellers"]["headers"], (await new_tenant(client, admin))["headers"]):
        assert_problem(await client.get(path, headers=stranger, params={"version": 1}), 404, "NOT_FOUND")
    other_machine = await buyer(client, h)  # the caller's, but not this task's machine
    assert_problem(await client.get(task_url(other_machine, tid), headers=h, params={"version": 1}),
                   404, "NOT_FOUND")
    assert (await client.get(path, headers=admin, params={"version": 1})).json() == walk.seen[0][1]


async def _same(r: httpx.Response) -> httpx.Response:
    return r


async def test_task_stream_is_the_buyers_with_secrets_left_out(
    client: httpx.AsyncClient, container: Container, market: dict[str, Any], admin: dict[str, str]
) -> None:
    h, bid = market["h"], market["buyer"]
    tid = (await submit(client, h, bid, market["cap"], constraints={"fallbacks": 1})).json()["id"]
    for action in ("discover", "resolve"):
        assert (await client.post(task_url(bid, tid, action), headers=h)).status_code in (200, 201)
    assert (await client.post(task_url(bid, tid, "execute"), headers={**h, "Prefer": "wait=0"})).status_code == 202
    worker = Worker(container, tid)
    await worker.start()
    await worker.finish(200)
    path = f"/v1/streams/{tid}/events"
    r = await client.get(path, headers=h)
    assert r.status_code == 200, r.text
    assert [e["type"] for e in r.json()["data"]] == [
        "task.created", "task.discovered", "task.resolved", "task.execution-requested", "task.run-started",
        "task.run-finished", "task.succeeded"]
    assert [e["version"] for e in r.json()["data"]] == list(range(1, 8))
    assert ENDPOINT_TOKEN not in r.text and ENDPOINT_URL not in r.text
    assert (await client.get(path, headers=admin)).json() == r.json()
    for stranger in (market["sellers"]["headers"], (await new_tenant(client, admin))["headers"]):
        assert_problem(await client.get(path, headers=stranger), 404, "NOT_FOUND")


def _policy_steps(client: httpx.AsyncClient, writer: dict[str, str], pid: str, rng: random.Random,
                  platform: bool) -> list[Step]:
    path = f"/v1/policies/{pid}"
    # A platform policy governs every account, other tests' included: it stays disabled.
    modes = ["disabled"] if platform else ["enforce", "shadow", "disabled"]
    return [
        lambda: client.patch(path, headers=writer, json={"name": f"p-{rng.randrange(4)}"}),  # may change nothing
        lambda: client.patch(path, headers=writer, json={"description": f"d{rng.randrange(99)}",
                                                         "mode": rng.choice(modes)}),
        lambda: client.patch(path, headers=writer, json={"rules": rng.choice(RULES)}),
        lambda: client.patch(path, headers=writer, json={"scope": rng.choice([
            {"type": "account"}, {"type": "labels", "labels": {"team": f"t{rng.randrange(3)}"}}])}),
    ]


@pytest.mark.parametrize("seed", [21, 22])
async def test_policy_walk(client: httpx.AsyncClient, tenant: dict[str, Any], admin: dict[str, str],
                           seed: int) -> None:
    rng, h = random.Random(seed), tenant["headers"]
    created = await client.post("/v1/policies", headers=h, json={"name": "p-0", "rules": [CAPS], "mode": "shadow"})
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    walk = Walk(client, h, uuid.UUID(pid), f"/v1/policies/{pid}")
    await walk.step(lambda: _same(created))
    steps = _policy_steps(client, h, pid, rng, platform=False)
    for _ in range(14):
        await walk.step(rng.choice(steps))
    await walk.check()
    assert_problem(await client.get(walk.path, headers=h, params={"version": 2, "asOf": "2026-01-01T00:00:00Z"}),
                   422, "AMBIGUOUS_POINT_IN_TIME")
    other = await new_tenant(client, admin)
    for path in (walk.path, f"/v1/streams/{pid}/events"):
        assert_problem(await client.get(path, headers=other["headers"], params={"version": 1}), 404, "NOT_FOUND")
    assert (await client.get(walk.path, headers=admin, params={"version": 1})).json() == walk.seen[0][1]
    events = (await client.get(f"/v1/streams/{pid}/events", headers=h)).json()["data"]
    assert events[0]["type"] == "policy.created" and {e["type"] for e in events[1:]} == {"policy.updated"}


async def test_platform_policy_walk_is_readable_by_every_account(
    client: httpx.AsyncClient, tenant: dict[str, Any], admin: dict[str, str]
) -> None:
    rng = random.Random(23)
    created = await client.post("/v1/policies", headers=admin,
                                json={"name": "p-0", "rules": [CAPS], "mode": "disabled", "platform": True})
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    # Written by the admin, read (live, as of, and its stream) by an ordinary tenant.
    walk = Walk(client, tenant["headers"], uuid.UUID(pid), f"/v1/policies/{pid}")
    await walk.step(lambda: _same(created))
    steps = _policy_steps(client, admin, pid, rng, platform=True)
    for _ in range(8):
        await walk.step(rng.choice(steps))
    await walk.check()
    assert all(body is not None and body["platform"] and body["mode"] == "disabled" for _, body in walk.seen)
