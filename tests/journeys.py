"""Service-level set-up shared by integration and worker tests: an operational machine, an enrolled agent."""

from __future__ import annotations

import asyncio
import uuid

from app.container import Container
from domain.machines.aggregate import Machine
from domain.machines.commands import VerifyIdentity
from domain.shared.context import CommandContext
from tests.factories import MachineKeyFactory


async def operational_machine(c: Container, ctx: CommandContext) -> Machine:
    """Registered with a real Ed25519 key, identity verified by signing the nonce, activated."""
    key = MachineKeyFactory()
    machine = (await c.machines.register(ctx, name="m", description="", public_key=key.public_key,
                                         labels={})).machine
    challenge = (await c.machines.issue_challenge(ctx, machine.id)).machine.challenge
    assert challenge is not None
    await c.machines.verify_identity(ctx, machine.id, VerifyIdentity(challenge_id=challenge["id"],
                                                                     signature=key.sign(challenge["nonce"])))
    return (await c.machines.activate(ctx, machine.id)).machine


async def enrolled_agent(c: Container, ctx: CommandContext, machine_id: uuid.UUID, *, keys: list[str],
                         lease_seconds: int) -> tuple[uuid.UUID, str]:
    """(agent id, its one-time token)."""
    out = await c.agents.enroll(ctx, machine_id, name="a", allowed_provider_keys=keys, lease_seconds=lease_seconds)
    assert out.token is not None
    return out.agent.id, out.token


async def all_visible(c: Container) -> None:
    """Readers stop at the oldest open transaction on the whole server (other test runs included)."""
    row = await c.pool.fetchrow("SELECT tx_id::text::bigint AS tx, position FROM events"
                                " ORDER BY events.tx_id DESC, position DESC LIMIT 1")
    for _ in range(500):
        head = await c.store.head()
        if head is not None and (head.tx_id, head.position) == (row["tx"], row["position"]):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the log never became fully visible")
