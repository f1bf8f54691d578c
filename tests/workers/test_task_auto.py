"""Auto tasks end to end (relay -> advance_auto_task: discover -> resolve -> request execution -> execute, through
the PostgreSQL broker and a real worker), resumption and idempotency, NO_ROUTE as a recorded failure, and a failing
seller cooled down by resolve."""

from __future__ import annotations

import uuid

import dramatiq
import msgspec
import pytest
from dramatiq.brokers.stub import StubBroker

from app.container import Container
from app.outbound.stub_seller import StubSeller
from app.services.task_sources import SellerReputation
from app.settings import Settings
from domain.machines.commands import ChangeStatus
from domain.policies.rules import AccountScope, SpendLimit
from domain.shared.money import Money
from domain.tasks.commands import Constraints, SellerRecord
from projections.policies import PoliciesProjection
from projections.runner import ProjectionRunner
from tests.conftest import TEST_SECRET_KEY
from tests.journeys import all_visible
from tests.workers.harness import worker_on
from tests.workers.tasks_market import (
    CAPABILITY,
    buyer,
    ctx,
    events,
    read_models,
    relay_until_finished,
    resolved,
    seller,
)
from workers import runtime

dramatiq.set_broker(StubBroker())  # actors bind at import; never let dramatiq pick a default broker here
from workers.tasks import execute_task  # noqa: E402
from workers.tasks_auto import advance_auto_task, advance_job  # noqa: E402

ACTORS = [execute_task, advance_auto_task]
PRIVATE_OK = Settings(secret_key=TEST_SECRET_KEY, allow_private_endpoints=True)


async def submit_auto(c: Container, buyer_ids: tuple[uuid.UUID, uuid.UUID], request_id: str | None = None,
                      **constraints: object) -> uuid.UUID:
    account, machine = buyer_ids
    submitting = msgspec.structs.replace(ctx(account), request_id=request_id)
    out = await c.tasks.submit(submitting, machine, capability=CAPABILITY, input={"text": "auto"},
                               constraints=Constraints(**constraints), auto=True)  # type: ignore[arg-type]
    return out.task.id


async def test_an_auto_task_runs_from_submission_to_its_outcome(c: Container, fresh_database: str,
                                                                stub: StubSeller) -> None:
    await seller(c, f"{stub.url}/echo", 100)
    manual = await resolved(c, await buyer(c), execute=False)  # not auto: the actors leave it resolved
    await read_models(c)
    task_id = await submit_auto(c, await buyer(c), request_id="req-auto-1")
    async with worker_on(fresh_database, fresh_database, ACTORS, settings=PRIVATE_OK) as (broker, worker):
        worker.start()
        task = await relay_until_finished(c, broker, task_id)
    assert task.status == "succeeded"
    recorded = await c.store.load(task_id)
    kinds = [e.type.removeprefix("tasks:Task.") for e in recorded]
    assert kinds == ["Submitted", "Discovered", "Resolved", "ExecutionRequested", "RunStarted", "RunFinished",
                     "Succeeded"]
    # One trace: every step the actor took is caused by the submission and carries its request's correlation id.
    assert {e.metadata.get("correlationId") for e in recorded} == {"req-auto-1"}
    assert {e.metadata.get("causationId") for e in recorded[1:]} == {str(recorded[0].event_id)}
    [finished] = await events(c, task_id, "RunFinished")
    assert finished["body"] == {"output": {"text": "auto"}} and stub.stats.total == 1
    assert (await c.tasks.load(manual.id)).status == "resolved"
    # One message drove the auto task: its own ExecutionRequested sent nothing more (it executes it itself).
    sent = [r["actor_name"] for r in await c.pool.fetch("SELECT actor_name FROM worker_messages WHERE state = 'done'")]
    assert sent == ["advance_auto_task"]


