"""HTTP routes for policies: define, list, read, revise (If-Match), versions, and evaluate a hypothetical action."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter

from app.api.consistency import etag, expected_version, honour_min_position, read_your_writes, write_headers
from app.api.context import AUTHENTICATED, Principal, container_of, provide_ctx, provide_principal
from app.api.openapi_headers import AS_OF_VERSION, ETAG, IF_MATCH, LOCATION, LOG_POSITION, MIN_POSITION, headers
from app.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, decode_time_cursor, encode_cursor
from app.api.policy_views import decision_view, policy_view, row_view, to_rules, to_scope, version_view
from app.api.problems import ApiError, problems
from app.api.schemas_decisions import DecisionView
from app.api.schemas_policies import (
    BacktestRequest,
    BacktestSampleView,
    BacktestView,
    CreatePolicyRequest,
    EvaluateRequest,
    PolicyPage,
    PolicyVersionPage,
    PolicyView,
    RevisePolicyRequest,
)
from app.api.time_travel import AsOfParam, PointInTime, VersionParam, as_of_headers, load_as_of, point_in_time
from app.services.policies import Hypothesis, PolicyOutcome
from app.services.policy_backtest import BacktestResult, run_backtest
from domain.policies import rules as policy_rules
from domain.policies.aggregate import Policy
from domain.policies.commands import RevisePolicy
from domain.policies.errors import PolicyNotFound
from domain.policies.values import PolicyVersion
from domain.shared.context import CommandContext
from domain.shared.errors import NotFound, ValidationFailed
from domain.shared.ids import new_id
from domain.shared.money import Money
from projections.machines_reader import get_machine
from projections.policies_reader import get_policy, list_policies, list_versions

PROJECTION = "policies"


def _respond(outcome: PolicyOutcome, status: int = 200, **extra: str) -> Response[PolicyView]:
    return Response(policy_view(outcome.policy), status_code=status,
                    headers=write_headers(outcome.policy.version, outcome.position, **extra))


def _tenant(principal: Principal) -> uuid.UUID | None:
    return None if principal.is_admin else principal.account_id


async def _visible(request: Request[Any, Any, Any], principal: Principal, policy_id: uuid.UUID) -> dict[str, Any]:
    """The policy's current row once it includes the policy's newest event; NOT_FOUND when not the caller's."""
    c = container_of(request)
    await read_your_writes(c.pool, PROJECTION, policy_id, c.settings.read_your_writes_timeout_s)
    row = await get_policy(c.pool, policy_id, _tenant(principal))
    if row is None:
        raise PolicyNotFound(f"policy {policy_id} not found")
    return row


async def _visible_as_of(request: Request[Any, Any, Any], principal: Principal, policy_id: uuid.UUID,
                         point: PointInTime) -> Policy:
    """The policy rebuilt from the log at `point`, visible as GET shows it (own or platform; admins all)."""
    try:
        policy = await load_as_of(container_of(request), Policy, policy_id, point, "policy")
    except NotFound as exc:
        raise PolicyNotFound(exc.detail) from None
    # Owner and platform flag are fixed at definition, so the past version answers who may see it as now.
    if not (principal.is_admin or policy.platform or policy.account_id == principal.account_id):
        raise PolicyNotFound(f"policy {policy_id} not found")
    return policy


MAX_WINDOW = timedelta(days=31)


def _window(data: BacktestRequest) -> None:
    if not data.since < data.until <= data.since + MAX_WINDOW:
        raise ValidationFailed("the backtest window must have since before until, and span at most 31 days",
                               field="until")


def _draft(base: PolicyVersion, data: BacktestRequest) -> PolicyVersion:
    """The policy with the request's draft rules and scope, validated as a definition would be."""
    rules = policy_rules.check_rules(to_rules(data.rules)) if data.rules is not None else base.rules
    scope = policy_rules.check_scope(to_scope(data.scope)) if data.scope is not None else base.scope
    return msgspec.structs.replace(base, rules=rules, scope=scope)


def _backtest_view(policy: PolicyVersion, saved: bool, data: BacktestRequest, result: BacktestResult) -> BacktestView:
    report = result.report
    return BacktestView(
        policy_id=policy.policy_id if saved else None, policy_version=policy.version if saved else None,
        since=data.since, until=data.until, replayed=result.rows, truncated=result.truncated,
        evaluated=report.evaluated, denied=report.denied, denied_by_rule=report.denied_by_rule,
        denied_amounts=report.denied_amounts, denied_amounts_by_action=report.denied_amounts_by_action,
        samples=[BacktestSampleView(task_id=x.task_id, order_id=x.order_id, action=x.action, rule_index=x.rule_index,  # type: ignore[arg-type]
                                    rule_type=x.rule_type, reason=x.reason, at=x.at) for x in report.samples])


