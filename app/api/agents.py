"""HTTP routes for machine agents: enrolment (one-time token), listing, revocation, and the heartbeat."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter

from app.api.consistency import etag, expected_version, write_headers
from app.api.context import AUTHENTICATED, container_of, provide_ctx, provide_principal, readable_machine
from app.api.openapi_headers import (
    AS_OF_VERSION,
    CACHE_CONTROL,
    ETAG,
    IF_MATCH,
    LOCATION,
    LOG_POSITION,
    MIN_POSITION,
    headers,
)
from app.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_time_cursor, encode_cursor
from app.api.problems import problems
from app.api.schemas_runtime import (
    AgentPage,
    AgentView,
    EnrollAgentRequest,
    EnrolledAgentView,
    HeartbeatRequest,
    HeartbeatView,
    RevokeAgentRequest,
    RuntimeEndpointView,
)
from app.api.time_travel import AsOfParam, VersionParam, as_of_headers, load_guarded, point_in_time
from app.services.agents import AgentOutcome, ReportedEndpoint
from domain.runtime.agent import MachineAgent
from domain.runtime.errors import AgentNotFound
from domain.shared.context import CommandContext
from domain.shared.errors import NotFound
from projections.runtime_reader import get_agent, list_agents

AgentStatus = Literal["enrolled", "active", "revoked"]
PAIRING_HEADER = "x-agent-pairing-token"


def _headers(outcome: AgentOutcome) -> dict[str, str]:
    return write_headers(outcome.agent.version, outcome.position)


class AgentsController(Controller):
    path = "/v1/machines/{machine_id:uuid}/agents"
    tags = ["runtime"]
    security = AUTHENTICATED
    dependencies = {"principal": Provide(provide_principal), "ctx": Provide(provide_ctx)}

    @post("/enrollment", operation_id="enrollAgent", opt=headers(sends=[ETAG, LOG_POSITION, LOCATION, CACHE_CONTROL]),
          status_code=201, summary="Enroll an agent; its token is shown once",
          responses=problems(400, 401, 404, 409, 422))
    async def enroll(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                     machine_id: FromPath[uuid.UUID],
                     data: JSONBody[EnrollAgentRequest]) -> Response[EnrolledAgentView]:
        outcome = await container_of(request).agents.enroll(
            ctx, machine_id, name=data.name, allowed_provider_keys=list(data.allowed_provider_keys),
            lease_seconds=data.lease_seconds,
        )
        assert outcome.token is not None
        headers = {**_headers(outcome), "Location": f"/v1/machines/{machine_id}/agents/{outcome.agent.id}",
                   "Cache-Control": "no-store"}
        return Response(EnrolledAgentView(agent=AgentView.of(outcome.agent), agent_token=outcome.token),
                        status_code=201, headers=headers)

    @get("/", operation_id="listAgents",
         opt=headers(honours=[MIN_POSITION]),
         summary="List a machine's agents", responses=problems(400, 401, 404, 409, 503))
    async def list_(
        self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext], machine_id: FromPath[uuid.UUID],
        status: Annotated[list[AgentStatus] | None, QueryParameter(name="status")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
    ) -> AgentPage:
        c = container_of(request)
        after = decode_time_cursor(cursor) if cursor else None
        await readable_machine(request, ctx, machine_id, "runtime")
        rows = await list_agents(c.pool, machine_id, status=list(status) if status else None, after=after,
                                 limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1]["created_at"].isoformat(), str(rows[-1]["id"])) if more else None
        return AgentPage(data=[AgentView(**r) for r in rows], next_cursor=next_cursor)

    @get("/{agent_id:uuid}", operation_id="getAgent", opt=headers(honours=[MIN_POSITION], sends=[ETAG, AS_OF_VERSION]),
         summary="Get an agent (now, or asOf a time / at a version)", responses=problems(400, 401, 404, 409, 422, 503))
    async def get_one(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                      machine_id: FromPath[uuid.UUID], agent_id: FromPath[uuid.UUID], as_of: AsOfParam = None,
                      version: VersionParam = None) -> Response[AgentView]:
        c = container_of(request)
        point = point_in_time(as_of, version)
        if point is not None:
            try:
                agent = await load_guarded(c, c.machines.require_operational(ctx, machine_id), MachineAgent, agent_id,
                                           point, "agent")
            except NotFound as exc:
                raise AgentNotFound(exc.detail) from None
            if agent.machine_id != machine_id:
                raise AgentNotFound(f"agent {agent_id} not found")
            return Response(AgentView.of(agent), headers=as_of_headers(agent.version))
        await readable_machine(request, ctx, machine_id, "runtime", agent_id)
        row = await get_agent(c.pool, machine_id, agent_id)
        if row is None:
            raise AgentNotFound(f"agent {agent_id} not found")
        return Response(AgentView(**row), headers={"ETag": etag(row["version"])})

    @post("/{agent_id:uuid}/revoke", operation_id="revokeAgent",
          opt=headers(honours=[IF_MATCH], sends=[ETAG, LOG_POSITION]),
          status_code=200, summary="Revoke an agent: its token stops working",
          responses=problems(400, 401, 404, 409, 412, 422))
    async def revoke(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                     machine_id: FromPath[uuid.UUID], agent_id: FromPath[uuid.UUID],
                     data: JSONBody[RevokeAgentRequest | None] = None) -> Response[AgentView]:
        outcome = await container_of(request).agents.revoke(
            ctx, machine_id, agent_id, data.reason if data else None, expected_version(request)
        )
        return Response(AgentView.of(outcome.agent), headers=_headers(outcome))


def presented_agent_token(request: Request[Any, Any, Any], body_token: str | None) -> str | None:
    """The body's agentToken, else the x-agent-pairing-token header, else a Bearer token."""
    if body_token:
        return body_token
    if request.headers.get(PAIRING_HEADER, "").strip():
        return request.headers[PAIRING_HEADER].strip()
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


