"""Builds the Litestar application: routes, problem handling, middleware, OpenAPI, CORS."""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.enums import ScopeType
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from app.api.accounts import AccountsController
from app.api.agents import AgentsController, HeartbeatController
from app.api.audit_routes import AUDIT_CONTROLLERS
from app.api.catalogue import CatalogueController
from app.api.docs_ui import assets_router, docs_router, render_plugins
from app.api.graph import GraphController
from app.api.ledger import LedgerController
from app.api.machines import MachinesController
from app.api.middleware import REQUEST_ID, idempotency_middleware, new_request_id, send_problem
from app.api.openapi import finish_openapi
from app.api.openapi_headers import check_honoured_headers
from app.api.orders import OrdersController
from app.api.payment_callbacks import PaymentCallbacksController
from app.api.policies import PoliciesController
from app.api.problems import handle_exception
from app.api.runs import RunsController, TaskHistoryController
from app.api.runtime import RuntimeEndpointsController
from app.api.streams import StreamsController
from app.api.system import health, metrics, observe, openapi_json, ready
from app.api.task_execute import TaskExecutionController
from app.api.tasks import TasksController
from app.api.traces import TracesController
from app.api.webhook_deliveries import WebhookDeliveriesController
from app.api.webhooks import WebhookEndpointsController
from app.container import Container
from app.settings import Settings


def edge_middleware(litestar: Litestar, app: ASGIApp, max_header_bytes: int) -> ASGIApp:
    """The one layer around every request, routed or not: the header limit (431), a request id on every response,
    the metrics, and `Allow` on OPTIONS. One function and one send wrapper: as four nested layers they cost
    about a tenth of POST /v1/machines' CPU.

    `Allow`: Litestar 2.25 builds a path's OPTIONS handler when the first of its handlers registers and keeps
    that route's method list, so it would miss methods added by later handlers on the same path.
    """
    methods = {route.path_format: ", ".join(sorted(route.methods)) for route in litestar.routes}

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        size, incoming = 0, b""
        for name, value in scope["headers"]:
            size += len(name) + len(value)
            if name == b"x-request-id":
                incoming = value
        given = incoming.decode("latin-1")
        request_id = given if incoming and REQUEST_ID.match(given) else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        stamp, method, status = (b"x-request-id", request_id.encode()), scope["method"], 500

        async def send_stamped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"]
                allowed = methods.get(scope.get("path_template", "")) if method == "OPTIONS" else None
                if allowed:
                    headers = [h for h in headers if h[0].lower() != b"allow"]
                    headers.append((b"allow", allowed.encode()))
                headers.append(stamp)
                message["headers"] = headers
            await send(message)

        if size > max_header_bytes:
            # Every header is parsed, logged and compared on the way in; the server (httptools) sets no limit.
            await send_problem(scope, send_stamped, 431, "HEADERS_TOO_LARGE",
                               f"the request headers exceed {max_header_bytes} bytes in total")
            return
        started = time.perf_counter()
        try:
            await app(scope, receive, send_stamped)
        finally:
            # The template, not the path: one series per route, whatever ids the requests carried.
            observe(method, scope.get("path_template") or "unmatched", status, started)

    return middleware


def settle_garbage_collector() -> None:
    """Once the server process is built (routes, schemas, OpenAPI, pool): move everything alive to the
    collector's permanent generation and collect the young generation less often.

    A full collection walked the ~120,000 start-up objects each time (about 50-150 ms here, the whole process
    stopped): the p99 of POST /v1/machines. Nothing frozen is garbage; requests' cycles are still collected.
    Only the process that owns its container (`mm api`) does this: a test process builds many apps.
    """
    gc.collect()
    gc.freeze()
    # 700 allocations between young collections is a handful of requests; each collection then walks the
    # objects of every request in flight. Ten times fewer collections of the same young objects.
    gc.set_threshold(7000, 10, 10)


def create_app(settings: Settings, container: Container | None = None,
               open_container: Callable[[], Any] | None = None) -> Litestar:
    """Pass a ready `container` (tests) or an async `open_container` factory run at start-up."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        owned = None
        if container is None and open_container is not None:
            owned = await open_container()
            app.state.container = owned
            settle_garbage_collector()
        try:
            yield
        finally:
            if owned is not None:
                await owned.close()

    origins = list(settings.cors_origins)
    app = Litestar(
        route_handlers=[MachinesController, RuntimeEndpointsController, AgentsController, HeartbeatController,
                        GraphController, AccountsController, *AUDIT_CONTROLLERS, CatalogueController, TasksController,
                        TaskExecutionController, TaskHistoryController, RunsController, PoliciesController, health,
                        ready, metrics, openapi_json, assets_router(), StreamsController, TracesController,
                        WebhookEndpointsController, WebhookDeliveriesController, LedgerController,
                        OrdersController, PaymentCallbacksController],
        exception_handlers={Exception: handle_exception},
        before_request=check_honoured_headers,
        middleware=[idempotency_middleware],
        lifespan=[lifespan],
        cors_config=CORSConfig(allow_origins=origins) if origins else None,
        openapi_config=OpenAPIConfig(
            title="Machine Markets",
            version="0.1.0",
            description="Event-sourced marketplace where machines register, prove identity and trade work.",
            path="/docs",
            openapi_router=docs_router(),
            render_plugins=render_plugins(),
            components=Components(security_schemes={
                "bearer": SecurityScheme(type="http", scheme="bearer", description="API key as a bearer token"),
                "apiKey": SecurityScheme(type="apiKey", name="X-Api-Key", security_scheme_in="header"),
                "agentToken": SecurityScheme(type="apiKey", name="x-agent-pairing-token", security_scheme_in="header",
                                             description="machine-agent token (heartbeats only)"),
            }),
        ),
        debug=False,
    )
    # Litestar runs `middleware=` only for matched routes; wrapping the handler gives 404/405 problems
    # a request id and counts them in the metrics too.
    finish_openapi(app)
    app.asgi_handler = edge_middleware(app, app.asgi_handler, settings.max_header_bytes)
    if container is not None:
        app.state.container = container
    return app
