"""Machine command service: load, decide, save; one method per command, each returning a position."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

from app.crypto import new_nonce, verify_ed25519
from app.services.retries import check_expected, retry_conflicts
from app.store.repository import Repository
from app.store.types import AppendResult, LogPosition
from domain.machines.aggregate import Machine
from domain.machines.commands import (
    ChangeStatus,
    IssueIdentityChallenge,
    RegisterMachine,
    ReviseProfile,
    VerifyIdentity,
)
from domain.machines.errors import SignatureInvalid
from domain.shared.context import CommandContext
from domain.shared.errors import NotFound
from domain.shared.ids import derived_id, new_id


class Outcome:
    """The aggregate after the command, and where its last event sits in the log."""

    def __init__(self, machine: Machine, result: AppendResult | None) -> None:
        self.machine = machine
        self.position: LogPosition | None = result.last if result else None


class MachinesService:
    def __init__(self, repo: Repository, challenge_ttl_seconds: int = 300) -> None:
        self.repo = repo
        self.challenge_ttl = timedelta(seconds=challenge_ttl_seconds)

    async def register(
        self, ctx: CommandContext, *, name: str, description: str, public_key: str, labels: dict[str, str]
    ) -> Outcome:
        assert ctx.account_id is not None
        # A retried request must land on the same stream, so its id derives from the idempotency key.
        machine_id = derived_id("machine", ctx.account_id, ctx.idempotency_key) if ctx.idempotency_key else new_id()
        cmd = RegisterMachine(
            machine_id=machine_id, account_id=ctx.account_id, name=name, description=description,
            public_key=public_key, labels=labels,
        )
        machine = Machine.register(cmd, ctx.at)
        result = await self.repo.save(machine, ctx)
        if result is not None and result.duplicate:
            machine = await self.get(ctx, machine_id)
        return Outcome(machine, result)

    async def get(self, ctx: CommandContext, machine_id: uuid.UUID) -> Machine:
        """The machine if the caller's account owns it (admins see all); otherwise NOT_FOUND, never 403."""
        return owned_machine(ctx, machine_id, await self.repo.get(Machine, machine_id, what="machine"))

    async def require_operational(self, ctx: CommandContext, machine_id: uuid.UUID) -> Machine:
        """The guard every machine-scoped endpoint runs first."""
        machine = await self.get(ctx, machine_id)
        machine.ensure_operational()
        return machine

    async def issue_challenge(self, ctx: CommandContext, machine_id: uuid.UUID) -> Outcome:
        cmd = IssueIdentityChallenge(challenge_id=new_id(), nonce=new_nonce(), expires_at=ctx.at + self.challenge_ttl)
        return await self._change(ctx, machine_id, lambda m: m.issue_challenge(cmd, ctx.at))

    async def verify_identity(self, ctx: CommandContext, machine_id: uuid.UUID, cmd: VerifyIdentity) -> Outcome:
        outcome = await self._change(ctx, machine_id, lambda m: m.verify_identity(cmd, ctx.at, verify_ed25519))
        if not outcome.machine.identity_verified:
            # The failed attempt is recorded (and burns the nonce) before the caller hears about it.
            raise SignatureInvalid("the signature does not verify against this machine's public key")
        return outcome

    async def expire_challenge(self, ctx: CommandContext, machine_id: uuid.UUID, challenge_id: uuid.UUID) -> bool:
        outcome = await self._change(ctx, machine_id, lambda m: m.expire_challenge(challenge_id, ctx.at))
        return outcome.position is not None

    async def revise(
        self, ctx: CommandContext, machine_id: uuid.UUID, cmd: ReviseProfile, expected_version: int | None
    ) -> Outcome:
        return await self._change(ctx, machine_id, lambda m: m.revise_profile(cmd, ctx.at), expected_version)

    async def activate(self, ctx: CommandContext, machine_id: uuid.UUID, expected: int | None = None) -> Outcome:
        return await self._change(ctx, machine_id, lambda m: m.activate(ctx.at), expected)

    async def suspend(
        self, ctx: CommandContext, machine_id: uuid.UUID, cmd: ChangeStatus, expected: int | None = None
    ) -> Outcome:
        return await self._change(ctx, machine_id, lambda m: m.suspend(cmd, ctx.at), expected)

    async def reactivate(self, ctx: CommandContext, machine_id: uuid.UUID, expected: int | None = None) -> Outcome:
        return await self._change(ctx, machine_id, lambda m: m.reactivate(ctx.at), expected)

    async def retire(
        self, ctx: CommandContext, machine_id: uuid.UUID, cmd: ChangeStatus, expected: int | None = None
    ) -> Outcome:
        return await self._change(ctx, machine_id, lambda m: m.retire(cmd, ctx.at), expected)

    async def _change(
        self,
        ctx: CommandContext,
        machine_id: uuid.UUID,
        decide: Callable[[Machine], object],
        expected_version: int | None = None,
    ) -> Outcome:
        async def attempt() -> Outcome:
            machine = await self.get(ctx, machine_id)
            check_expected(machine.version, expected_version, "machine")
            decide(machine)
            result = await self.repo.save(machine, ctx)
            if result is not None and result.duplicate:
                # A retry of a command already recorded: answer with what was stored (e.g. its nonce),
                # not with this attempt's unsaved decision.
                machine = await self.get(ctx, machine_id)
            return Outcome(machine, result)

        async def replay() -> Outcome | None:
            # Refused, but this very request (its Idempotency-Key) was recorded before: answer as it did.
            done = await self.repo.recorded(ctx, machine_id)
            return None if done is None else Outcome(await self.get(ctx, machine_id), done)

        # Without If-Match a lost race is retried on fresh state; with it, the client's version rules.
        return await retry_conflicts(attempt, expected_version, replay=replay)


def owned_machine(ctx: CommandContext, machine_id: uuid.UUID, machine: object) -> Machine:
    """`machine` as loaded (None or another kind: no such machine) if the caller's account owns it (admins see
    all); otherwise NOT_FOUND, never 403. The one tenant check of a machine, for a load of one stream or many."""
    if not isinstance(machine, Machine) or (not ctx.is_admin and machine.account_id != ctx.account_id):
        raise NotFound(f"machine {machine_id} not found")
    return machine
