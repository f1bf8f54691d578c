"""`mm demo`: a task from listing to outcome against a running stack, every request and answer printed.

Starts a stub seller on loopback, opens a seller and a buyer account, registers a machine in each (identity
proven with a real Ed25519 signature, then activated), lists a capability on the seller (graph node + runtime
endpoint on the stub), and drives a buyer's task through discover, resolve and execute. The stack's worker
makes the call (mm up allows loopback endpoints: MM_ALLOW_PRIVATE_ENDPOINTS). Then the buyer orders the same
listing and the order runs to its release (app/cli_demo_order.py).
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import sys
import time
import uuid
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from app.cli_demo_order import run_order
from app.outbound.stub_seller import StubSeller
from app.settings import Settings

_SECRET_FIELDS = frozenset({"authToken", "key", "agentToken"})
_SHOWN = 400  # characters of each body printed; the rest is elided


class Demo:
    def __init__(self, base: str, admin_key: str) -> None:
        self.http = httpx.Client(base_url=base, timeout=60)
        self.admin = {"Authorization": f"Bearer {admin_key}"}
        self.keys: dict[str, Ed25519PrivateKey] = {}  # machine id -> its private key (the order signs with it)
        self.accounts: dict[str, str] = {}  # the key header's value -> its account id

    def call(self, method: str, path: str, headers: dict[str, str], body: Any = None,
             expect: tuple[int, ...] = (200, 201), **extra: str) -> Any:
        sent = {**headers, **extra}
        if method == "POST":
            sent["Idempotency-Key"] = str(uuid.uuid4())
        print(f"\n> {method} {path}" + (f"  {_show(body)}" if body is not None else ""))
        r = self.http.request(method, path, headers=sent, json=body)
        answer = r.json() if r.content and "json" in r.headers.get("content-type", "") else r.text
        print(f"< {r.status_code}  {_show(answer)}")
        if r.status_code not in expect:
            raise SystemExit(f"mm demo: {method} {path} answered {r.status_code}, expected {expect}")
        return answer

    def account(self, name: str) -> dict[str, str]:
        opened = self.call("POST", "/v1/accounts", self.admin, {"name": name})
        self.accounts[f"Bearer {opened['apiKey']['key']}"] = opened["account"]["id"]
        return {"Authorization": f"Bearer {opened['apiKey']['key']}"}

    def active_machine(self, h: dict[str, str], name: str) -> str:
        """Registered with a fresh Ed25519 key, identity proven by signing the challenge's nonce, activated."""
        key = Ed25519PrivateKey.generate()
        public = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
        machine = self.call("POST", "/v1/machines", h, {"name": name, "publicKey": public})["id"]
        challenge = self.call("POST", f"/v1/machines/{machine}/identity/challenge", h)
        signature = base64.b64encode(key.sign(challenge["nonce"].encode())).decode()
        self.call("POST", f"/v1/machines/{machine}/identity/verify", h,
                  {"challengeId": challenge["challengeId"], "signature": signature})
        self.call("POST", f"/v1/machines/{machine}/activate", h)
        self.keys[str(machine)] = key
        return str(machine)

    def wait_listed(self, h: dict[str, str], capability: str, timeout_s: float = 30) -> str:
        """The catalogue is a read model: the listing shows up within one projection lag."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            r = self.http.get("/v1/catalogue", params={"capability": capability}, headers=h)
            if r.status_code == 200 and r.json()["data"]:
                self.call("GET", f"/v1/catalogue?capability={capability}", h)
                return str(r.json()["data"][0]["id"])
            time.sleep(0.2)
        raise SystemExit(f"mm demo: the listing for {capability} did not reach the catalogue in {timeout_s:g}s")


def _show(value: Any) -> str:
    text = json.dumps(_masked(value), separators=(",", ":")) if not isinstance(value, str) else value
    return text if len(text) <= _SHOWN else text[:_SHOWN] + f"... ({len(text)} characters)"


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "***" if k in _SECRET_FIELDS and isinstance(v, str) else _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def run(demo: Demo, seller_url: str, story: dict[str, Any] | None = None) -> dict[str, Any]:
    """The task story; returns the execute answer. `story` receives what the order act needs."""
    tag = uuid.uuid4().hex[:6]
    capability = f"summarise-{tag}"
    print("== a seller: account, machine (Ed25519 identity, active), capability, runtime endpoint")
    seller = demo.account(f"demo-seller-{tag}")
    seller_id = demo.active_machine(seller, f"demo-seller-{tag}")
    demo.call("POST", f"/v1/machines/{seller_id}/graph/nodes", seller, {
        "type": "capability", "label": capability, "status": "active",
        "data": {"name": capability, "price": {"amount": 25, "currency": "USD"}, "providerKey": "stub",
                 "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}},
                                 "required": ["text"]}}})
    demo.call("PUT", f"/v1/machines/{seller_id}/runtime-endpoints/stub", seller,
              {"url": f"{seller_url}/echo", "authToken": secrets.token_urlsafe(24)})
    print("\n== a buyer: account, machine; the listing in the catalogue")
    buyer = demo.account(f"demo-buyer-{tag}")
    buyer_id = demo.active_machine(buyer, f"demo-buyer-{tag}")
    listing_id = demo.wait_listed(buyer, capability)
    if story is not None:
        story.update(buyer=buyer, buyer_id=buyer_id, buyer_key=demo.keys[buyer_id], listing_id=listing_id,
                     buyer_account=demo.accounts[buyer["Authorization"]])
    print("\n== the task: submit, discover, resolve (the route and why), execute (the worker calls the seller)")
    tasks = f"/v1/machines/{buyer_id}/tasks"
    task = demo.call("POST", tasks, buyer, {"capability": capability, "input": {"text": "Machines trade work."},
                                            "constraints": {"strategy": "cheapest", "timeoutMs": 10_000}})
    demo.call("POST", f"{tasks}/{task['id']}/discover", buyer)
    route = demo.call("POST", f"{tasks}/{task['id']}/resolve", buyer, expect=(201,))
    for scored in route["explanation"]["ranked"]:
        print(f"  why: {scored['reason']}")
    answer: dict[str, Any] = demo.call("POST", f"{tasks}/{task['id']}/execute", buyer, expect=(200,),
                                       Prefer="wait=60")
    return answer


def main(settings: Settings, args: argparse.Namespace) -> int:
    from app.kept import admin_token

    base = args.base or f"http://{settings.host}:{settings.port}"
    admin_key = args.admin_key or admin_token(settings)
    demo = Demo(base, admin_key)
    try:
        demo.http.get("/health").raise_for_status()
    except httpx.HTTPError as exc:
        print(f"mm demo: no stack answers at {base} ({type(exc).__name__}); start one with `make run`",
              file=sys.stderr)
        return 1
    with StubSeller() as stub:
        print(f"stub seller listening on {stub.url} (loopback)")
        story: dict[str, Any] = {}
        answer = run(demo, stub.url, story)
        seen = stub.stats.requests[-1]["headers"] if stub.stats.requests else {}
        print(f"\n== the seller saw {stub.stats.total} call(s); Idempotency-Key {seen.get('idempotency-key')} "
              f"(the run id), Authorization: Bearer *** (the endpoint's token, unsealed by the worker)")
        print(f"\ntask {answer.get('taskId', '')} {answer.get('status')}: output {_show(answer.get('output'))}")
        settled = run_order(demo, story)
    print(f"\norder {settled['id']} {settled['status']}: escrow {settled['escrow']['status']}, seller credited"
          f" {settled['escrow']['released']['amount'] - settled['fee']['amount']} USD cents, platform fee"
          f" {settled['fee']['amount']}")
    return 0
