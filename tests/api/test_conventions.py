"""Cross-cutting HTTP conventions: idempotent POSTs, problem details, request ids, operational endpoints."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest

from app.api.problems import STATUS_OF, status_for
from app.container import Container
from domain.accounts import errors as account_errors
from domain.machines import errors as machine_errors
from domain.policies import errors as policy_errors
from domain.shared import errors as shared
from tests.api.helpers import Keys, assert_problem, fresh, register


async def _registered_events(container: Container, machine_id: str) -> int:
    count: int = await container.pool.fetchval(
        "SELECT count(*) FROM events WHERE stream_id = $1 AND type = 'machines:Machine.Registered'",
        uuid.UUID(machine_id),
    )
    return count


# --- Idempotency-Key -----------------------------------------------------------------------------


async def test_a_retried_post_replays_the_original_response(
    client: httpx.AsyncClient, tenant: dict[str, Any], container: Container
) -> None:
    h = {**tenant["headers"], "Idempotency-Key": f"reg-{uuid.uuid4()}"}
    payload = {"name": "once", "publicKey": Keys().public_b64}
    first = await client.post("/v1/machines", json=payload, headers=h)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    second = await client.post("/v1/machines", json=payload, headers=h)
    assert second.status_code == 201
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json() == first.json()
    for header in ("location", "etag", "x-log-position", "content-type"):
        assert second.headers[header] == first.headers[header], header
    assert second.headers["x-request-id"] != first.headers["x-request-id"]  # a new request, an old answer

    mid = first.json()["id"]
    assert await _registered_events(container, mid) == 1
    audit = await client.get("/v1/audit-events", params={"machineId": mid, "type": "machine.registered"},
                             headers={**tenant["headers"], "X-Min-Position": first.headers["x-log-position"]})
    assert len(audit.json()["data"]) == 1
    listed = await client.get("/v1/machines", headers=fresh(tenant["headers"], first))
    assert [m["id"] for m in listed.json()["data"]] == [mid]


async def test_the_same_key_with_another_body_is_422(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h = {**tenant["headers"], "Idempotency-Key": f"reg-{uuid.uuid4()}"}
    keys = Keys()
    first = await client.post("/v1/machines", json={"name": "a", "publicKey": keys.public_b64}, headers=h)
    assert first.status_code == 201
    other = await client.post("/v1/machines", json={"name": "b", "publicKey": keys.public_b64}, headers=h)
    assert_problem(other, 422, "IDEMPOTENCY_KEY_REUSED")
    elsewhere = await client.post(f"/v1/machines/{first.json()['id']}/identity/challenge", headers=h)
    assert_problem(elsewhere, 422, "IDEMPOTENCY_KEY_REUSED")


async def test_concurrent_identical_posts_create_one_machine(
    client: httpx.AsyncClient, tenant: dict[str, Any], container: Container
) -> None:
    h = {**tenant["headers"], "Idempotency-Key": f"race-{uuid.uuid4()}"}
    payload = {"name": "racer", "publicKey": Keys().public_b64, "labels": {"race": "yes"}}
    responses = await asyncio.gather(*[client.post("/v1/machines", json=payload, headers=h) for _ in range(8)])
    created = [r for r in responses if r.status_code == 201]
    assert created, [r.text for r in responses]
    for r in responses:  # the losers either got the stored answer or were told to retry
        if r.status_code != 201:
            assert_problem(r, 409, "IDEMPOTENCY_KEY_IN_PROGRESS")
    assert len({r.json()["id"] for r in created}) == 1
    assert await _registered_events(container, created[0].json()["id"]) == 1
    later = await client.post("/v1/machines", json=payload, headers=h)
    assert later.status_code == 201 and later.json()["id"] == created[0].json()["id"]
    listed = await client.get("/v1/machines", params={"label": "race"}, headers=fresh(tenant["headers"], later))
    assert len(listed.json()["data"]) == 1


async def test_keys_are_scoped_to_the_account(
    client: httpx.AsyncClient, tenant: dict[str, Any], admin: dict[str, str]
) -> None:
    key = f"shared-{uuid.uuid4()}"
    payload = {"name": "same", "publicKey": Keys().public_b64}
    mine = await client.post("/v1/machines", json=payload, headers={**tenant["headers"], "Idempotency-Key": key})
    theirs = await client.post("/v1/machines", json=payload, headers={**admin, "Idempotency-Key": key})
    assert mine.status_code == theirs.status_code == 201
    assert "idempotent-replayed" not in theirs.headers
    assert mine.json()["id"] != theirs.json()["id"]


async def test_a_refusal_is_replayed_too(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h = {**tenant["headers"], "Idempotency-Key": f"bad-{uuid.uuid4()}"}
    payload = {"name": "m", "publicKey": "short"}
    first = await client.post("/v1/machines", json=payload, headers=h)
    assert_problem(first, 400, "VALIDATION_ERROR")
    second = await client.post("/v1/machines", json=payload, headers=h)
    assert second.headers["idempotent-replayed"] == "true"
    replayed = assert_problem(second, 400, "VALIDATION_ERROR")  # its requestId is this request's
    assert {k: v for k, v in replayed.items() if k != "requestId"} == {
        k: v for k, v in first.json().items() if k != "requestId"}


async def test_idempotent_challenge_replays_the_same_nonce(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    r, _ = await register(client, tenant["headers"])
    h = {**tenant["headers"], "Idempotency-Key": f"ch-{uuid.uuid4()}"}
    url = f"/v1/machines/{r.json()['id']}/identity/challenge"
    first, second = await client.post(url, headers=h), await client.post(url, headers=h)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()


@pytest.fixture
def query_keys_allowed(container: Container) -> Iterator[None]:
    saved = container.settings
    container.settings = msgspec.structs.replace(saved, allow_query_api_key=True)
    try:
        yield
    finally:
        container.settings = saved


async def test_a_query_string_key_gets_idempotency_too(
    client: httpx.AsyncClient, tenant: dict[str, Any], container: Container, query_keys_allowed: None
) -> None:
    key = tenant["headers"]["Authorization"].removeprefix("Bearer ")
    payload = {"name": "by-query", "publicKey": Keys().public_b64}
    h = {"Idempotency-Key": f"q-{uuid.uuid4()}"}
    first = await client.post("/v1/machines", params={"api_key": key}, json=payload, headers=h)
    assert first.status_code == 201, first.text
    second = await client.post("/v1/machines", params={"api_key": key}, json=payload, headers=h)
    assert second.headers.get("idempotent-replayed") == "true"
    assert second.json()["id"] == first.json()["id"]


async def test_unauthenticated_posts_with_a_key_are_401(client: httpx.AsyncClient) -> None:
    h = {"Idempotency-Key": "anon", "Authorization": "Bearer mm_wrong"}
    assert_problem(await client.post("/v1/machines", json={}, headers=h), 401, "UNAUTHORIZED")
    assert_problem(await client.post("/v1/machines", json={}, headers={"Idempotency-Key": "anon"}),
                   401, "UNAUTHORIZED")


async def test_an_overlong_idempotency_key_is_400(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h = {**tenant["headers"], "Idempotency-Key": "k" * 256}
    r = await client.post("/v1/machines", json={"name": "m", "publicKey": Keys().public_b64}, headers=h)
    assert_problem(r, 400, "VALIDATION_ERROR")


# --- problem details and request ids -------------------------------------------------------------


async def test_an_incoming_request_id_is_echoed(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    rid = f"client-{uuid.uuid4().hex}"
    ok = await client.get("/v1/machines", headers={**tenant["headers"], "X-Request-Id": rid})
    assert ok.status_code == 200 and ok.headers["x-request-id"] == rid
    bad = await client.get(f"/v1/machines/{uuid.uuid4()}", headers={**tenant["headers"], "X-Request-Id": rid})
    assert assert_problem(bad, 404, "NOT_FOUND")["requestId"] == rid


@pytest.mark.parametrize("rid", ["has spaces", "x" * 129, "semi;colon", ""])
async def test_an_unusable_request_id_is_replaced(client: httpx.AsyncClient, rid: str) -> None:
    r = await client.get("/health", headers={"X-Request-Id": rid})
    assert r.headers["x-request-id"] and r.headers["x-request-id"] != rid


async def test_every_response_carries_one_request_id(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    seen = set()
    for path in ("/health", "/v1/accounts/me", "/openapi.json", "/nope"):
        r = await client.get(path, headers=admin)
        assert len(r.headers.get_list("x-request-id")) == 1, path
        seen.add(r.headers["x-request-id"])
    assert len(seen) == 4


async def test_unknown_route_is_a_404_problem(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    assert_problem(await client.get("/v1/nothing-here", headers=admin), 404, "NOT_FOUND")
    assert_problem(await client.get("/v1/machines/not-a-uuid", headers=admin), 404, "NOT_FOUND")


async def test_wrong_method_is_a_405_problem(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    r = await client.delete("/v1/machines", headers=admin)
    assert_problem(r, 405, "METHOD_NOT_ALLOWED")
    assert {m.strip() for m in r.headers["allow"].split(",")} >= {"GET", "POST"}
    assert_problem(await client.put(f"/v1/machines/{uuid.uuid4()}", json={}, headers=admin),
                   405, "METHOD_NOT_ALLOWED")


async def test_problem_bodies_are_rfc_9457(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    r = await client.get(f"/v1/machines/{uuid.uuid4()}", headers=tenant["headers"])
    body = assert_problem(r, 404, "NOT_FOUND")
    assert body["type"].endswith("/not-found") and body["title"] == "Not Found"
    assert body["instance"] == r.request.url.path


def test_every_domain_error_has_its_own_status() -> None:
    """A new domain error that nobody mapped would silently become a 400."""
    errors = [shared.ValidationFailed, shared.NotFound, shared.PermissionDenied, shared.ConcurrencyConflict,
              shared.InvalidTransition, shared.PreconditionFailed, account_errors.ApiKeyNotFound,
              *[c for module in (machine_errors, policy_errors) for c in vars(module).values()
                if isinstance(c, type) and issubclass(c, shared.DomainError) and c not in (
                    shared.DomainError, shared.NotFound)]]
    for cls in errors:
        assert any(k in STATUS_OF for k in cls.__mro__), cls
        if cls.code == "NOT_FOUND":
            assert status_for(cls("x")) == 404, cls


# --- operational endpoints -----------------------------------------------------------------------


async def test_health(client: httpx.AsyncClient) -> None:
    r = await client.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


async def test_ready_reports_its_checks(client: httpx.AsyncClient) -> None:
    r = await client.get("/ready")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ready"
    checks = {c["name"]: c for c in body["checks"]}
    assert checks["database"]["ok"] and checks["broker"]["ok"]
    for name in ("accounts", "audit", "machines"):
        assert checks[f"projection:{name}"]["ok"], checks


async def test_metrics_exposes_lag_and_request_counts(client: httpx.AsyncClient) -> None:
    await client.get("/health")
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'mm_projection_lag_events{projection="machines"}' in text
    assert "mm_projection_lag_seconds" in text and "mm_oldest_write_transaction_seconds" in text
    assert 'mm_http_requests_total{method="GET",route="/health",status="200"}' in text
    await client.get("/no-such-route")
    text = (await client.get("/metrics")).text
    assert 'mm_http_requests_total{method="GET",route="unmatched",status="404"}' in text


async def test_openapi_describes_the_api(client: httpx.AsyncClient) -> None:
    r = await client.get("/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    spec = r.json()
    assert spec["openapi"].startswith("3.")
    assert "/v1/machines" in spec["paths"] and "/v1/audit-events" in spec["paths"]
    register = spec["paths"]["/v1/machines"]["post"]
    assert {"201", "400", "401", "422"} <= set(register["responses"])
    assert "application/problem+json" in register["responses"]["400"]["content"]
    assert "/openapi.json" not in spec["paths"]


async def test_routes_document_the_problems_they_can_return(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path, operations in paths.items():
        if not path.startswith("/v1/"):
            continue
        for method, op in operations.items():
            documented = set(op["responses"])
            assert "401" in documented, (method, path)  # every /v1 route needs a key
            if method == "post":  # body validation and Idempotency-Key refusals
                assert {"400", "409", "422"} <= documented, (method, path)
            if method == "get" and (path.startswith("/v1/machines") or path == "/v1/audit-events"):
                assert {"400", "503"} <= documented, (method, path)  # a bad or unreached X-Min-Position


async def test_docs_serve_html(client: httpx.AsyncClient) -> None:
    r = await client.get("/docs", follow_redirects=True)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html") and "<html" in r.text.lower()


async def _forget_stored_response(container: Container, account_id: str, key: str) -> None:
    """What an expired (or never stored, after a crash) idempotency record looks like to a retry."""
    await container.pool.execute("DELETE FROM idempotency_keys WHERE account_id = $1 AND key = $2",
                                 uuid.UUID(account_id), key)


async def test_a_retry_after_the_stored_response_is_gone_answers_with_what_was_recorded(
    client: httpx.AsyncClient, tenant: dict[str, Any], container: Container
) -> None:
    r, keys = await register(client, tenant["headers"])
    mid = r.json()["id"]
    key = f"ch-{uuid.uuid4()}"
    h = {**tenant["headers"], "Idempotency-Key": key}
    first = await client.post(f"/v1/machines/{mid}/identity/challenge", headers=h)
    await _forget_stored_response(container, tenant["id"], key)
    retry = await client.post(f"/v1/machines/{mid}/identity/challenge", headers=h)
    assert retry.status_code == 201, retry.text
    assert retry.json()["nonce"] == first.json()["nonce"]  # the recorded challenge, not an unsaved new one
    c = retry.json()
    v = await client.post(f"/v1/machines/{mid}/identity/verify", headers=tenant["headers"],
                          json={"challengeId": c["challengeId"], "signature": keys.sign(c["nonce"])})
    assert v.status_code == 200, v.text


async def test_a_retried_key_issue_never_hands_out_a_key_that_was_not_stored(
    client: httpx.AsyncClient, tenant: dict[str, Any], container: Container
) -> None:
    key = f"issue-{uuid.uuid4()}"
    h = {**tenant["headers"], "Idempotency-Key": key}
    url = f"/v1/accounts/{tenant['id']}/api-keys"
    first = await client.post(url, json={"label": "once"}, headers=h)
    assert first.status_code == 201
    await _forget_stored_response(container, tenant["id"], key)
    retry = await client.post(url, json={"label": "once"}, headers=h)
    assert_problem(retry, 409, "CONCURRENCY_CONFLICT")
    keys = await client.get(url, headers=tenant["headers"])
    assert [k["label"] for k in keys.json()].count("once") == 1
    assert (await client.get("/v1/accounts/me", headers={"X-Api-Key": first.json()["key"]})).status_code == 200


async def test_cors_is_configurable(container: Container) -> None:
    from app.api.app import create_app

    settings = msgspec.structs.replace(container.settings, cors_origins=("https://ui.example",))
    app = create_app(settings, container=container)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        allowed = await c.options("/v1/machines", headers={
            "Origin": "https://ui.example", "Access-Control-Request-Method": "POST"})
        other = await c.options("/v1/machines", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert allowed.headers.get("access-control-allow-origin") == "https://ui.example"
    assert "access-control-allow-origin" not in other.headers
