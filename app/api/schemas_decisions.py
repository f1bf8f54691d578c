"""A policy decision on the wire: what POST /policies/evaluate and a dry-run resolve answer."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

import msgspec

from app.api.schema_types import UtcTime

Mode = Literal["enforce", "shadow", "disabled"]
ActionKind = Literal["create-task", "resolve", "execute", "order"]


class RuleResultView(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    policy_id: uuid.UUID
    policy_version: int
    policy_name: str
    mode: Mode
    rule_index: Annotated[int, msgspec.Meta(description="the rule's place in the policy's rules (from 0)")]
    rule_type: str
    outcome: Literal["pass", "deny", "not-applicable"]
    reason: str


class DecisionView(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    decision_id: uuid.UUID
    action: ActionKind
    effect: Annotated[Literal["allow", "deny", "would-deny"], msgspec.Meta(
        description="deny: an enforced policy refuses; would-deny: only shadow policies would")]
    denied_by: Annotated[RuleResultView | None, msgspec.Meta(
        description="the first enforced deny (for would-deny, the first shadow deny)")]
    results: Annotated[list[RuleResultView], msgspec.Meta(
        description="every rule of every policy governing the machine, platform policies first")]
    evaluated_at: UtcTime
