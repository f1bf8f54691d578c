"""The fuzzing harness shared by the contract tests: the tenant, its auth, and hooks that keep generated
requests realistic without turning a valid case invalid or an invalid one valid."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    positive_data_acceptance,
)

from tests.factories import MachineKeyFactory


def _is_list_param(parameter: Any) -> bool:
    definition = getattr(parameter, "definition", {}) or {}
    schema_ = definition.get("schema", {})
    branches = [schema_, *schema_.get("oneOf", []), *schema_.get("anyOf", [])]
    return any(b.get("type") == "array" for b in branches)


def machine_with_agent(base: str, key: str) -> tuple[str, str]:
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
                   json={"name": "fuzz", "allowedProviderKeys": _ALLOWED})
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
    if path.split("/")[4:5] not in (["runtime-endpoints"], ["agents"], ["graph"], ["tasks"], ["routes"],
                                    ["outcomes"]) or not _is_uuid(value):
        return st.just(path_parameters)
    return st.sampled_from([path_parameters, {**path_parameters, "machine_id": TENANT["machine"]}])


_DOC_URL = re.compile(r"^[Hh][Tt][Tt][Pp][Ss]?://")
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_ALLOWED = ["openai", "a", "0"]  # the fuzz agent's allowedProviderKeys


def _realistic(value: Any) -> Any:
    """The same body with schema-valid values swapped for ones that also pass the business rules: a
    documented-shape url for a reachable one, a provider key for one the fuzz agent may report, any
    well-formed (or absent) agentToken for the real one. Valid stays valid and invalid stays invalid."""
    if isinstance(value, list):
        return [_realistic(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _realistic(v) if k == "endpoints" else v for k, v in value.items()}
    if isinstance(out.get("endpoints"), list):  # one distinct allowed key each, as a real agent reports them
        out["endpoints"] = [{**e, "providerKey": _ALLOWED[i]} if isinstance(e, dict) and i < len(_ALLOWED)
                            and isinstance(e.get("providerKey"), str) and _KEY.match(e["providerKey"]) else e
                            for i, e in enumerate(out["endpoints"])]
    if isinstance(out.get("url"), str) and _DOC_URL.match(out["url"]) and len(out["url"]) <= 2048:
        out["url"] = "https://node.example.net/run"
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
        real = {**real, "agentToken": TENANT["agent_token"]}
    return st.sampled_from([body, real])


@schemathesis.hook
def map_headers(ctx: schemathesis.HookContext, headers: dict[str, Any] | None) -> dict[str, Any] | None:
    """A fresh Idempotency-Key per request, as clients are told to send: generated keys repeat ("0") across
    different requests, and the second would be a correct but uninformative 422 IDEMPOTENCY_KEY_REUSED.
    An invalid key (over 255 characters) stays as generated, so negative cases stay negative."""
    out = dict(headers or {})
    key = out.get("Idempotency-Key")
    if isinstance(key, str) and len(key.strip()) <= 255:
        out["Idempotency-Key"] = f"fuzz-{uuid.uuid4()}"
    # A well-formed X-Min-Position is almost always a position the log has not reached, and each such request
    # would wait MM_READ_YOUR_WRITES_TIMEOUT_S for its 503: send one the log has passed (malformed stay).
    if isinstance(out.get("X-Min-Position"), str) and re.fullmatch(r"[0-9]+\.[0-9]+", out["X-Min-Position"]):
        out["X-Min-Position"] = "1.1"
    return out if headers is not None else None


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


TENANT: dict[str, str] = {}
# Every check runs; these two come back as refusals.ONLY_DOCUMENTED_REFUSALS, which knows our refusals.
REPLACED_CHECKS = [positive_data_acceptance, not_a_server_error]


class TenantKey:
    """Authenticates every generated request as the tenant, so schemathesis knows auth is supplied
    (and does not count its own mutated Authorization header, overwritten by ours, as accepted)."""

    def get(self, case: schemathesis.Case, ctx: schemathesis.AuthContext) -> str:
        return TENANT.get("acting", TENANT["key"])

    def set(self, case: schemathesis.Case, data: str, ctx: schemathesis.AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@schemathesis.hook
def flatmap_query(ctx: schemathesis.HookContext, query: dict[str, Any] | None) -> Any:
    """GET /v1/runs names its machine in the query: sometimes the real active one, as for machine paths."""
    path = ctx.operation.path if ctx.operation is not None else ""
    if path != "/v1/runs" or not isinstance(query, dict) or not _is_uuid(query.get("machineId")):
        return st.just(query)
    return st.sampled_from([query, {**query, "machineId": TENANT["machine"]}])
