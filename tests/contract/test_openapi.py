"""Schemathesis over the whole OpenAPI of a real `mm api` process: no 5xx, responses match the schema."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app.migrate import create_database, drop_database
from app.services.accounts import bootstrap_admin_key
from tests.conftest import TEST_SECRET_KEY
from tests.factories import MachineKeyFactory

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "mm_contract_admin_" + uuid.uuid4().hex


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def api(server_url: str) -> Iterator[dict[str, Any]]:
    """A real API and projector process on a database of their own, plus a tenant key."""
    url = asyncio.run(create_database(server_url, "mm_contract"))
    asyncio.run(bootstrap_admin_key(url, ADMIN, "system:contract-test"))
    port = _free_port()
    env = {**os.environ, "MM_DATABASE_URL": url, "MM_PORT": str(port), "MM_LOG_LEVEL": "WARNING",
           "MM_PROJECTION_POLL_INTERVAL_S": "0.05", "PYTHONPATH": str(ROOT), "MM_SECRET_KEY": TEST_SECRET_KEY}
    procs = [subprocess.Popen([sys.executable, "-m", "app.cli", cmd], env=env, cwd=ROOT)
             for cmd in ("api", "projector")]
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.1)
        admin = {"Authorization": f"Bearer {ADMIN}"}
        deadline = time.monotonic() + 10
        while (r := httpx.post(base + "/v1/accounts", json={"name": "contract"}, headers=admin)).status_code == 401:
            assert time.monotonic() < deadline, "the bootstrap admin key never became usable"
            time.sleep(0.05)
        assert r.status_code == 201, r.text
        _TENANT["key"] = r.json()["apiKey"]["key"]
        _TENANT["machine"], _TENANT["agent_token"] = _machine_with_agent(base, _TENANT["key"])
        yield {"base": base}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
        asyncio.run(drop_database(server_url, url))


@pytest.fixture(scope="module")
def api_schema(api: dict[str, Any]) -> Any:
    return schemathesis.openapi.from_url(api["base"] + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


def _is_list_param(parameter: Any) -> bool:
    definition = getattr(parameter, "definition", {}) or {}
    branches = [definition.get("schema", {}), *definition.get("schema", {}).get("oneOf", [])]
    return any(b.get("type") == "array" for b in branches)


def _machine_with_agent(base: str, key: str) -> tuple[str, str]:
    """An active machine and an enrolled agent, so machine-scoped routes get past their guards."""
    h = {"Authorization": f"Bearer {key}"}
    keys = MachineKeyFactory()
    r = httpx.post(base + "/v1/machines", json={"name": "fuzzed", "publicKey": keys.public_key}, headers=h)
    mid = r.json()["id"]
    c = httpx.post(f"{base}/v1/machines/{mid}/identity/challenge", headers=h).json()
    httpx.post(f"{base}/v1/machines/{mid}/identity/verify", headers=h,
               json={"challengeId": c["challengeId"], "signature": keys.sign(c["nonce"])}).raise_for_status()
    httpx.post(f"{base}/v1/machines/{mid}/activate", headers=h).raise_for_status()
    r = httpx.post(f"{base}/v1/machines/{mid}/agents/enrollment", headers=h,
                   json={"name": "fuzz", "allowedProviderKeys": ["a", "0", "openai"]})
    r.raise_for_status()
    return str(mid), str(r.json()["agentToken"])


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


@schemathesis.hook
def flatmap_path_parameters(ctx: schemathesis.HookContext, path_parameters: dict[str, Any]) -> Any:
    """Also send machine-scoped sub-resource requests to the real active machine (else they would all
    stop at 404). Only a valid id is swapped for another valid id, so a negative case stays negative.
    Lifecycle routes (suspend, retire) are left alone so the shared machine stays active."""
    path = ctx.operation.path if ctx.operation is not None else ""
    value = (path_parameters or {}).get("machine_id")
    if path.split("/")[4:5] not in (["runtime-endpoints"], ["agents"], ["graph"]) or not _is_uuid(value):
        return st.just(path_parameters)
    return st.sampled_from([path_parameters, {**path_parameters, "machine_id": _TENANT["machine"]}])


_DOC_URL = re.compile(r"^[Hh][Tt][Tt][Pp][Ss]?://")
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def _realistic(value: Any) -> Any:
    """The same body with schema-valid values swapped for ones that also pass the business rules: a
    documented-shape url for a reachable one, a provider key for one the fuzz agent may report, any
    well-formed (or absent) agentToken for the real one. Valid stays valid and invalid stays invalid."""
    if isinstance(value, list):
        return [_realistic(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _realistic(v) if k == "endpoints" else v for k, v in value.items()}
    if isinstance(out.get("url"), str) and _DOC_URL.match(out["url"]) and len(out["url"]) <= 2048:
        out["url"] = "https://node.example.net/run"
    if isinstance(out.get("providerKey"), str) and _KEY.match(out["providerKey"]):
        out["providerKey"] = "openai"
    return out


@schemathesis.hook
def flatmap_body(ctx: schemathesis.HookContext, body: Any) -> Any:
    """Runtime bodies sometimes carry values the business rules accept, so success paths get fuzzed too."""
    path = ctx.operation.path if ctx.operation is not None else ""
    if not isinstance(body, dict) or not (path.endswith("/heartbeat") or "/runtime-endpoints/" in path):
        return st.just(body)
    real = _realistic(body)
    token = body.get("agentToken")
    if path.endswith("/heartbeat") and (token is None or (isinstance(token, str) and 1 <= len(token) <= 256)):
        real = {**real, "agentToken": _TENANT["agent_token"]}
    return st.sampled_from([body, real])


@schemathesis.hook
def filter_query(ctx: schemathesis.HookContext, query: dict[str, Any] | None) -> bool:
    """Drop 'wrong type' query values that the query string itself makes indistinguishable from valid ones.

    A query string carries text only: the scalar "false" drawn as 'not an array' for an array-of-strings
    parameter arrives as the valid one-item list ["false"], and an object is exploded into plain
    key=value pairs. Such cases prove nothing, so they are not sent; every other negative case still is.
    """
    if not query or ctx.operation is None:
        return True
    lists = {p.name for p in ctx.operation.query if _is_list_param(p)}
    for name, value in query.items():
        if isinstance(value, dict):
            return False
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, bool | dict) for v in values):
            return False
        if name in lists and value is not None and not isinstance(value, list):
            return False
        if name in lists and any(isinstance(v, int | float) for v in values):
            return False
    return True


_TENANT: dict[str, str] = {}


@schema.auth()
class TenantKey:
    """Authenticates every generated request as the tenant, so schemathesis knows auth is supplied
    (and does not count its own mutated Authorization header, overwritten by ours, as accepted)."""

    def get(self, case: schemathesis.Case, ctx: schemathesis.AuthContext) -> str:
        return _TENANT["key"]

    def set(self, case: schemathesis.Case, data: str, ctx: schemathesis.AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@schema.parametrize()
@settings(max_examples=int(os.environ.get("MM_CONTRACT_EXAMPLES", "40")), deadline=None,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_responses_match_the_schema(case: schemathesis.Case, api: dict[str, Any]) -> None:
    # Business rules (unknown ids, states, permissions) legitimately refuse schema-valid input.
    case.call_and_validate(base_url=api["base"], excluded_checks=[positive_data_acceptance])


def test_the_generated_requests_were_authenticated(api: dict[str, Any]) -> None:
    """Runs after the schemathesis test on the same server: most of its traffic got past authentication,
    so the operations were exercised, not just refused at the door (schemathesis also sends some
    requests without or with broken credentials on purpose, which rightly get 401)."""
    text = httpx.get(api["base"] + "/metrics").text
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("mm_http_requests_total{") and 'route="/v1/' in line:
            status = line.split('status="')[1].split('"')[0]
            counts[status] = counts.get(status, 0) + float(line.rsplit(" ", 1)[1])
    total = sum(counts.values())
    assert total > 100, counts
    assert counts.get("401", 0) < total * 0.5, counts
    assert sum(v for k, v in counts.items() if k.startswith("2")) >= 50, counts
