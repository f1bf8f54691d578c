from typing import Any

import httpx


async def test_register_and_get(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    r = await client.post("/v1/machines", json={"name": "m1", "publicKey": "A" * 43 + "="}, headers=tenant["headers"])
    assert r.status_code == 201, r.text
    mid = r.json()["id"]
    r2 = await client.get(f"/v1/machines/{mid}", headers={**tenant["headers"], "X-Min-Position": r.headers["x-log-position"]})
    assert r2.status_code == 200, r2.text
    assert r2.json()["name"] == "m1"
