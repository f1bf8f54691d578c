"""Task execution through a real broker, a real worker and a real stub seller over HTTP: every outcome a seller
can cause, the SSRF guard, and no doubled call on redelivery."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from app.container import Container
from app.outbound.stub_seller import StubSeller
from app.settings import Settings
from domain.shared.context import CommandContext
from tests.conftest import TEST_SECRET_KEY
from tests.workers.harness import broker_url_for, eventually, worker_on
from tests.workers.tasks_market import TOKEN, buyer, ctx, events, relay_until_finished, resolved, seller
from workers import runtime

dramatiq.set_broker(StubBroker())  # actors bind at import; never let dramatiq pick a default broker here
from workers.tasks import execute_job, execute_task  # noqa: E402
from workers.tasks_auto import advance_auto_task  # noqa: E402

ACTORS = [execute_task, advance_auto_task]
PRIVATE_OK = Settings(secret_key=TEST_SECRET_KEY, allow_private_endpoints=True)
ADMIN = CommandContext(at=datetime.now(UTC), actor="test", is_admin=True)


@pytest.mark.parametrize("kind", ["postgresql", "rabbitmq"])
async def test_success_calls_the_seller_once_with_its_token_and_the_run_id(
    c: Container, fresh_database: str, stub: StubSeller, kind: str
) -> None:
    await seller(c, f"{stub.url}/echo", 100)
    task = await resolved(c, await buyer(c), {"text": "hello"})
    # RabbitMQ is shared by every test run on this host: a queue of our own, and the message sent directly.
    async with worker_on(broker_url_for(kind, fresh_database), fresh_database, ACTORS, settings=PRIVATE_OK,
                         private_queues=kind == "rabbitmq") as (broker, worker):
        worker.start()
        if kind == "rabbitmq":
            execute_task.send(str(task.id), str(uuid.uuid4()))
            assert await eventually(lambda: _finished(c, task.id), 30)
        else:
            await relay_until_finished(c, broker, task.id)
    done = await c.tasks.load(task.id)
    assert done.status == "succeeded"
    [finished] = await events(c, task.id, "RunFinished")
    raw = json.dumps({"output": {"text": "hello"}}).encode()
    assert finished["succeeded"] and finished["http_status"] == 200 and finished["error_class"] is None
    assert finished["body"] == {"output": {"text": "hello"}}
    assert finished["response_digest"] == hashlib.sha256(raw).hexdigest()
    run_id = finished["run_id"]
    assert stub.stats.calls(run_id) == 1 and stub.stats.total == 1
    assert stub.stats.authorizations == [f"Bearer {TOKEN}"]
    [request] = stub.stats.requests
    assert request["method"] == "POST" and json.loads(request["body"]) == {"text": "hello"}


async def _finished(c: Container, task_id: uuid.UUID) -> bool:
    return (await c.tasks.load(task_id)).status in {"succeeded", "failed"}


async def run_to_end(c: Container, dsn: str, task_id: uuid.UUID, settings: Settings = PRIVATE_OK) -> None:
    async with worker_on(dsn, dsn, ACTORS, settings=settings) as (broker, worker):
        worker.start()
        await relay_until_finished(c, broker, task_id)


async def test_a_sellers_4xx_fails_the_task_with_its_status_and_body_and_no_fallback(
    c: Container, fresh_database: str, stub: StubSeller
) -> None:
    await seller(c, f"{stub.url}/status/422", 100)
    await seller(c, f"{stub.url}/echo", 200)  # a fallback: not tried, the input itself was refused
    task = await resolved(c, await buyer(c), {"text": "bad"})
    await run_to_end(c, fresh_database, task.id)
    [failed] = await events(c, task.id, "Failed")
    assert (failed["code"], failed["http_status"]) == ("UPSTREAM_REJECTED", 422)
    [finished] = await events(c, task.id, "RunFinished")
    assert finished["error_class"] == "http-4xx" and not finished["retryable"]
    assert finished["body"] == {"error": "stub-status", "status": 422, "input": {"text": "bad"}}
    assert stub.stats.total == 1


async def test_a_5xx_moves_to_the_fallback_which_succeeds(c: Container, fresh_database: str,
                                                         stub: StubSeller) -> None:
    failing = await seller(c, f"{stub.url}/status/503", 100)
    working = await seller(c, f"{stub.url}/echo", 200)
    task = await resolved(c, await buyer(c))
    await run_to_end(c, fresh_database, task.id)
    assert (await c.tasks.load(task.id)).status == "succeeded"
    first, second = await events(c, task.id, "RunFinished")
    assert (first["seller_machine_id"], first["http_status"], first["error_class"], first["retryable"]) == (
        str(failing), 503, "http-5xx", True)
    assert (second["seller_machine_id"], second["succeeded"]) == (str(working), True)
    assert first["run_id"] != second["run_id"]
    assert [stub.stats.calls(first["run_id"]), stub.stats.calls(second["run_id"])] == [1, 1]


async def test_a_slow_seller_times_out(c: Container, fresh_database: str, stub: StubSeller) -> None:
    await seller(c, f"{stub.url}/sleep/3000/echo", 100)
    task = await resolved(c, await buyer(c), fallbacks=0, timeout_ms=300)
    await run_to_end(c, fresh_database, task.id)
    [failed] = await events(c, task.id, "Failed")
    assert failed["code"] == "UPSTREAM_TIMEOUT"
    [finished] = await events(c, task.id, "RunFinished")
    assert finished["error_class"] == "timeout" and finished["http_status"] is None
    assert 250 <= finished["latency_ms"] < 2500


async def test_ssrf_refusals_are_failed_runs_and_nothing_is_sent(c: Container, fresh_database: str,
                                                                 stub: StubSeller) -> None:
    # The flag off (as `mm worker` defaults): a name resolving to loopback, and the cloud metadata address.
    await seller(c, f"http://localhost:{stub.port}/echo", 100)
    await seller(c, "http://169.254.169.254/latest/meta-data/", 200)
    task = await resolved(c, await buyer(c), fallbacks=1)
    await run_to_end(c, fresh_database, task.id, Settings(secret_key=TEST_SECRET_KEY))
    runs = await events(c, task.id, "RunFinished")
    assert [(r["error_class"], r["http_status"], r["succeeded"]) for r in runs] == [("ssrf-refused", None, False)] * 2
    [failed] = await events(c, task.id, "Failed")
    assert failed["code"] == "UPSTREAM_FAILED"
    assert stub.stats.total == 0


async def test_metadata_address_is_refused_even_with_private_endpoints_allowed(
    c: Container, fresh_database: str
) -> None:
    await seller(c, "http://169.254.169.254/latest/meta-data/", 100)
    task = await resolved(c, await buyer(c), fallbacks=0)
    await run_to_end(c, fresh_database, task.id)
    [run] = await events(c, task.id, "RunFinished")
    assert run["error_class"] == "ssrf-refused"


async def test_unusable_answers_and_a_gone_endpoint_are_retryable_failed_runs(
    c: Container, fresh_database: str, stub: StubSeller
) -> None:
    gone = await seller(c, f"{stub.url}/echo", 100)
    await seller(c, f"{stub.url}/big/16", 200)  # 200 with a body that is not JSON
    await seller(c, f"{stub.url}/big", 300)  # past the 1 MiB cap
    await seller(c, f"{stub.url}/echo", 400)
    task = await resolved(c, await buyer(c), fallbacks=3)
    await c.runtime.delete(ADMIN, gone, "stub")  # gone after the route was resolved
    await run_to_end(c, fresh_database, task.id)
    runs = await events(c, task.id, "RunFinished")
    assert [r["error_class"] for r in runs] == ["endpoint-unavailable", "invalid-json", "response-too-large", None]
    assert runs[1]["body"] == "x" * 16 and runs[1]["http_status"] == 200
    assert runs[2]["http_status"] == 200 and runs[2]["body"] is None
    assert (await c.tasks.load(task.id)).status == "succeeded"


async def test_a_redelivered_message_does_not_call_the_seller_twice(c: Container, fresh_database: str,
                                                                   stub: StubSeller) -> None:
    runtime.use_database(fresh_database, PRIVATE_OK)
    await seller(c, f"{stub.url}/echo", 100)
    task = await resolved(c, await buyer(c))
    event_id = str(uuid.uuid4())
    for _ in range(3):  # redelivery is normal: the first delivery settles the task, the others find it settled
        await execute_job(str(task.id), event_id)
    [run] = await events(c, task.id, "RunStarted")
    assert stub.stats.calls(run["run_id"]) == 1 and stub.stats.total == 1
    assert len(await events(c, task.id, "RunFinished")) == 1 and len(await events(c, task.id, "Succeeded")) == 1


async def test_a_redelivery_of_an_open_run_resends_it_under_the_same_key(c: Container, fresh_database: str,
                                                                          stub: StubSeller) -> None:
    runtime.use_database(fresh_database, PRIVATE_OK)
    await seller(c, f"{stub.url}/echo", 100)
    task = await resolved(c, await buyer(c))
    # A worker recorded the run and died before (or while) calling: the run is open.
    _, opened = await c.tasks.next_run(ctx(), task.id)
    assert opened is not None
    await execute_job(str(task.id), str(uuid.uuid4()))
    [started] = await events(c, task.id, "RunStarted")
    assert started["run_id"] == str(opened["run_id"])
    assert stub.stats.by_key == {str(opened["run_id"]): 1}
    assert (await c.tasks.load(task.id)).status == "succeeded"