class HeartbeatController(Controller):
    path = "/v1/machine-agents"
    tags = ["runtime"]
    # The agent token authenticates, in the body or in one of these headers (not an account API key).
    security = [{"agentToken": []}, {"bearer": []}, {}]

    @post("/heartbeat", operation_id="sendAgentHeartbeat", opt=headers(sends=[LOG_POSITION]),
          status_code=200, summary="Agent heartbeat: renew leases and upsert reported endpoints",
          description="Authenticate with `agentToken` in the body, the `x-agent-pairing-token` header or "
                      "`Authorization: Bearer`. Each reported endpoint is upserted with `source: agent` and "
                      "`leaseExpiresAt = now + leaseSeconds` (the agent's default unless given here); "
                      "an endpoint whose lease runs out becomes `expired` until a later heartbeat revives it. "
                      "Errors: 400 VALIDATION_ERROR; 401 AGENT_AUTH_REQUIRED (no token) or AGENT_AUTH_INVALID "
                      "(malformed or wrong token); 404 NOT_FOUND (the token names no enrolled agent); "
                      "403 AGENT_PAIRING_INACTIVE (revoked) or AGENT_POLICY_DENIED (a provider key outside "
                      "allowedProviderKeys); 409 MACHINE_NOT_ACTIVE / MACHINE_NOT_ACTIVATED; 422"
                      " IDEMPOTENCY_KEY_REUSED when an account API key is also sent (its Idempotency-Key store"
                      " applies).",
          responses=problems(400, 401, 403, 404, 409, 422))
    async def heartbeat(self, request: Request[Any, Any, Any],
                        data: JSONBody[HeartbeatRequest]) -> Response[HeartbeatView]:
        state = request.scope.get("state", {})
        ctx = CommandContext(
            at=datetime.now(UTC), actor="agent", request_id=state.get("request_id"),
            correlation_id=request.headers.get("x-correlation-id") or state.get("request_id"),
            idempotency_key=request.headers.get("idempotency-key"),
        )
        reported = [ReportedEndpoint(provider_key=e.provider_key, url=e.url, auth_token=e.auth_token,
                                     metadata=dict(e.metadata)) for e in data.endpoints]
        outcome = await container_of(request).agents.heartbeat(
            ctx, presented_agent_token(request, data.agent_token), reported, data.lease_seconds
        )
        lease = outcome.agent.last_lease_expires_at
        assert lease is not None
        view = HeartbeatView(agent=AgentView.of(outcome.agent),
                             endpoints=[RuntimeEndpointView.of(e) for e in outcome.endpoints], lease_expires_at=lease)
        return Response(view, headers=write_headers(None, outcome.position))
