"""Policy command service: define, revise, read (tenant-scoped), and evaluate one hypothetical action."""

from __future__ import annotations

import uuid
from typing import Protocol, runtime_checkable

from app.services.machines import MachinesService
from app.services.retries import check_expected, retry_conflicts
from app.store.repository import Repository
from app.store.types import AppendResult, LogPosition
from domain.policies.aggregate import Policy
from domain.policies.commands import DefinePolicy, RevisePolicy
from domain.policies.errors import PolicyNotFound
from domain.policies.evaluation import evaluate
from domain.policies.rules import Rule, Scope
from domain.policies.values import Action, ActionKind, Decision, PolicyVersion, Reputation, Seller, Usage
from domain.shared.context import CommandContext
from domain.shared.errors import NotFound, PermissionDenied
from domain.shared.ids import derived_id, new_id
from domain.shared.money import Money


class PolicyOutcome:
    """The policy after the command, and where its last event sits in the log (None: nothing recorded)."""

    def __init__(self, policy: Policy, result: AppendResult | None) -> None:
        self.policy = policy
        self.position: LogPosition | None = result.last if result else None


@runtime_checkable
class PolicySource(Protocol):
    """The policies governing one machine (the policies read model), current versions, platform ones first."""

    async def governing(self, account_id: uuid.UUID, machine_id: uuid.UUID,
                        labels: dict[str, str]) -> list[PolicyVersion]: ...


@runtime_checkable
class SellerSource(Protocol):
    """Who a seller machine belongs to, and its observed reputation (None: no such machine)."""

    async def seller(self, machine_id: uuid.UUID) -> tuple[Seller, Reputation] | None: ...


@runtime_checkable
class UsageReader(Protocol):
    """The acting account's counters under the governing policies (spend budgets, recent task counts)."""

    async def usage(self, action: Action, governing: list[PolicyVersion]) -> Usage: ...


class Hypothesis:
    """What POST /policies/evaluate asks about: one action of one of the caller's machines."""

    def __init__(self, kind: ActionKind, machine_id: uuid.UUID, capability: str | None = None,
                 seller_machine_id: uuid.UUID | None = None, price: Money | None = None,
                 provider_key: str | None = None) -> None:
        self.kind, self.machine_id, self.capability = kind, machine_id, capability
        self.seller_machine_id, self.price, self.provider_key = seller_machine_id, price, provider_key


class PoliciesService:
    def __init__(self, repo: Repository, machines: MachinesService, policies: PolicySource,
                 sellers: SellerSource, usage: UsageReader | None = None) -> None:
        self.repo, self.machines, self.policies, self.sellers = repo, machines, policies, sellers
        self.usage = usage  # None: counters taken as zero

    async def define(self, ctx: CommandContext, *, name: str, description: str, scope: Scope, mode: str,
                     rules: list[Rule], platform: bool) -> PolicyOutcome:
        assert ctx.account_id is not None
        if platform and not ctx.is_admin:
            raise PermissionDenied("only an admin API key may define a platform policy")
        # A retried request must land on the same stream, so its id derives from the idempotency key.
        policy_id = derived_id("policy", ctx.account_id, ctx.idempotency_key) if ctx.idempotency_key else new_id()
        cmd = DefinePolicy(policy_id=policy_id, account_id=ctx.account_id, platform=platform, name=name,
                           description=description, scope=scope, mode=mode, rules=rules)
        policy = Policy.define(cmd, ctx.at)
        result = await self.repo.save(policy, ctx)
        if result is not None and result.duplicate:
            policy = await self.repo.get(Policy, policy_id, what="policy")
        return PolicyOutcome(policy, result)

    async def get(self, ctx: CommandContext, policy_id: uuid.UUID) -> Policy:
        """Own policies and the platform's are visible; another account's answer NOT_FOUND, never 403."""
        try:
            policy = await self.repo.get(Policy, policy_id, what="policy")
        except NotFound:
            raise PolicyNotFound(f"policy {policy_id} not found") from None
        if not ctx.is_admin and not policy.platform and policy.account_id != ctx.account_id:
            raise PolicyNotFound(f"policy {policy_id} not found")
        return policy

    async def revise(self, ctx: CommandContext, policy_id: uuid.UUID, cmd: RevisePolicy,
                     expected_version: int | None) -> PolicyOutcome:
        async def attempt() -> PolicyOutcome:
            policy = await self.get(ctx, policy_id)
            if policy.platform and not ctx.is_admin:
                raise PermissionDenied("platform policies are changed by admins only")
            check_expected(policy.version, expected_version, "policy")
            policy.revise(cmd, ctx.at)
            result = await self.repo.save(policy, ctx)
            if result is not None and result.duplicate:
                policy = await self.get(ctx, policy_id)
            return PolicyOutcome(policy, result)

        return await retry_conflicts(attempt, expected_version)

    async def evaluate(self, ctx: CommandContext, q: Hypothesis) -> Decision:
        """A dry run through the same pure functions and counters enforcement uses; records nothing."""
        machine = await self.machines.get(ctx, q.machine_id)
        seller, reputation = None, None
        if q.seller_machine_id is not None:
            found = await self.sellers.seller(q.seller_machine_id)
            if found is None:
                raise NotFound(f"seller machine {q.seller_machine_id} not found")
            seller, reputation = found
        action = Action(kind=q.kind, at=ctx.at, account_id=machine.account_id,
                        machine_id=machine.id, labels=dict(machine.labels), capability=q.capability, seller=seller,
                        price=q.price, provider_key=q.provider_key, reputation=reputation)
        governing = await self.policies.governing(machine.account_id, machine.id, dict(machine.labels))
        usage = await self.usage.usage(action, governing) if self.usage is not None else Usage()
        return evaluate(new_id(), action, governing, usage)
