"""Imperative task commands and the value types they carry (frozen structs); ids and time come from the caller."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from domain.shared.money import Money

CHEAPEST, FASTEST, MOST_RELIABLE, BALANCED = "cheapest", "fastest", "most-reliable", "balanced"
STRATEGIES = (CHEAPEST, FASTEST, MOST_RELIABLE, BALANCED)


class Constraints(msgspec.Struct, frozen=True, kw_only=True):
    max_price: Money | None = None
    provider_keys: tuple[str, ...] = ()
    sellers_allow: tuple[uuid.UUID, ...] = ()
    sellers_deny: tuple[uuid.UUID, ...] = ()
    strategy: str = BALANCED
    fallbacks: int = 2
    timeout_ms: int = 30_000


class PolicyRef(msgspec.Struct, frozen=True, kw_only=True):
    policy_id: uuid.UUID
    version: int
    mode: str


class PolicyCheck(msgspec.Struct, frozen=True, kw_only=True):
    """The policy decision that let a command through (allow, or would-deny when only shadow policies
    objected), carried in the command's event: a replay shows which decision, over which policy versions,
    allowed it. A refusal records no command event; its decision is its own (policy.denied)."""

    decision_id: uuid.UUID
    action: str
    effect: str
    policies: tuple[PolicyRef, ...] = ()


class CreateTask(msgspec.Struct, frozen=True, kw_only=True):
    task_id: uuid.UUID
    account_id: uuid.UUID
    machine_id: uuid.UUID
    capability: str
    input: Any
    constraints: Constraints
    auto: bool = False
    decision: PolicyCheck | None = None  # the policy decision that let this task be created


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    """A listing as discovery saw it: the price is a snapshot, so a later price change cannot alter this task."""

    listing_id: uuid.UUID
    node_id: uuid.UUID
    seller_machine_id: uuid.UUID
    seller_account_id: uuid.UUID
    seller_name: str
    capability: str
    provider_key: str
    price: Money


class Dropped(msgspec.Struct, frozen=True, kw_only=True):
    """A listing discovery (or resolve) left out, and why: the explanation names every one."""

    listing_id: uuid.UUID
    seller_machine_id: uuid.UUID
    reason: str


class SellerRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A seller's observed reputation at resolve time (from the seller_stats read model); recorded in the route."""

    runs: int = 0
    success_rate: float | None = None
    p50_latency_ms: int | None = None
    cooling_down: bool = False


class StartRun(msgspec.Struct, frozen=True, kw_only=True):
    run_id: uuid.UUID
    endpoint_id: uuid.UUID | None


class RunResult(msgspec.Struct, frozen=True, kw_only=True):
    """What one call to a seller came to, as the executor observed it (classified by domain.tasks.rules)."""

    run_id: uuid.UUID
    http_status: int | None
    latency_ms: int
    error_class: str | None  # None on success; "http-4xx", "timeout", "connect", "ssrf-refused", ...
    response_digest: str | None
    body: Any
    # The seller's X-MM-Receipt header as sent (an Ed25519 signature over response_digest; market orders check it).
    receipt: str | None = None
