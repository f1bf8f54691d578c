"""Request and response bodies of runtime endpoints, agents and heartbeats (camelCase, unknown fields refused)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec

from app.api.schema_types import NOT_BLANK, UtcTime
from domain.runtime.agent import MachineAgent
from domain.runtime.endpoint import RuntimeEndpoint

# Upper case is accepted and lower-cased by the server; the domain checks the canonical form.
ProviderKey = Annotated[str, msgspec.Meta(
    pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$",
    description="1-63 of a-z, 0-9, '.', '_', '-'; stored lower-cased", examples=["openai"],
)]
# The pattern is documentation (the domain checks URLs with clearer messages); it tells clients, and
# schemathesis, that only http(s) is accepted.
Url = Annotated[str, msgspec.Meta(min_length=1, max_length=2048, examples=["https://node-7.example.net/v1"],
                                  description="http or https, with a host, without credentials",
                                  extra_json_schema={"pattern": "^[Hh][Tt][Tt][Pp][Ss]?://"})]
AuthToken = Annotated[str, msgspec.Meta(min_length=1, max_length=4096, description="write-only; never returned")]
Metadata = Annotated[dict[str, Any], msgspec.Meta(max_length=32, description="free-form JSON object, at most 8 KiB")]
LeaseSeconds = Annotated[int, msgspec.Meta(ge=1, le=86_400)]
AgentName = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NOT_BLANK)]
Reason = Annotated[str, msgspec.Meta(max_length=500)]
AgentToken = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class PutRuntimeEndpointRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    url: Url
    auth_token: AuthToken | None = None
    metadata: Metadata = msgspec.field(default_factory=dict)


class RuntimeEndpointView(msgspec.Struct, rename="camel", frozen=True):
    machine_id: uuid.UUID
    provider_key: str
    url: str
    has_auth_token: bool
    metadata: dict[str, Any]
    source: str
    agent_id: uuid.UUID | None
    status: str
    lease_expires_at: UtcTime | None
    version: int
    created_at: UtcTime
    updated_at: UtcTime

    @classmethod
    def of(cls, e: RuntimeEndpoint) -> RuntimeEndpointView:
        return cls(
            machine_id=e.machine_id, provider_key=e.provider_key, url=e.url, has_auth_token=e.has_auth_token,
            metadata=dict(e.metadata), source=e.source, agent_id=e.agent_id, status=e.status,
            lease_expires_at=e.lease_expires_at, version=e.version, created_at=e.created_on, updated_at=e.modified_on,
        )


class EnrollAgentRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    name: AgentName
    allowed_provider_keys: Annotated[list[ProviderKey], msgspec.Meta(max_length=64)] = msgspec.field(
        default_factory=list)
    lease_seconds: LeaseSeconds = 60


class RevokeAgentRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    reason: Reason | None = None


class AgentView(msgspec.Struct, rename="camel", frozen=True):
    id: uuid.UUID
    machine_id: uuid.UUID
    name: str
    allowed_provider_keys: list[str]
    lease_seconds: int
    status: str
    last_seen_at: UtcTime | None
    last_lease_expires_at: UtcTime | None
    version: int
    created_at: UtcTime
    updated_at: UtcTime

    @classmethod
    def of(cls, a: MachineAgent) -> AgentView:
        return cls(
            id=a.id, machine_id=a.machine_id, name=a.name, allowed_provider_keys=list(a.allowed_provider_keys),
            lease_seconds=a.lease_seconds, status=a.status, last_seen_at=a.last_seen_at,
            last_lease_expires_at=a.last_lease_expires_at, version=a.version, created_at=a.created_on,
            updated_at=a.modified_on,
        )


class EnrolledAgentView(msgspec.Struct, rename="camel", frozen=True):
    agent: AgentView
    agent_token: str = msgspec.field(name="agentToken")
    note: str = "agentToken is shown once; the server keeps only its digest"


class HeartbeatEndpoint(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    provider_key: ProviderKey
    url: Url
    auth_token: AuthToken | None = None
    metadata: Metadata = msgspec.field(default_factory=dict)


class HeartbeatRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    agent_token: AgentToken | None = None
    endpoints: Annotated[list[HeartbeatEndpoint], msgspec.Meta(max_length=64)] = msgspec.field(default_factory=list)
    lease_seconds: LeaseSeconds | None = None


class HeartbeatView(msgspec.Struct, rename="camel", frozen=True):
    agent: AgentView
    endpoints: list[RuntimeEndpointView]
    lease_expires_at: UtcTime


class RuntimeEndpointPage(msgspec.Struct, rename="camel", frozen=True):
    """One page of a list; nextCursor fetches the next (null on the last page)."""

    data: list[RuntimeEndpointView]
    next_cursor: str | None = None


class AgentPage(msgspec.Struct, rename="camel", frozen=True):
    """One page of a list; nextCursor fetches the next (null on the last page)."""

    data: list[AgentView]
    next_cursor: str | None = None
