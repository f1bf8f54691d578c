"""Time travel for single-resource GETs: `?asOf=<RFC 3339>` or `?version=N` -> the aggregate rebuilt from the log.

One helper for every aggregate kind: a GET handler adds the two query parameters (AsOfParam, VersionParam),
calls `point_in_time(...)`, and when that is not None answers `await load_as_of(...)` (the repository's
versioned load: the aggregate's own evolve steps up to that version, from a snapshot at or below it) with
`as_of_headers(...)`. Tasks and policies have joined (app/api/tasks.py, policies.py); orders join the same way.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from datetime import datetime
from typing import Annotated, Any, TypeVar

import msgspec
from eventsourcing.domain import Aggregate
from litestar.params import QueryParameter

from app.api.audit import rfc3339
from app.api.consistency import etag
from app.api.openapi_headers import AS_OF_VERSION
from app.api.problems import ApiError
from app.container import Container
from app.store.history import History
from domain.shared.errors import NotFound

A = TypeVar("A", bound=Aggregate)
# Exactly representable as a JSON number (a float); far above any stream length, and within bigint.
MAX_VERSION = 2**53

AsOfParam = Annotated[str | None, QueryParameter(
    name="asOf", format="date-time", max_length=64,
    description="RFC 3339 time: answer the resource as it stood then, rebuilt from the event log"
                " (404 before it existed). Not with version.")]
VersionParam = Annotated[int | None, QueryParameter(
    name="version", ge=1, le=MAX_VERSION,
    description="Answer the resource as it stood right after this version of its stream. Not with asOf.")]


class PointInTime(msgspec.Struct, frozen=True):
    version: int | None = None
    at: datetime | None = None


def point_in_time(as_of: str | None, version: int | None) -> PointInTime | None:
    """None for a plain (current) read; a 422 when both are given (they could disagree)."""
    if as_of is not None and version is not None:
        raise ApiError(422, "AMBIGUOUS_POINT_IN_TIME", "give asOf or version, not both")
    if version is not None:
        return PointInTime(version=version)
    if as_of is not None:
        return PointInTime(at=rfc3339("asOf", as_of))
    return None


async def version_at(container: Container, stream_id: uuid.UUID, point: PointInTime, what: str) -> int:
    if point.version is not None:
        return point.version
    assert point.at is not None
    version = await History(container.pool).version_at(stream_id, point.at)
    if version is None:
        raise NotFound(f"{what} did not exist at {point.at.isoformat()}")
    return version


async def load_as_of(container: Container, cls: type[A], stream_id: uuid.UUID, point: PointInTime,
                     what: str) -> A:
    """The aggregate as it stood at `point`; NOT_FOUND for a version it never had or a moment before it began."""
    version = await version_at(container, stream_id, point, what)
    return await container.repo.get(cls, stream_id, what=what, version=version)


async def load_guarded(container: Container, guard: Awaitable[object], cls: type[A], stream_id: uuid.UUID,
                       point: PointInTime, what: str) -> A:
    """`load_as_of` side by side with the guard of the machine it belongs to (ownership, status): one round trip
    of latency instead of two. The guard's refusal wins; a load that finished meanwhile is discarded."""
    checked, loaded = await asyncio.gather(guard, load_as_of(container, cls, stream_id, point, what),
                                           return_exceptions=True)
    for outcome in (checked, loaded):
        if isinstance(outcome, BaseException):
            raise outcome
    assert isinstance(loaded, cls)
    return loaded


def as_of_headers(version: int) -> dict[str, Any]:
    return {"ETag": etag(version), AS_OF_VERSION: str(version)}