def _after_version(cursor: str) -> int:
    (value,) = decode_cursor(cursor, 1)
    if type(value) is not int or value < 0:
        raise ApiError(400, "VALIDATION_ERROR", "cursor is not valid; use nextCursor from a previous page")
    return value


class PoliciesController(Controller):
    path = "/v1/policies"
    tags = ["policies"]
    security = AUTHENTICATED
    dependencies = {"principal": Provide(provide_principal), "ctx": Provide(provide_ctx)}

    @post("/", operation_id="createPolicy", opt=headers(sends=[ETAG, LOG_POSITION, LOCATION]), status_code=201,
          summary="Define a policy",
          description="Owned by the caller's account and governing its machines in `scope`; an admin may define a"
                      " `platform` policy, which governs every account (403 PERMISSION_DENIED otherwise).",
          responses=problems(400, 401, 403, 409, 422))
    async def create(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                     data: JSONBody[CreatePolicyRequest]) -> Response[PolicyView]:
        outcome = await container_of(request).policies.define(
            ctx, name=data.name, description=data.description, scope=to_scope(data.scope), mode=data.mode,
            rules=to_rules(data.rules), platform=data.platform)
        return _respond(outcome, 201, Location=f"/v1/policies/{outcome.policy.id}")

    @get("/", operation_id="listPolicies", opt=headers(honours=[MIN_POSITION]), summary="List policies",
         description="Your account's policies and the platform's, oldest first. `machineId` keeps those that govern"
                     " that machine of yours (404 if it is not yours).",
         responses=problems(400, 401, 404, 503))
    async def list_(
        self, request: Request[Any, Any, Any], principal: NamedDependency[Principal],
        mode: Annotated[list[Literal["enforce", "shadow", "disabled"]] | None, QueryParameter(name="mode")] = None,
        machine_id: Annotated[uuid.UUID | None, QueryParameter(name="machineId")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
    ) -> PolicyPage:
        c = container_of(request)
        after = decode_time_cursor(cursor) if cursor else None
        governing = None
        if machine_id is not None:
            machine = await get_machine(c.pool, machine_id, _tenant(principal))
            if machine is None:
                raise NotFound(f"machine {machine_id} not found")
            governing = (machine["account_id"], machine_id, machine["labels"])
        await honour_min_position(request, c.pool, PROJECTION, c.settings.read_your_writes_timeout_s)
        rows = await list_policies(c.pool, account_id=_tenant(principal), modes=list(mode) if mode else None,
                                   governing=governing, after=after, limit=limit + 1)
        more, rows = len(rows) > limit, rows[:limit]
        next_cursor = encode_cursor(rows[-1]["created_at"].isoformat(), str(rows[-1]["id"])) if more else None
        return PolicyPage(data=[row_view(r) for r in rows], next_cursor=next_cursor)

    @get("/{policy_id:uuid}", operation_id="getPolicy",
         opt=headers(honours=[MIN_POSITION], sends=[ETAG, AS_OF_VERSION]),
         summary="Get a policy (its current version; or asOf a time / at a version)",
         responses=problems(400, 401, 404, 422, 503))
    async def get_one(self, request: Request[Any, Any, Any], principal: NamedDependency[Principal],
                      policy_id: FromPath[uuid.UUID], as_of: AsOfParam = None,
                      version: VersionParam = None) -> Response[PolicyView]:
        c = container_of(request)
        point = point_in_time(as_of, version)
        if point is not None:
            policy = await _visible_as_of(request, principal, policy_id, point)
            return Response(policy_view(policy), headers=as_of_headers(policy.version))
        await honour_min_position(request, c.pool, PROJECTION, c.settings.read_your_writes_timeout_s)
        row = await _visible(request, principal, policy_id)
        return Response(row_view(row), headers={"ETag": etag(row["version"])})

    @patch("/{policy_id:uuid}", operation_id="revisePolicy",
           opt=headers(honours=[IF_MATCH], sends=[ETAG, LOG_POSITION]),
           summary="Revise a policy (a new version)",
           description="Fields left out stay; `rules` replaces the list. A change that changes nothing records no"
                       " version. Platform policies are revised by admins only (403).",
           responses=problems(400, 401, 403, 404, 409, 412))
    async def revise(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                     policy_id: FromPath[uuid.UUID], data: JSONBody[RevisePolicyRequest]) -> Response[PolicyView]:
        cmd = RevisePolicy(name=data.name, description=data.description,
                           scope=to_scope(data.scope) if data.scope is not None else None, mode=data.mode,
                           rules=to_rules(data.rules) if data.rules is not None else None)
        outcome = await container_of(request).policies.revise(ctx, policy_id, cmd, expected_version(request))
        return _respond(outcome)

    @get("/{policy_id:uuid}/versions", operation_id="listPolicyVersions", opt=headers(honours=[MIN_POSITION]),
         summary="List every version of a policy",
         description="Oldest first; version 1 is the definition. A platform policy read by an account that is not"
                     " an admin shows no `actor`.",
         responses=problems(400, 401, 404, 503))
    async def versions(
        self, request: Request[Any, Any, Any], principal: NamedDependency[Principal],
        policy_id: FromPath[uuid.UUID],
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
    ) -> PolicyVersionPage:
        c = container_of(request)
        after = _after_version(cursor) if cursor else None
        await honour_min_position(request, c.pool, PROJECTION, c.settings.read_your_writes_timeout_s)
        await _visible(request, principal, policy_id)
        rows = await list_versions(c.pool, policy_id, after, limit + 1)
        more, rows = len(rows) > limit, rows[:limit]
        theirs = [not principal.is_admin and r["account_id"] != principal.account_id for r in rows]
        return PolicyVersionPage(data=[version_view(r, hide) for r, hide in zip(rows, theirs, strict=True)],
                                 next_cursor=encode_cursor(rows[-1]["version"]) if more else None)

    @post("/evaluate", operation_id="evaluatePolicies", status_code=200, opt=headers(honours=[MIN_POSITION]),
          summary="Dry-run one hypothetical action against the policies governing a machine",
          description="Answers the decision (allow, deny, would-deny), the first deny, and every rule of every"
                      " governing policy with its outcome and reason, counting what enforcement counts (spend"
                      " budgets of the current periods, recent task creations). Records nothing. X-Min-Position"
                      " waits for a policy change to be visible to the evaluation.",
          responses=problems(400, 401, 404, 409, 422, 503))
    async def evaluate(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                       data: JSONBody[EvaluateRequest]) -> DecisionView:
        c = container_of(request)
        await honour_min_position(request, c.pool, PROJECTION, c.settings.read_your_writes_timeout_s)
        price = Money(data.price.amount, data.price.currency) if data.price is not None else None
        q = Hypothesis(data.action, data.machine_id, capability=data.capability.strip() if data.capability else None,
                       seller_machine_id=data.seller_machine_id, price=price,
                       provider_key=data.provider_key.lower() if data.provider_key else None)
        decision = await c.policies.evaluate(ctx, q)
        return decision_view(decision, ctx.at)

    @post("/{policy_id:uuid}/backtest", operation_id="backtestPolicy", status_code=200,
          summary="What this policy (or a draft of it) would have denied over recorded history",
          description="Replays the task creations and resolutions, and the orders placed, recorded in [since, until)"
                      " (an order is judged as the action `order`, its task not again; at most 31 days and"
                      " `limit` actions) against the policy's current version, judged as if enforced, with spend and"
                      " rate counters simulated from that history. `rules` / `scope` in the body try a draft"
                      " instead. A label selector is judged on the labels each machine had when each action happened"
                      " (its own history), and counters are kept per account over the actions the policy governed,"
                      " as enforcement keeps them. Records nothing.",
          responses=problems(400, 401, 404, 409, 422))
    async def backtest(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                       policy_id: FromPath[uuid.UUID], data: JSONBody[BacktestRequest]) -> BacktestView:
        _window(data)
        c = container_of(request)
        saved = await c.policies.get(ctx, policy_id)
        version = _draft(saved.current_version(saved.version, saved.modified_on), data)
        result = await run_backtest(c.pool, version, data.since, data.until, data.limit)
        return _backtest_view(version, data.rules is None and data.scope is None, data, result)

    @post("/backtest", operation_id="backtestDraftPolicy", status_code=200,
          summary="What an unsaved policy would have denied over your recorded history",
          description="As backtestPolicy, for a draft of your account's: `rules` is required, `scope` defaults to"
                      " the whole account.",
          responses=problems(400, 401, 409, 422))
    async def backtest_draft(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                             data: JSONBody[BacktestRequest]) -> BacktestView:
        _window(data)
        if data.rules is None:
            raise ValidationFailed("a draft backtest needs rules", field="rules")
        assert ctx.account_id is not None
        base = PolicyVersion(policy_id=new_id(), version=0, account_id=ctx.account_id, platform=False,
                             name="draft", description="", scope=policy_rules.AccountScope(), mode="enforce",
                             rules=[], at=ctx.at)
        version = _draft(base, data)
        result = await run_backtest(container_of(request).pool, version, data.since, data.until, data.limit)
        return _backtest_view(version, False, data, result)
