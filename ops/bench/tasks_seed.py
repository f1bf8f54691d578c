"""The `tasks` phase's set-up: sellers with listed capabilities on a stub seller, and a catalogue of N listings.

Sellers are made through the real services (Ed25519 identity proven, activated; graph nodes; a runtime
endpoint), so the catalogue projection builds every listing as it would in production.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from app.container import Container
from domain.machines.commands import VerifyIdentity
from domain.shared.context import CommandContext

CAPABILITIES = 50  # the seeded catalogue's listings spread over this many capability names
NODES_PER_SELLER = 40
TEXT_SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
CONCURRENCY = 8


def ctx(account: uuid.UUID) -> CommandContext:
    return CommandContext(at=datetime.now(UTC), actor="system:bench", account_id=account)


async def seller(c: Container, account: uuid.UUID, name: str, url: str, capabilities: list[tuple[str, int]]) -> str:
    """An active seller machine listing (capability, price) pairs, all served at `url`."""
    key = Ed25519PrivateKey.generate()
    public = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    machine = (await c.machines.register(ctx(account), name=name, description="", public_key=public,
                                         labels={})).machine
    challenge = (await c.machines.issue_challenge(ctx(account), machine.id)).machine.challenge
    assert challenge is not None
    await c.machines.verify_identity(ctx(account), machine.id, VerifyIdentity(
        challenge_id=challenge["id"], signature=base64.b64encode(key.sign(challenge["nonce"].encode())).decode()))
    await c.machines.activate(ctx(account), machine.id)
    await c.runtime.put_manual(ctx(account), machine.id, "stub", url=url, auth_token="bench-token-" + name,
                               metadata={})
    for capability, price in capabilities:
        data = {"name": capability, "price": {"amount": price, "currency": "USD"}, "providerKey": "stub",
                "inputSchema": TEXT_SCHEMA}
        await c.graph.create_node(ctx(account), machine.id, node_type="capability", label=capability,
                                  status="active", data=data)
    return str(machine.id)


def capability(k: int) -> str:
    return f"bench-cap-{k % CAPABILITIES}"


async def catalogue(c: Container, account: uuid.UUID, url: str, listings: int) -> int:
    """`listings` listings over CAPABILITIES names, NODES_PER_SELLER per seller machine; returns the sellers."""
    sellers = -(-listings // NODES_PER_SELLER)
    issued = iter(range(sellers))

    async def work() -> None:
        for s in issued:
            first = s * NODES_PER_SELLER
            caps = [(capability(k), 100 + k % 997) for k in range(first, min(listings, first + NODES_PER_SELLER))]
            await seller(c, account, f"bench-seller-{s}", url, caps)

    await asyncio.gather(*(work() for _ in range(CONCURRENCY)))
    return sellers
