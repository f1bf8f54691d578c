"""`mm demo`, second act: the buyer orders the same listing, pays into escrow with a signed mandate, the worker
executes it, the buyer confirms and the escrow is released to the seller (less the platform fee)."""

from __future__ import annotations

import base64
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

PRICE_FUNDS = 100  # minor units deposited for the buyer: covers the 25-cent listing


def run_order(demo: Any, story: dict[str, Any], timeout_s: float = 60) -> dict[str, Any]:
    """Returns the settled order."""
    buyer, key = story["buyer"], story["buyer_key"]
    assert isinstance(key, Ed25519PrivateKey)
    print("\n== an order: the admin funds the buyer, the buyer orders the listing (price fixed from it)")
    demo.call("POST", f"/v1/accounts/{story['buyer_account']}/deposits", demo.admin,
              {"amount": {"amount": PRICE_FUNDS, "currency": "USD"}})
    order = demo.call("POST", "/v1/market/orders", buyer, {"buyerMachineId": story["buyer_id"],
                                                           "listingId": story["listing_id"],
                                                           "input": {"text": "Machines trade work."}},
                      expect=(201,))
    payload = order["paymentIntent"]["signingPayload"]
    print("\n== the buyer machine signs the intent's signingPayload (Ed25519) and pays: escrow, then execution")
    for line in payload.split("\n"):
        print(f"  signs: {line}")
    signature = base64.b64encode(key.sign(payload.encode())).decode()
    path = f"/v1/market/orders/{order['id']}"
    demo.call("POST", f"{path}/payment", buyer, {"proof": {"signature": signature}})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = demo.http.get(path, headers=buyer).json()["status"]
        if status not in ("paid", "escrow-held", "executing"):
            break
        time.sleep(0.2)
    seen = demo.call("GET", path, buyer)
    if seen["status"] != "executed":
        raise SystemExit(f"mm demo: the order ended {seen['status']}, not executed")
    print("\n== the buyer confirms: the escrow is released to the seller, the fee to the platform")
    settled: dict[str, Any] = demo.call("POST", f"{path}/confirm", buyer)
    demo.call("GET", "/v1/accounts/me/balance", buyer)
    return settled
