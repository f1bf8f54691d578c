"""Conventions of the OpenAPI document that bind every route, including ones added later."""

from __future__ import annotations

import inspect
import re
from collections import Counter
from typing import Any

import httpx
import pytest
from litestar.routes import HTTPRoute

from app.api.app import create_app
from app.container import Container
from tests.api.helpers import Keys, assert_problem

PROBLEM = "#/components/schemas/Problem"
METHODS = ("get", "put", "post", "delete", "patch")


@pytest.fixture
async def document(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    spec: dict[str, Any] = r.json()
    return spec


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in document["paths"].items()
            for method, op in item.items() if method in METHODS]


def test_every_handler_names_its_operation_explicitly(container: Container) -> None:
    """operationIds are chosen per handler (operation_id=...), never derived from paths or function names."""
    app = create_app(container.settings, container=container)
    missing = [f"{sorted(h.http_methods)} {route.path}" for route in app.routes if isinstance(route, HTTPRoute)
               for h in route.route_handlers
               if h.resolve_include_in_schema() and not isinstance(h.operation_id, str)]
    assert not missing, f"give these handlers operation_id='camelCaseName': {missing}"


async def test_operation_ids_are_unique_camel_case(document: dict[str, Any]) -> None:
    ids = [op.get("operationId", "") for _, _, op in _operations(document)]
    assert len(ids) > 30
    assert [i for i in ids if not re.fullmatch(r"[a-z][a-z]+(?:[A-Z][a-z0-9]+)+|[a-z]+", i)] == []
    assert [i for i, n in Counter(ids).items() if n > 1] == []
    # A few of the names clients and docs rely on.
    assert {"activateMachine", "listMachines", "getMachine", "createGraphNode", "listAuditEvents"} <= set(ids)


async def test_component_names_are_plain(document: dict[str, Any]) -> None:
    names = list(document["components"]["schemas"])
    assert [n for n in names if not re.fullmatch(r"[A-Z][A-Za-z0-9]*", n)] == []
    assert {"MachinePage", "AuditEventPage", "NodeStatus", "Problem"} <= set(names)


async def test_every_error_response_is_a_problem(document: dict[str, Any]) -> None:
    for path, method, op in _operations(document):
        responses = op["responses"]
        assert {"431", "503"} <= set(responses), (method, path)  # oversized headers; database outage
        for status, response in responses.items():
            if int(status) < 400 or (path, status) == ("/ready", "503"):  # readiness reports its checks
                continue
            content = response.get("content", {})
            assert list(content) == ["application/problem+json"], (method, path, status)
            media = content["application/problem+json"]
            assert media["schema"] == {"$ref": PROBLEM}, (method, path, status)
            examples = [e["value"] for e in media.get("examples", {}).values()]
            assert examples and all(e["status"] == int(status) for e in examples), (method, path, status)
        retry_after = responses["503"].get("headers", {}).get("Retry-After")
        assert retry_after and retry_after["schema"]["type"] == "integer", (method, path)


async def test_problem_schema_is_fixed_and_bounded(document: dict[str, Any]) -> None:
    problem = document["components"]["schemas"]["Problem"]
    assert problem["properties"]["status"] | {"minimum": 100, "maximum": 599} == problem["properties"]["status"]
    assert "examples" not in problem or all(100 <= e["status"] <= 599 for e in problem["examples"])


def _header_params(op: dict[str, Any]) -> set[str]:
    return {p["name"] for p in op.get("parameters", []) if p["in"] == "header"}


async def test_headers_are_documented(document: dict[str, Any]) -> None:
    ops = {op["operationId"]: (path, method, op) for path, method, op in _operations(document)}
    for _path, method, op in ops.values():
        assert "X-Request-Id" in _header_params(op), op["operationId"]
        for status, response in op["responses"].items():
            assert "X-Request-Id" in response.get("headers", {}), (op["operationId"], status)
        if method == "post":
            assert "Idempotency-Key" in _header_params(op), op["operationId"]
    for op_id in ("reviseMachine", "activateMachine", "putRuntimeEndpoint", "reviseGraphNode", "deleteGraphEdge"):
        assert "If-Match" in _header_params(ops[op_id][2]), op_id
    for op_id in ("getMachine", "listMachines", "listAuditEvents", "getGraph", "getGraphNode", "listAgents"):
        assert "X-Min-Position" in _header_params(ops[op_id][2]), op_id
    created = ops["registerMachine"][2]["responses"]["201"]["headers"]
    assert {"ETag", "X-Log-Position", "Location", "Idempotent-Replayed"} <= set(created)
    assert created["Location"]["required"] and created["ETag"]["required"]
    assert "ETag" in ops["getMachine"][2]["responses"]["200"]["headers"]


