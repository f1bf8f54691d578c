"""RFC 9457 problem details: the one map from errors to status codes, and their OpenAPI documentation."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Annotated, Any

import asyncpg
import msgspec
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.openapi.datastructures import ResponseSpec

from app import sealing
from app.api.problem_examples import problem_examples
from app.api.validation_names import wire_names
from app.db import database_unavailable, outage_behind
from domain.accounts import errors as account_errors
from domain.graph import errors as graph_errors
from domain.machines import errors as machine_errors
from domain.market import errors as market_errors
from domain.market import order_errors
from domain.policies import errors as policy_errors
from domain.runtime import errors as runtime_errors
from domain.shared import errors as shared
from domain.tasks import errors as task_errors

log = logging.getLogger("mm.api")

PROBLEM_JSON = "application/problem+json"


class Problem(msgspec.Struct, kw_only=True, omit_defaults=True):
    type: str
    title: str
    status: Annotated[int, msgspec.Meta(ge=100, le=599)]
    code: str
    detail: str | None = None
    instance: str | None = None
    requestId: str | None = None
    errors: list[dict[str, Any]] | None = None
    extra: dict[str, Any] | None = None
    # POLICY_DENIED (403): the refusing policy, its rule (type), why, and the recorded decision's id.
    policyId: str | None = None
    rule: str | None = None
    reason: str | None = None
    decisionId: str | None = None


class ApiError(Exception):
    """An HTTP-level refusal that is not a domain decision (auth, idempotency, preconditions)."""

    def __init__(self, status: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.extra = status, code, detail, extra


STATUS_OF: dict[type[shared.DomainError], int] = {
    shared.ValidationFailed: 400,
    shared.NotFound: 404,
    shared.PermissionDenied: 403,
    shared.ConcurrencyConflict: 409,
    shared.InvalidTransition: 409,
    shared.PreconditionFailed: 412,
    account_errors.ApiKeyNotFound: 404,
    machine_errors.MachineNotActivated: 409,
    machine_errors.MachineNotActive: 409,
    machine_errors.IdentityAlreadyVerified: 409,
    machine_errors.ChallengeMissing: 409,
    machine_errors.ChallengeExpired: 422,
    machine_errors.SignatureInvalid: 422,
    sealing.SecretsUnavailable: 503,
    runtime_errors.AgentAuthRequired: 401,
    runtime_errors.AgentAuthInvalid: 401,
    runtime_errors.AgentPairingInactive: 403,
    runtime_errors.AgentPolicyDenied: 403,
    graph_errors.NodeMissing: 422,
    graph_errors.EdgeExists: 409,
    graph_errors.GraphLimitReached: 409,
    graph_errors.InputSchemaInvalid: 422,
    task_errors.NoRoute: 409,
    task_errors.RouteRequired: 409,
    task_errors.TaskNotCancellable: 409,
    policy_errors.PolicyDenied: 403,
    market_errors.InsufficientFunds: 409,
    market_errors.EscrowAlreadyHeld: 409,
    market_errors.EscrowNotHeld: 409,
    order_errors.OrderStateConflict: 409,
    order_errors.PaymentProofInvalid: 422,
    order_errors.PaymentIntentExpired: 409,
    order_errors.ConfirmWindowClosed: 409,
    order_errors.ListingUnavailable: 409,
}

TITLES = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    409: "Conflict", 412: "Precondition Failed", 413: "Content Too Large", 415: "Unsupported Media Type",
    422: "Unprocessable Content", 428: "Precondition Required", 429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}


def title_for(status: int) -> str:
    """Our titles, else the standard reason phrase (a seller's 4xx relayed by execute may be any of them)."""
    if status in TITLES:
        return TITLES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def status_for(exc: shared.DomainError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return 400


def problem_response(request: Request[Any, Any, Any] | None, status: int, code: str, detail: str | None,
                     **more: Any) -> Response[Problem]:
    request_id = request.scope.get("state", {}).get("request_id") if request is not None else None
    body = Problem(
        type=f"https://docs.machine-markets.dev/problems/{code.lower().replace('_', '-')}",
        title=title_for(status),
        status=status,
        code=code,
        detail=detail,
        instance=str(request.url.path) if request is not None else None,
        requestId=request_id,
        **more,
    )
    return Response(body, status_code=status, media_type=PROBLEM_JSON)


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    response = _problem_for(request, exc)
    # Headers these statuses require (RFC 9110): Allow on 405, as Litestar supplies it; a challenge on 401.
    if isinstance(exc, HTTPException) and exc.headers:
        response.headers.update(exc.headers)
    if response.status_code == 401:
        response.headers.setdefault("WWW-Authenticate", 'Bearer realm="machine-markets"')
    if response.status_code == 503:
        response.headers.setdefault("Retry-After", str(RETRY_AFTER_S))
    return response


RETRY_AFTER_S = 2


def _problem_for(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    if database_unavailable(exc):
        return _unavailable(request, exc)
    if isinstance(exc, asyncpg.UntranslatableCharacterError | asyncpg.CharacterNotInRepertoireError):
        # PostgreSQL text and jsonb cannot hold NUL (\u0000): that is the client's input, not our fault.
        return problem_response(request, 400, "VALIDATION_ERROR", "text must not contain NUL (\\u0000) characters")
    if isinstance(exc, RecursionError):
        # The JSON decoder recurses once per level: absurdly nested input is the client's, not a fault here.
        return problem_response(request, 400, "VALIDATION_ERROR", "the JSON body is nested too deeply")
    if isinstance(exc, policy_errors.PolicyDenied):
        e = exc.extra
        return problem_response(request, 403, exc.code, exc.detail, policyId=e["policy_id"], rule=e["rule"],
                                reason=e["reason"], decisionId=e["decision_id"],
                                extra={"ruleIndex": e["rule_index"], "policyVersion": e["policy_version"]})
    if isinstance(exc, shared.DomainError):
        return problem_response(request, status_for(exc), exc.code, exc.detail, extra=exc.extra or None)
    if isinstance(exc, ApiError):
        return problem_response(request, exc.status, exc.code, exc.detail, extra=exc.extra or None)
    if isinstance(exc, ValidationException):
        errors = wire_names(request, exc.extra) if isinstance(exc.extra, list) else None
        return problem_response(request, 400, "VALIDATION_ERROR", _validation_detail(exc, errors), errors=errors)
    if isinstance(exc, NotAuthorizedException):
        return problem_response(request, 401, "UNAUTHORIZED", exc.detail)
    if isinstance(exc, PermissionDeniedException):
        return problem_response(request, 403, "PERMISSION_DENIED", exc.detail)
    if isinstance(exc, NotFoundException):
        return problem_response(request, 404, "NOT_FOUND", exc.detail)
    if isinstance(exc, MethodNotAllowedException):
        return problem_response(request, 405, "METHOD_NOT_ALLOWED", exc.detail)
    if isinstance(exc, HTTPException):
        code = "VALIDATION_ERROR" if exc.status_code == 400 else TITLES.get(exc.status_code, "ERROR").upper()
        return problem_response(request, exc.status_code, code.replace(" ", "_"), exc.detail)
    if outage_behind(exc):
        # Not itself an outage, but raised from or while handling one: still the outage, not a bug to log.
        return _unavailable(request, exc)
    log.exception("unhandled error", exc_info=exc)
    return problem_response(request, 500, "INTERNAL_ERROR", "an unexpected error occurred; it has been logged")


def _unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    log.warning("database unavailable: %s: %s", type(exc).__name__, exc)
    return problem_response(request, 503, "DATABASE_UNAVAILABLE",
                            "the database is unavailable; retry after the delay in Retry-After")


def _validation_detail(exc: ValidationException, errors: list[Any] | None) -> str:
    detail = exc.detail or "the request is not valid"
    if errors:
        first = errors[0]
        if isinstance(first, dict) and first.get("message"):
            where = f" (at {first['key']})" if first.get("key") else ""
            return f"{detail}: {first['message']}{where}"
    return detail


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the problem responses a route can return."""
    return {
        s: ResponseSpec(data_container=Problem, description=title_for(s), media_type=PROBLEM_JSON,
                        generate_examples=False, examples=problem_examples(s))
        for s in statuses
    }


