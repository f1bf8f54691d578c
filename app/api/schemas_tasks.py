"""Request and response bodies of the task endpoints (camelCase, unknown fields refused)."""

from __future__ import annotations

import enum
import uuid
from typing import Annotated, Any

import msgspec

from app.api.schema_types import NOT_BLANK, UtcTime
from app.api.schemas_decisions import DecisionView
from domain.graph.rules import MAX_AMOUNT, MAX_NAME
from domain.shared.money import Money
from domain.tasks import rules
from domain.tasks.commands import Candidate, Constraints, Dropped, SellerRecord
from domain.tasks.scoring import Features, Scored


class Strategy(enum.StrEnum):
    CHEAPEST = "cheapest"
    FASTEST = "fastest"
    MOST_RELIABLE = "most-reliable"
    BALANCED = "balanced"


class TaskStatus(enum.StrEnum):
    QUEUED = "queued"
    DISCOVERED = "discovered"
    RESOLVED = "resolved"
    EXECUTING = "executing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class RunStatus(enum.StrEnum):
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class OutcomeStatus(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


Capability = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME, pattern=NOT_BLANK,
                                         examples=["translate"])]
ProviderKey = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$",
                                          description="stored lower-cased")]
Reason = Annotated[str, msgspec.Meta(max_length=500)]
# A list filter: an exact capability name; empty means no filter (a query string cannot say null otherwise).
CapabilityFilterValue = Annotated[str, msgspec.Meta(max_length=MAX_NAME, description="exact capability name")]


class MoneyBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    amount: Annotated[int, msgspec.Meta(ge=0, le=MAX_AMOUNT, description="integer minor units")]
    currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$", examples=["USD"])]