async def test_request_bodies_refuse_unknown_fields_in_the_schema(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    bodies = set()
    for _, _, op in _operations(document):
        for media in op.get("requestBody", {}).get("content", {}).values():
            ref = media["schema"].get("$ref") or next(
                (b["$ref"] for b in media["schema"].get("anyOf", []) + media["schema"].get("oneOf", []) if "$ref" in b),
                None)
            assert ref, op["operationId"]
            bodies.add(ref.rsplit("/", 1)[1])
    assert len(bodies) >= 10
    for name in bodies | {"HeartbeatEndpoint"}:
        assert schemas[name].get("additionalProperties") is False, name


def _array(schema: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in [schema, *schema.get("anyOf", [])] if s.get("type") == "array")


async def test_server_rules_are_in_the_schema(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    public_key = schemas["RegisterMachineRequest"]["properties"]["publicKey"]
    assert re.fullmatch(public_key["pattern"], Keys().public_b64)
    assert not re.fullmatch(public_key["pattern"], "A" * 43)
    labels = schemas["RegisterMachineRequest"]["properties"]["labels"]
    assert labels["propertyNames"]["pattern"] and labels["maxProperties"] == 32
    assert schemas["EnrollAgentRequest"]["properties"]["allowedProviderKeys"]["items"]["pattern"]
    params = {(op["operationId"], p["name"]): p["schema"] for _, _, op in _operations(document)
              for p in op.get("parameters", [])}
    assert params[("getRuntimeEndpoint", "provider_key")]["pattern"]
    assert _array(params[("listMachines", "label")])["items"]["pattern"]
    assert _array(params[("listAuditEvents", "type")])["items"]["pattern"]


async def test_nullable_enums_share_one_component(document: dict[str, Any]) -> None:
    text = str(document["components"]["schemas"])
    assert text.count("'degraded'") == 1  # the NodeStatus component alone spells out the values
    status = document["components"]["schemas"]["ReviseNodeRequest"]["properties"]["status"]
    assert {"$ref": "#/components/schemas/NodeStatus"} in status["anyOf"]


async def test_links_name_real_operations_and_parameters(document: dict[str, Any]) -> None:
    by_id = {op["operationId"]: (path, op) for path, _, op in _operations(document)}
    count = 0
    for _, _, op in _operations(document):
        for response in op["responses"].values():
            for link in response.get("links", {}).values():
                path, _target = by_id[link["operationId"]]
                for name in link["parameters"]:
                    assert "{" + name + "}" in path, (op["operationId"], link)
                count += 1
    assert count >= 35


async def test_validation_errors_name_wire_names(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    r = await client.get("/v1/audit-events", params={"type": "Not A Type"}, headers=tenant["headers"])
    body = assert_problem(r, 400, "VALIDATION_ERROR")
    assert [e["key"] for e in body["errors"]] == ["type"], body
    r = await client.get("/v1/audit-events", params={"machineId": "nope"}, headers=tenant["headers"])
    assert [e["key"] for e in assert_problem(r, 400, "VALIDATION_ERROR")["errors"]] == ["machineId"]
    r = await client.post("/v1/machines", json={"name": "m", "publicKey": "short"}, headers=tenant["headers"])
    body = assert_problem(r, 400, "VALIDATION_ERROR")
    assert [e["key"] for e in body["errors"]] == ["publicKey"] and "publicKey" in body["detail"]


def test_declared_headers_match_what_the_handlers_do(container: Container) -> None:
    """A handler that reads If-Match or X-Min-Position, or sets Location, says so in opt=headers(...);
    and none declares what it does not do. (ETag and X-Log-Position, where declared required, are
    verified on live responses by the contract tests.)"""
    app = create_app(container.settings, container=container)
    checked = 0
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for h in route.route_handlers:
            if not h.resolve_include_in_schema():
                continue
            source = inspect.getsource(h.fn)
            declared = h.opt.get("openapi_headers", {})
            honours, sends = set(declared.get("honours", ())), set(declared.get("sends", ()))
            assert ("expected_version(" in source) == ("If-Match" in honours), h.operation_id
            reads_after = "honour_min_position(" in source or "readable_machine(" in source
            assert reads_after == ("X-Min-Position" in honours), h.operation_id
            assert ("Location" in source) == ("Location" in sends), h.operation_id
            checked += 1
    assert checked > 30