async def test_an_auto_task_with_no_route_fails_on_the_record(c: Container, fresh_database: str) -> None:
    task_id = await submit_auto(c, await buyer(c))  # nobody sells the capability
    async with worker_on(fresh_database, fresh_database, ACTORS, settings=PRIVATE_OK) as (broker, worker):
        worker.start()
        task = await relay_until_finished(c, broker, task_id)
    assert task.status == "failed"
    [failed] = await events(c, task_id, "Failed")
    assert failed["code"] == "NO_ROUTE" and failed["run_id"] is None
    assert "discovery found no listing" in failed["detail"]


async def test_a_redelivery_resumes_where_the_stream_stands_and_repeats_nothing(
    c: Container, fresh_database: str, stub: StubSeller
) -> None:
    runtime.use_database(fresh_database, PRIVATE_OK)
    await seller(c, f"{stub.url}/echo", 100)
    await read_models(c)
    account, machine = await buyer(c)
    task_id = await submit_auto(c, (account, machine))
    await c.tasks.discover(ctx(account), machine, task_id)  # a delivery (or a client) got this far, then died
    event_id = str(uuid.uuid4())
    for _ in range(3):  # the redelivered message, three times over
        await advance_job(str(task_id), event_id)
    kinds = [e.type.removeprefix("tasks:Task.") for e in await c.store.load(task_id)]
    assert kinds == ["Submitted", "Discovered", "Resolved", "ExecutionRequested", "RunStarted", "RunFinished",
                     "Succeeded"]
    assert stub.stats.total == 1


async def test_a_manual_task_is_not_advanced(c: Container, fresh_database: str, stub: StubSeller) -> None:
    runtime.use_database(fresh_database, PRIVATE_OK)
    await seller(c, f"{stub.url}/echo", 100)
    task = await resolved(c, await buyer(c), execute=False)
    await advance_job(str(task.id), str(uuid.uuid4()))
    assert (await c.tasks.load(task.id)).version == task.version


async def test_a_seller_that_keeps_failing_is_cooled_down_and_skipped_by_resolve(
    c: Container, fresh_database: str, stub: StubSeller
) -> None:
    flaky = await seller(c, f"{stub.url}/status/503", 100)  # cheapest: first on every route
    good = await seller(c, f"{stub.url}/echo", 200)
    buyer_ids = await buyer(c)
    async with worker_on(fresh_database, fresh_database, ACTORS, settings=PRIVATE_OK) as (broker, worker):
        worker.start()
        for _ in range(3):  # three consecutive failures (the policy's threshold), each saved by the fallback
            task = await resolved(c, buyer_ids)
            assert task.route is not None and task.route["steps"][0].seller_machine_id == flaky
            assert (await relay_until_finished(c, broker, task.id)).status == "succeeded"
        calls = stub.stats.total
        task = await resolved(c, buyer_ids)  # read_models folded the three failures into seller_stats
        assert task.route is not None
        assert [s.seller_machine_id for s in task.route["steps"]] == [good]
        [skipped] = task.route["excluded"]
        assert skipped.seller_machine_id == flaky and "cooling down" in skipped.reason
        assert (await relay_until_finished(c, broker, task.id)).status == "succeeded"
    assert stub.stats.total == calls + 1  # only the good seller was called


