"""Phase `policies`: what policy enforcement adds to task creation, 0 vs 100 policies in scope, same run."""

from __future__ import annotations

import asyncio
import base64
import statistics
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from app.container import Container
from app.settings import Settings
from domain.machines.commands import VerifyIdentity
from domain.policies import rules as r
from domain.shared.context import CommandContext
from domain.shared.ids import new_id
from domain.shared.money import Money
from domain.tasks.commands import Constraints
from ops.bench.db import reset
from ops.bench.report import Report, Row
from projections.policies import PoliciesProjection
from projections.runner import ProjectionRunner

POLICIES = 100
ROUNDS = 4  # alternating A B B A ... so drift on a shared box falls on both sides


@dataclass
class PoliciesResult:
    without_ms: float  # p50 of task creation with no policy in scope
    with_ms: float  # p50 with 100 policies in scope (each judged, none denying)
    samples: int


async def _machine(c: Container, ctx: CommandContext) -> uuid.UUID:
    """Registered with a real Ed25519 key, its identity proven by signing the nonce, activated."""
    key = Ed25519PrivateKey.generate()
    public = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    machine = (await c.machines.register(ctx, name="bench", description="", public_key=public, labels={})).machine
    challenge = (await c.machines.issue_challenge(ctx, machine.id)).machine.challenge
    assert challenge is not None
    signature = base64.b64encode(key.sign(challenge["nonce"].encode())).decode()
    await c.machines.verify_identity(ctx, machine.id, VerifyIdentity(challenge_id=challenge["id"], signature=signature))
    await c.machines.activate(ctx, machine.id)
    return machine.id


def _rules(i: int) -> list[r.Rule]:
    """Rules a create-task is judged by (or skips quickly), none of them refusing the bench's tasks."""
    return [r.Capabilities(deny=(f"never-{i}",)), r.PriceCeiling(max=Money(10_000 + i, "USD")),
            r.ProviderKeys(allow=("openai",)), r.SpendLimit(amount=Money(10**9, "USD"), period="day")]


async def run(dsn: str, tasks: int) -> PoliciesResult:
    await reset(dsn)
    c = await Container.open(Settings(), dsn, min_size=2, max_size=8)
    try:
        ctx = CommandContext(at=datetime.now(UTC), actor="bench", account_id=new_id())
        governed, free = await _machine(c, ctx), await _machine(c, ctx)
        for i in range(POLICIES):
            await c.policies.define(ctx, name=f"p{i}", description="", mode="enforce", rules=_rules(i),
                                    scope=r.MachinesScope(machine_ids=(governed,)), platform=False)
        assert ctx.account_id is not None
        runner, deadline = ProjectionRunner(c.pool, c.store, []), time.monotonic() + 60
        # The log is read below the oldest open transaction on the server, which other work may hold a while.
        while len(await c.guard.policies.governing(ctx.account_id, governed, {})) < POLICIES:
            assert time.monotonic() < deadline, "the policies projection did not catch up"
            await runner.catch_up(PoliciesProjection())
            await asyncio.sleep(0.05)
        timings: dict[bool, list[float]] = {True: [], False: []}
        order = [False, True, True, False] * (ROUNDS // 4 or 1)
        for side in order:
            machine = governed if side else free
            for _ in range(tasks // len(order)):
                started = time.perf_counter()
                await c.tasks.submit(ctx, machine, capability="translate", input={"text": "x"},
                                     constraints=Constraints(), auto=False)
                timings[side].append((time.perf_counter() - started) * 1000)
        return PoliciesResult(without_ms=statistics.median(timings[False]), with_ms=statistics.median(timings[True]),
                              samples=len(timings[True]))
    finally:
        await c.close()


def add_rows(report: Report, result: PoliciesResult, added_p50_ms: float) -> None:
    report.add(Row("policies", "task create p50, 0 policies in scope (baseline)", f"{result.without_ms:.2f} ms"))
    report.add(Row("policies", f"task create p50, {POLICIES} policies in scope", f"{result.with_ms:.2f} ms"))
    report.check_max("policies", "p50 added by 100 policies", result.with_ms - result.without_ms, added_p50_ms,
                     ".2f", " ms")
    report.notes.append(f"policies: {result.samples} task creations per side through TasksService.submit (machine"
                        " guard, policy read and evaluation, append), alternating sides A B B A")
