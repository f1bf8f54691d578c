"""HTTP route for the audit feed: every state change, filterable, exportable page by page."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency, Provide
from litestar.params import QueryParameter

from app.api.consistency import honour_min_position
from app.api.context import AUTHENTICATED, Principal, container_of, provide_principal
from app.api.openapi_headers import MIN_POSITION, headers
from app.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, encode_cursor
from app.api.problems import ApiError, problems
from app.api.schema_types import UtcTime
from projections.audit_reader import AuditFilter, list_audit_events


class AuditEventView(msgspec.Struct, rename="camel", frozen=True):
    id: uuid.UUID
    type: str
    occurred_at: UtcTime
    actor: str | None
    account_id: uuid.UUID | None
    machine_id: uuid.UUID | None
    subject: str
    data: dict[str, Any]
    request_id: str | None
    correlation_id: str | None
    causation_id: str | None
    cursor: str
    # The record's place in its account's hash chain: hash = SHA-256(prevHash || canonical record), hex.
    # Null only for rows written before the chain existed, until the projector's rebuild hashes them.
    seq: int | None = None
    prev_hash: str | None = None
    hash: str | None = None


class AuditEventPage(msgspec.Struct, rename="camel", frozen=True):
    """One page of a list; nextCursor fetches the next (null on the last page)."""

    data: list[AuditEventView]
    next_cursor: str | None = None


AuditType = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9-]*(\.[a-z][a-z0-9-]*)+$", max_length=100)]
# The feed's filters, shared by the list, the export and the live stream.
TypeFilter = Annotated[list[AuditType] | None, QueryParameter(name="type", description="one or more public type names")]
MachineFilter = Annotated[uuid.UUID | None, QueryParameter(name="machineId")]
TextFilter = Annotated[str | None, QueryParameter(max_length=200)]
CorrelationFilter = Annotated[str | None, QueryParameter(
    name="correlationId", max_length=256,
    description="everything one request caused (its X-Request-Id), through the workers")]
Since = Annotated[str | None, QueryParameter(format="date-time", max_length=64, description="RFC 3339 time, inclusive")]
Until = Annotated[str | None, QueryParameter(format="date-time", max_length=64, description="RFC 3339 time, exclusive")]


def audit_filter(principal: Principal, type_: list[str] | None, machine_id: uuid.UUID | None, subject: str | None,
                 actor: str | None, since: str | None, until: str | None,
                 correlation_id: str | None = None) -> AuditFilter:
    """The caller's selection: admins see every account, anyone else only their own."""
    return AuditFilter(account_id=None if principal.is_admin else principal.account_id, types=type_,
                       machine_id=machine_id, subject=subject, actor=actor, correlation_id=correlation_id,
                       since=rfc3339("since", since),
                       until=rfc3339("until", until))


def parse_cursor(cursor: str | None, name: str = "cursor") -> tuple[int, int] | None:
    if not cursor:
        return None
    tx, pos = decode_cursor(cursor, 2)
    # Exact ints in bigint range: a forged cursor (true, 2**70, -1) is a 400, not a 500 or a rewind.
    if not all(type(v) is int and 0 <= v < 2**63 for v in (tx, pos)):
        raise ApiError(400, "VALIDATION_ERROR", f"{name} is not valid; use a cursor from a record you received")
    return tx, pos


def view_of(r: dict[str, Any]) -> AuditEventView:
    tx_id, position = r.pop("tx_id"), r.pop("position")
    prev, digest = r.pop("prev_hash"), r.pop("hash")
    return AuditEventView(**r, cursor=encode_cursor(tx_id, position), prev_hash=prev.hex() if prev else None,
                          hash=digest.hex() if digest else None)


def rfc3339(name: str, value: str | None) -> datetime | None:
    """Strict RFC 3339 with an offset: a bare number or a local time is refused, not guessed at."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        parsed = None
    if parsed is not None and parsed.tzinfo is not None:
        try:
            parsed.astimezone(UTC)  # an offset can push year 1 or 9999 out of range
        except OverflowError:
            parsed = None
    if parsed is None or parsed.tzinfo is None or "T" not in value.upper():
        raise ApiError(400, "VALIDATION_ERROR",
                       f"{name} must be an RFC 3339 time with an offset, e.g. 2026-01-31T12:00:00Z")
    return parsed


class AuditController(Controller):
    path = "/v1/audit-events"
    tags = ["audit"]
    security = AUTHENTICATED
    dependencies = {"principal": Provide(provide_principal)}

    @get("/", operation_id="listAuditEvents", opt=headers(honours=[MIN_POSITION]),
         summary="List audit events (account-scoped; admins see all)", responses=problems(400, 401, 503))
    async def list_(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        type_: TypeFilter = None,
        machine_id: MachineFilter = None,
        subject: TextFilter = None,
        actor: TextFilter = None,
        correlation_id: CorrelationFilter = None,
        since: Since = None,
        until: Until = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
    ) -> AuditEventPage:
        container = container_of(request)
        after = parse_cursor(cursor)
        filt = audit_filter(principal, type_, machine_id, subject, actor, since, until, correlation_id)
        await honour_min_position(request, container.pool, "audit", container.settings.read_your_writes_timeout_s)
        rows = await list_audit_events(container.pool, filt, after, limit + 1)
        more = len(rows) > limit
        views = [view_of(r) for r in rows[:limit]]
        return AuditEventPage(data=views, next_cursor=views[-1].cursor if more and views else None)