async def test_an_auto_task_judges_sellers_on_the_reputation_seller_stats_holds(
    c: Container, fresh_database: str, stub: StubSeller
) -> None:
    """The actor reads the sellers' records with the catalogue's listings (one statement fewer than asking
    seller_stats again): its route must hold what SellerReputation would have answered, a cooling-down seller
    left out and a seller with no record scored as one."""
    flaky = await seller(c, f"{stub.url}/status/503", 100)  # cheapest: first on every route
    good = await seller(c, f"{stub.url}/echo", 200)
    fresh = await seller(c, f"{stub.url}/echo", 300)  # never first on a route: no record
    buyer_ids = await buyer(c)
    async with worker_on(fresh_database, fresh_database, ACTORS, settings=PRIVATE_OK) as (broker, worker):
        worker.start()
        for _ in range(3):  # three consecutive failures (the policy's threshold), each saved by the fallback
            await read_models(c)
            finished = await relay_until_finished(c, broker, await submit_auto(c, buyer_ids))
            assert finished.status == "succeeded"
        await read_models(c)
        expected = await SellerReputation(c.pool).records([flaky, good, fresh])
        assert expected[flaky].cooling_down and fresh not in expected
        task = await relay_until_finished(c, broker, await submit_auto(c, buyer_ids))
    assert task.status == "succeeded" and task.route is not None
    assert [s.seller_machine_id for s in task.route["steps"]] == [good, fresh]
    [skipped] = task.route["excluded"]
    assert skipped.seller_machine_id == flaky and "cooling down" in skipped.reason
    [resolved_event] = await events(c, task.id, "Resolved")
    recorded = {uuid.UUID(s["candidate"]["seller_machine_id"]): s["record"] for s in resolved_event["ranked"]}
    assert recorded == {good: msgspec.to_builtins(expected[good]), fresh: msgspec.to_builtins(SellerRecord())}


@pytest.mark.parametrize("relayed_machine", [False, True], ids=["message-without-machine", "relay-sends-machine"])
async def test_an_auto_task_of_a_suspended_buyer_fails_on_the_record(c: Container, fresh_database: str,
                                                                    stub: StubSeller, relayed_machine: bool) -> None:
    """Whether the buyer machine is read with the task (the relay names it) or after it (older messages)."""
    runtime.use_database(fresh_database, PRIVATE_OK)
    await seller(c, f"{stub.url}/echo", 100)
    await read_models(c)
    account, machine = await buyer(c)
    task_id = await submit_auto(c, (account, machine))
    await c.machines.suspend(ctx(account), machine, ChangeStatus(reason="audit"))
    event_id = str(uuid.uuid4())
    for _ in range(2):
        await advance_job(str(task_id), event_id, None, str(machine) if relayed_machine else None)
    [failed] = await events(c, task_id, "Failed")
    assert failed["code"] == "MACHINE_NOT_ACTIVE" and stub.stats.total == 0


async def test_policies_judge_an_auto_tasks_resolve_and_a_refusal_fails_it_on_the_record(
    c: Container, fresh_database: str, stub: StubSeller
) -> None:
    """The actor resolves under the same guard as a client: a spend cap (defined after discovery, which would
    otherwise have dropped the listing with the policy's reason) refuses the route, the refusal is recorded
    (policy.denied) and the task fails with POLICY_DENIED; nothing is reserved and the seller is never called."""
    runtime.use_database(fresh_database, PRIVATE_OK)
    await seller(c, f"{stub.url}/echo", 100)
    await read_models(c)
    account, machine = await buyer(c)
    task_id = await submit_auto(c, (account, machine))
    await c.tasks.discover(ctx(account), machine, task_id)  # a delivery got this far, then the policy arrived
    cap = SpendLimit(amount=Money(50, "USD"), period="day")
    await c.policies.define(ctx(account), name="tight", description="", scope=AccountScope(), mode="enforce",
                            rules=[cap], platform=False)
    await all_visible(c)
    await ProjectionRunner(c.pool, c.store, []).catch_up(PoliciesProjection())
    await advance_job(str(task_id), str(uuid.uuid4()))
    task = await c.tasks.load(task_id)
    assert task.status == "failed" and task.outcome is not None and task.outcome["code"] == "POLICY_DENIED"
    assert "refuses this resolve: over the spend limit" in task.outcome["detail"], task.outcome["detail"]
    denied = await c.pool.fetch("SELECT data FROM events WHERE type = 'policies:PolicyDecision.Denied'")
    assert len(denied) == 1 and stub.stats.total == 0
    budgets = await c.pool.fetchval("SELECT count(*) FROM events WHERE type = 'policies:SpendBudget.Reserved'")
    assert budgets == 0  # nothing reserved for a route that was refused
