"""Operational endpoints: liveness, readiness (database, broker, projection lag) and Prometheus metrics."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

import msgspec
from litestar import MediaType, Request, Response, get
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.openapi.datastructures import ResponseSpec
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from app.api.context import container_of
from app.api.problems import RETRY_AFTER_S
from projections.status import oldest_write_transaction_seconds, projection_status

READY_MAX_LAG_SECONDS = 30.0
_CHECK_TIMEOUT_S = 2.0

REGISTRY = CollectorRegistry()
HTTP_REQUESTS = Counter("mm_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=REGISTRY)
HTTP_LATENCY = Histogram("mm_http_request_seconds", "HTTP request latency", ["method", "route"], registry=REGISTRY)
LAG_EVENTS = Gauge("mm_projection_lag_events", "Events not yet applied", ["projection"], registry=REGISTRY)
LAG_SECONDS = Gauge("mm_projection_lag_seconds", "Age of the oldest unapplied event", ["projection"],
                    registry=REGISTRY)
OLDEST_TX = Gauge("mm_oldest_write_transaction_seconds", "Age of the oldest open write transaction",
                  registry=REGISTRY)


class Health(msgspec.Struct):
    status: str


class Check(msgspec.Struct):
    name: str
    ok: bool
    detail: str | None = None


class Readiness(msgspec.Struct):
    status: str
    checks: list[Check]


@get("/health", operation_id="getHealth", tags=["system"], summary="Liveness", sync_to_thread=False)
def health() -> Health:
    return Health(status="ok")


@get("/ready", operation_id="getReadiness", tags=["system"], summary="Readiness: database, broker, projection lag",
     responses={503: ResponseSpec(data_container=Readiness, description="Not ready: the failing checks say why")})
async def ready(request: Request[Any, Any, Any]) -> Response[Readiness]:
    container = container_of(request)
    checks = [await _database_check(container)]
    if checks[0].ok:
        checks += await _projection_checks(container)
    checks.append(await _broker_check(container.settings.broker_url, container))
    ok = all(c.ok for c in checks)
    headers = {} if ok else {"Retry-After": str(RETRY_AFTER_S)}
    return Response(Readiness(status="ready" if ok else "not-ready", checks=checks), status_code=200 if ok else 503,
                    headers=headers)


# Readiness reports failures, it never raises them: each check turns its own error into a failed check.
async def _database_check(container: Any) -> Check:
    try:
        await asyncio.wait_for(container.pool.fetchval("SELECT 1"), _CHECK_TIMEOUT_S)
        return Check(name="database", ok=True)
    except Exception as exc:
        return Check(name="database", ok=False, detail=_why(exc))


async def _projection_checks(container: Any) -> list[Check]:
    try:
        rows = await asyncio.wait_for(projection_status(container.pool, container.projection_names), _CHECK_TIMEOUT_S)
    except Exception as exc:
        return [Check(name="projections", ok=False, detail=_why(exc))]
    return [Check(name=f"projection:{r['name']}", ok=r["lag_seconds"] < READY_MAX_LAG_SECONDS,
                  detail=f"{r['lag_events']} events, {r['lag_seconds']:.1f}s behind") for r in rows]


async def _broker_check(url: str | None, container: Any) -> Check:
    if not url or url.startswith(("postgres://", "postgresql://")):
        try:
            exists = await asyncio.wait_for(
                container.pool.fetchval("SELECT to_regclass('worker_messages') IS NOT NULL"), _CHECK_TIMEOUT_S)
        except Exception as exc:
            return Check(name="broker", ok=False, detail=f"postgresql: {_why(exc)}")
        return Check(name="broker", ok=bool(exists), detail="postgresql" if exists else "postgresql: no queue table")
    parts = urlsplit(url)
    default_port = {"amqp": 5672, "amqps": 5671, "redis": 6379, "rediss": 6379}.get(parts.scheme, 0)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, parts.port or default_port),
                                           _CHECK_TIMEOUT_S)
        writer.close()
        return Check(name="broker", ok=True, detail=parts.scheme)
    except (OSError, TimeoutError):
        return Check(name="broker", ok=False, detail=f"{parts.scheme} unreachable")


def _why(exc: BaseException) -> str:
    # The class names the failure (ConnectionRefusedError, TimeoutError, ...); messages may carry hosts.
    return "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__


@get("/metrics", operation_id="getMetrics", tags=["system"], summary="Prometheus metrics", media_type=MediaType.TEXT)
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    container = container_of(request)
    for r in await projection_status(container.pool, container.projection_names):
        LAG_EVENTS.labels(r["name"]).set(r["lag_events"])
        LAG_SECONDS.labels(r["name"]).set(r["lag_seconds"])
    OLDEST_TX.set(await oldest_write_transaction_seconds(container.pool))
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


# Each series' child, looked up once: `labels()` checks and locks on every call. Bounded by routes x statuses.
_series: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def observe(method: str, route: str, status: int, started: float) -> None:
    series = _series.get((method, route, status))
    if series is None:
        series = _series[(method, route, status)] = (HTTP_REQUESTS.labels(method, route, str(status)),
                                                     HTTP_LATENCY.labels(method, route))
    series[0].inc()
    series[1].observe(time.perf_counter() - started)


@get("/openapi.json", include_in_schema=False, media_type=MediaType.JSON)
async def openapi_json(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    # The finished document (app.api.openapi), the one /docs renders too.
    return Response(request.app.plugins.get(OpenAPIPlugin).provide_openapi_schema(), media_type=MediaType.JSON)
