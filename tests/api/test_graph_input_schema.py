"""A capability node's inputSchema must be a valid JSON Schema: refused with 422 at create and revise, never a 500."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.helpers import active_machine, assert_problem

CAPABILITY = {"name": "translate", "price": {"amount": 10, "currency": "USD"}, "providerKey": "p1"}
BAD_SCHEMAS = [{"type": "no-such-type"}, {"properties": []}, {"required": "text"}, {"minLength": -1},
               {"type": "object", "properties": {"text": {"type": 7}}}]


async def test_an_invalid_input_schema_is_refused(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    mid = (await active_machine(client, h)).json()["id"]
    url = f"/v1/machines/{mid}/graph/nodes"
    for schema in BAD_SCHEMAS:
        r = await client.post(url, headers=h, json={"type": "capability", "label": "c", "status": "active",
                                                   "data": {**CAPABILITY, "inputSchema": schema}})
        body = assert_problem(r, 422, "VALIDATION_ERROR")
        assert "inputSchema is not a valid JSON Schema" in body["detail"], body
        assert body["extra"] == {"field": "data.inputSchema"}
    ok = await client.post(url, headers=h, json={"type": "capability", "label": "c", "data": {
        **CAPABILITY, "inputSchema": {"type": "object", "required": ["text"]}}})
    assert ok.status_code == 201, ok.text
    node = f"{url}/{ok.json()['id']}"
    r = await client.patch(node, headers=h, json={"data": {"inputSchema": {"type": "nope"}}})
    assert_problem(r, 422, "VALIDATION_ERROR")
    # Other node types keep free-form data: an inputSchema there means nothing to discovery.
    other = await client.post(url, headers=h, json={"type": "tool", "label": "t",
                                                    "data": {"inputSchema": {"type": "nope"}}})
    assert other.status_code == 201, other.text
    r = await client.patch(f"{url}/{other.json()['id']}", headers=h, json={"type": "capability", "data": CAPABILITY})
    assert_problem(r, 422, "VALIDATION_ERROR")  # it would become a capability with that schema
    r = await client.patch(node, headers=h, json={"label": "renamed"})
    assert r.status_code == 200, r.text