class SellersBody(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    allow: Annotated[list[uuid.UUID], msgspec.Meta(max_length=rules.MAX_SELLER_LIST)] = msgspec.field(
        default_factory=list)
    deny: Annotated[list[uuid.UUID], msgspec.Meta(max_length=rules.MAX_SELLER_LIST)] = msgspec.field(
        default_factory=list)


class ConstraintsBody(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    max_price: MoneyBody | None = None
    provider_keys: Annotated[list[ProviderKey], msgspec.Meta(max_length=rules.MAX_PROVIDER_KEYS)] = msgspec.field(
        default_factory=list)
    sellers: SellersBody | None = None
    strategy: Strategy = Strategy.BALANCED
    fallbacks: Annotated[int, msgspec.Meta(ge=0, le=rules.MAX_FALLBACKS)] = 2
    timeout_ms: Annotated[int, msgspec.Meta(ge=rules.MIN_TIMEOUT_MS, le=rules.MAX_TIMEOUT_MS)] = 30_000

    def command(self) -> Constraints:
        sellers = self.sellers or SellersBody()
        price = Money(self.max_price.amount, self.max_price.currency) if self.max_price else None
        return Constraints(max_price=price, provider_keys=tuple(self.provider_keys),
                           sellers_allow=tuple(sellers.allow), sellers_deny=tuple(sellers.deny),
                           strategy=self.strategy.value, fallbacks=self.fallbacks, timeout_ms=self.timeout_ms)


class CreateTaskRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    capability: Capability
    input: Annotated[Any, msgspec.Meta(description=f"any JSON value, at most {rules.MAX_INPUT_BYTES} bytes encoded;"
                                                   " sellers validate it against their inputSchema")] = None
    constraints: ConstraintsBody | None = None
    auto: bool = False


class CancelTaskRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    reason: Reason | None = None


# --- views ---------------------------------------------------------------------------------------


class ConstraintsView(msgspec.Struct, rename="camel", frozen=True):
    max_price: Money | None
    provider_keys: list[str]
    sellers: SellersBody
    strategy: Strategy
    fallbacks: int
    timeout_ms: int

    @classmethod
    def of(cls, c: Constraints) -> ConstraintsView:
        return cls(max_price=c.max_price, provider_keys=list(c.provider_keys),
                   sellers=SellersBody(allow=list(c.sellers_allow), deny=list(c.sellers_deny)),
                   strategy=Strategy(c.strategy), fallbacks=c.fallbacks, timeout_ms=c.timeout_ms)


class CandidateView(msgspec.Struct, rename="camel", frozen=True):
    """A listing as discovery saw it (the price is the snapshot this task keeps)."""

    listing_id: uuid.UUID
    node_id: uuid.UUID
    seller_machine_id: uuid.UUID
    seller_account_id: uuid.UUID
    seller_name: str
    capability: str
    provider_key: str
    price: Money

    @classmethod
    def of(cls, c: Candidate) -> CandidateView:
        return cls(**msgspec.structs.asdict(c))


class DroppedView(msgspec.Struct, rename="camel", frozen=True):
    listing_id: uuid.UUID
    seller_machine_id: uuid.UUID
    reason: str

    @classmethod
    def of(cls, d: Dropped) -> DroppedView:
        return cls(listing_id=d.listing_id, seller_machine_id=d.seller_machine_id, reason=d.reason)


class SellerRecordView(msgspec.Struct, rename="camel", frozen=True):
    runs: int
    success_rate: float | None
    p50_latency_ms: int | None
    cooling_down: bool


class FeaturesView(msgspec.Struct, rename="camel", frozen=True):
    price: float
    reliability: float
    speed: float


class ScoredView(msgspec.Struct, rename="camel", frozen=True):
    rank: int
    score: float
    reason: str
    candidate: CandidateView
    features: FeaturesView
    record: SellerRecordView

    @classmethod
    def of(cls, s: Scored) -> ScoredView:
        f: Features = s.features
        r: SellerRecord = s.record
        return cls(rank=s.rank, score=s.score, reason=s.reason, candidate=CandidateView.of(s.candidate),
                   features=FeaturesView(price=f.price, reliability=f.reliability, speed=f.speed),
                   record=SellerRecordView(runs=r.runs, success_rate=r.success_rate,
                                           p50_latency_ms=r.p50_latency_ms, cooling_down=r.cooling_down))


class TaskView(msgspec.Struct, rename="camel", frozen=True):
    id: uuid.UUID
    machine_id: uuid.UUID
    account_id: uuid.UUID
    capability: str
    input: Any
    constraints: ConstraintsView
    auto: bool
    status: TaskStatus
    candidates_count: int
    candidates: list[CandidateView]
    dropped: list[DroppedView]
    route_id: uuid.UUID | None
    runs_count: int
    outcome_code: str | None
    version: int
    created_at: UtcTime
    updated_at: UtcTime


class TaskPage(msgspec.Struct, rename="camel", frozen=True):
    """One page of a list; nextCursor fetches the next (null on the last page)."""

    data: list[TaskView]
    next_cursor: str | None = None


class Explanation(msgspec.Struct, rename="camel", frozen=True):
    """Why the route is what it is: every candidate in rank order with its score and reason, the candidates
    resolve left out (cooling down), and the listings discovery dropped, each with the reason."""

    ranked: list[ScoredView]
    excluded: list[DroppedView]
    dropped: list[DroppedView]


class RouteView(msgspec.Struct, rename="camel", frozen=True):
    id: uuid.UUID | None  # null in a dry run: nothing was recorded
    task_id: uuid.UUID
    machine_id: uuid.UUID
    capability: str
    strategy: Strategy
    dry_run: bool
    chosen: CandidateView
    steps: list[CandidateView]  # the chosen candidate, then the fallbacks in order
    explanation: Explanation
    created_at: UtcTime | None
    policy: Annotated[DecisionView | None, msgspec.Meta(
        description="dry run only: the policies' decision on the chosen seller, as resolve would take it"
                    " (allow or would-deny; a refusal answers 403 POLICY_DENIED). Nothing is recorded.")] = None


class RoutePage(msgspec.Struct, rename="camel", frozen=True):
    data: list[RouteView]
    next_cursor: str | None = None


class RunView(msgspec.Struct, rename="camel", frozen=True):
    id: uuid.UUID
    task_id: uuid.UUID
    attempt: int
    buyer_machine_id: uuid.UUID
    buyer_account_id: uuid.UUID
    seller_machine_id: uuid.UUID
    seller_account_id: uuid.UUID
    listing_id: uuid.UUID
    capability: str
    provider_key: str
    status: RunStatus
    http_status: int | None
    latency_ms: int | None
    error_class: str | None
    retryable: bool | None
    response_digest: str | None
    body: Any
    started_at: UtcTime
    finished_at: UtcTime | None


class RunPage(msgspec.Struct, rename="camel", frozen=True):
    data: list[RunView]
    next_cursor: str | None = None


class OutcomeView(msgspec.Struct, rename="camel", frozen=True):
    task_id: uuid.UUID
    machine_id: uuid.UUID
    capability: str
    status: OutcomeStatus
    code: str | None
    detail: str | None
    run_id: uuid.UUID | None
    http_status: int | None
    output: Any  # the seller's JSON answer (the finishing run's body)
    finished_at: UtcTime


class OutcomePage(msgspec.Struct, rename="camel", frozen=True):
    data: list[OutcomeView]
    next_cursor: str | None = None


class ExecutionView(msgspec.Struct, rename="camel", frozen=True):
    """202: execution is under way (poll the Location); the outcome is null until the task finishes."""

    task_id: uuid.UUID
    status: TaskStatus
    run_id: uuid.UUID | None
    outcome: OutcomeView | None
