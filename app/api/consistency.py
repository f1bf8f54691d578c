"""Read-your-writes: ETags from versions, and waiting for a projection to reach a log position."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from litestar import Request

from app.api.problems import ApiError
from app.store.types import LogPosition
from projections import checkpoints

# A quoted version ("3", W/"3"); a bare 3 is tolerated, an unbalanced quote is not.
_ETAG = re.compile(r'^(?:W/)?(?:"(\d+)"|(\d+))$')
POSITION_HEADER = "X-Log-Position"
MIN_POSITION_HEADER = "x-min-position"


def etag(version: int) -> str:
    return f'"{version}"'


def write_headers(version: int | None, position: LogPosition | None, **extra: str) -> dict[str, str]:
    """What every command response carries: the resource's ETag and where its write sits in the log."""
    out = dict(extra)
    if version is not None:
        out["ETag"] = etag(version)
    if position is not None:
        out[POSITION_HEADER] = position.token()
    return out


def expected_version(request: Request[Any, Any, Any]) -> int | None:
    """If-Match as the version the client last saw; '*' or absent means no precondition."""
    raw = request.headers.get("if-match")
    if raw is None or raw.strip() == "*":
        return None
    match = _ETAG.match(raw.strip())
    if not match:
        raise ApiError(400, "VALIDATION_ERROR", 'If-Match must be an ETag such as "3"')
    return int(match.group(1) or match.group(2))


async def _within(check: Callable[[], Awaitable[bool]], within_s: float) -> bool:
    """Poll `check` with a short, growing back-off until it holds (True) or `within_s` has passed (False)."""
    deadline = time.monotonic() + within_s
    delay = 0.002
    while not await check():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
    return True


def _lagging(projection: str) -> ApiError:
    return ApiError(503, "PROJECTION_LAGGING", f"the {projection} read model has not caught up yet; retry")


async def wait_for(pool: asyncpg.Pool, projection: str, target: LogPosition, within_s: float) -> bool:
    async def reached() -> bool:
        async with pool.acquire() as conn:
            at = await checkpoints.position(conn, projection)
        return at is not None and at >= target

    return await _within(reached, within_s)


# True once the projection's checkpoint has passed the stream's newest event (NULL checkpoint: not started);
# no row when the stream has no events, so there is nothing to wait for.
_STREAM_APPLIED = """
SELECT COALESCE((c.tx_id, c.position) >= (e.tx_id, e.position), false)
FROM (SELECT tx_id, position FROM events WHERE stream_id = $1 ORDER BY version DESC LIMIT 1) e
LEFT JOIN projection_checkpoints c ON c.name = $2
"""


async def read_your_writes(pool: asyncpg.Pool, projection: str, stream_id: uuid.UUID, within_s: float) -> None:
    """Before a single-resource GET: wait until `projection` has applied the resource's newest event.

    A client that only uses what the API returns reads its own writes (a GET right after a 201 finds the
    row; after a PATCH it shows the change) without knowing about X-Min-Position. One indexed lookup when
    the read model is current; answers 503 PROJECTION_LAGGING (with Retry-After) past `within_s`.
    """

    async def applied() -> bool:
        done = await pool.fetchval(_STREAM_APPLIED, stream_id, projection)
        return done is None or bool(done)  # None: the stream has no events, nothing to wait for

    if not await _within(applied, within_s):
        raise _lagging(projection)


async def honour_min_position(request: Request[Any, Any, Any], pool: asyncpg.Pool, projection: str,
                              within_s: float) -> None:
    """A GET with X-Min-Position waits until the read model includes that write (or answers 503)."""
    token = request.headers.get(MIN_POSITION_HEADER)
    if not token:
        return
    try:
        target = LogPosition.parse(token)
    except ValueError:
        raise ApiError(400, "VALIDATION_ERROR", "X-Min-Position must be a token from X-Log-Position") from None
    if not await wait_for(pool, projection, target, within_s):
        raise _lagging(projection)
