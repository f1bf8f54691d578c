"""Proof of identity over HTTP: challenge, signed nonce, one attempt per nonce, expiry."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from app.container import Container
from tests.api.helpers import Keys, assert_problem, challenge, fresh, register, verify


def _verify(client: httpx.AsyncClient, headers: dict[str, str], mid: str, challenge_id: str, signature: str) -> Any:
    return client.post(f"/v1/machines/{mid}/identity/verify", headers=headers,
                       json={"challengeId": challenge_id, "signature": signature})


@pytest.fixture
def zero_ttl(container: Container) -> Iterator[None]:
    """Challenges that are already expired when issued; the shared container gets its TTL back afterwards."""
    saved = container.machines.challenge_ttl
    container.machines.challenge_ttl = timedelta(0)
    try:
        yield
    finally:
        container.machines.challenge_ttl = saved


async def test_challenge_returns_a_nonce_and_expiry(client: httpx.AsyncClient, tenant: dict[str, Any],
                                                    container: Container) -> None:
    r, _ = await register(client, tenant["headers"])
    before = datetime.now(UTC)
    c = await client.post(f"/v1/machines/{r.json()['id']}/identity/challenge", headers=tenant["headers"])
    assert c.status_code == 201, c.text
    body = c.json()
    uuid.UUID(body["challengeId"])
    assert len(body["nonce"]) >= 32
    assert body["algorithm"] == "ed25519"
    expires = datetime.fromisoformat(body["expiresAt"])
    assert expires.tzinfo is not None
    ttl = container.machines.challenge_ttl
    assert before + ttl - timedelta(seconds=5) <= expires <= datetime.now(UTC) + ttl
    assert "x-log-position" in c.headers
    second = await challenge(client, tenant["headers"], r.json()["id"])
    assert second["nonce"] != body["nonce"] and second["challengeId"] != body["challengeId"]


async def test_correct_signature_verifies_identity(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    r, keys = await register(client, h)
    mid = r.json()["id"]
    c = await challenge(client, h, mid)
    v = await _verify(client, h, mid, c["challengeId"], keys.sign(c["nonce"]))
    assert v.status_code == 200, v.text
    assert v.json()["identityVerified"] is True and v.json()["identityVerifiedAt"]
    assert v.json()["status"] == "registered"
    assert v.headers["etag"] == f'"{v.json()["version"]}"'
    got = await client.get(f"/v1/machines/{mid}", headers=fresh(h, v))
    assert got.json()["identityVerified"] is True


@pytest.mark.parametrize("forge", ["other-key", "other-nonce", "garbage", "short"])
async def test_wrong_signature_is_422_and_burns_the_nonce(
    client: httpx.AsyncClient, tenant: dict[str, Any], forge: str
) -> None:
    h = tenant["headers"]
    r, keys = await register(client, h)
    mid = r.json()["id"]
    c = await challenge(client, h, mid)
    signature = {
        "other-key": Keys().sign(c["nonce"]),
        "other-nonce": keys.sign(c["nonce"] + "x"),
        "garbage": "!!not-base64!!",
        "short": base64.b64encode(b"\0" * 63).decode(),
    }[forge]
    assert_problem(await _verify(client, h, mid, c["challengeId"], signature), 422, "IDENTITY_SIGNATURE_INVALID")

    again = await _verify(client, h, mid, c["challengeId"], keys.sign(c["nonce"]))
    assert_problem(again, 409, "IDENTITY_CHALLENGE_MISSING")
    got = await client.get(f"/v1/machines/{mid}", headers=fresh(h, r))
    assert got.json()["identityVerified"] is False

    # A new challenge is the way forward.
    assert (await verify(client, h, mid, keys)).json()["identityVerified"] is True


async def test_unknown_challenge_id_is_409(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    r, keys = await register(client, h)
    mid = r.json()["id"]
    assert_problem(await _verify(client, h, mid, str(uuid.uuid4()), keys.sign("x")), 409, "IDENTITY_CHALLENGE_MISSING")
    first = await challenge(client, h, mid)
    await challenge(client, h, mid)  # a newer challenge replaces the first
    stale = await _verify(client, h, mid, first["challengeId"], keys.sign(first["nonce"]))
    assert_problem(stale, 409, "IDENTITY_CHALLENGE_MISSING")


async def test_expired_challenge_is_422(client: httpx.AsyncClient, tenant: dict[str, Any], zero_ttl: None) -> None:
    h = tenant["headers"]
    r, keys = await register(client, h)
    mid = r.json()["id"]
    c = await challenge(client, h, mid)
    assert datetime.fromisoformat(c["expiresAt"]) <= datetime.now(UTC)
    res = await _verify(client, h, mid, c["challengeId"], keys.sign(c["nonce"]))
    assert_problem(res, 422, "IDENTITY_CHALLENGE_EXPIRED")


async def test_verifying_twice_is_409(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    r, keys = await register(client, h)
    mid = r.json()["id"]
    await verify(client, h, mid, keys)
    assert_problem(await client.post(f"/v1/machines/{mid}/identity/challenge", headers=h),
                   409, "IDENTITY_ALREADY_VERIFIED")
    again = await _verify(client, h, mid, str(uuid.uuid4()), keys.sign("x"))
    assert_problem(again, 409, "IDENTITY_ALREADY_VERIFIED")


async def test_verify_refuses_a_malformed_body(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    r, _ = await register(client, h)
    url = f"/v1/machines/{r.json()['id']}/identity/verify"
    assert_problem(await client.post(url, json={"challengeId": "nope", "signature": "x"}, headers=h),
                   400, "VALIDATION_ERROR")
    assert_problem(await client.post(url, json={"signature": "x"}, headers=h), 400, "VALIDATION_ERROR")
    assert_problem(await client.post(url, json={"challengeId": str(uuid.uuid4()), "signature": "x", "nonce": "y"},
                                     headers=h), 400, "VALIDATION_ERROR")


async def test_retired_machine_cannot_prove_identity(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    r, _ = await register(client, h)
    mid = r.json()["id"]
    assert (await client.post(f"/v1/machines/{mid}/retire", headers=h)).status_code == 200
    assert_problem(await client.post(f"/v1/machines/{mid}/identity/challenge", headers=h),
                   409, "INVALID_STATE_TRANSITION")
