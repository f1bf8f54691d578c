"""Machine-agent command service: enrolment, revocation, and the high-volume heartbeat."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import msgspec

from app.crypto import agent_id_in, digest, new_agent_token
from app.services.machines import MachinesService
from app.services.retries import check_expected, retry_conflicts
from app.services.runtime import RuntimeService
from app.store.repository import Repository
from app.store.types import LogPosition
from domain.machines.aggregate import Machine
from domain.runtime import rules
from domain.runtime.agent import MachineAgent
from domain.runtime.commands import AGENT, EnrollAgent, RecordHeartbeat, UpsertEndpoint
from domain.runtime.endpoint import RuntimeEndpoint, endpoint_id
from domain.runtime.errors import AgentAuthInvalid, AgentAuthRequired, AgentNotFound
from domain.shared.context import CommandContext
from domain.shared.errors import InvalidTransition, NotFound, ValidationFailed
from domain.shared.ids import derived_id, new_id

MAX_ENDPOINTS_PER_HEARTBEAT = 64
_MACHINES_KNOWN = 100_000  # agents whose machine a process remembers (forgotten all at once beyond that)


class ReportedEndpoint(msgspec.Struct, frozen=True, kw_only=True):
    provider_key: str
    url: str
    auth_token: str | None = None
    metadata: dict[str, object] = msgspec.field(default_factory=dict)


class AgentOutcome:
    def __init__(self, agent: MachineAgent, position: LogPosition | None, token: str | None = None,
                 endpoints: list[RuntimeEndpoint] | None = None) -> None:
        self.agent, self.position, self.token = agent, position, token
        self.endpoints = endpoints or []


class AgentsService:
    def __init__(self, repo: Repository, machines: MachinesService, runtime: RuntimeService) -> None:
        self.repo, self.machines, self.runtime = repo, machines, runtime
        self._machine_of: dict[uuid.UUID, uuid.UUID] = {}  # agent -> its machine, learnt from loads

    async def enroll(self, ctx: CommandContext, machine_id: uuid.UUID, *, name: str,
                     allowed_provider_keys: list[str], lease_seconds: int) -> AgentOutcome:
        machine = await self.machines.require_operational(ctx, machine_id)
        agent_id = derived_id("agent", ctx.account_id, ctx.idempotency_key) if ctx.idempotency_key else new_id()
        token = new_agent_token(agent_id)
        cmd = EnrollAgent(
            agent_id=agent_id, account_id=machine.account_id, machine_id=machine_id, name=name,
            allowed_provider_keys=list(allowed_provider_keys), lease_seconds=lease_seconds, token_hash=digest(token),
        )
        agent = MachineAgent.enroll(cmd, ctx.at)
        result = await self.repo.save(agent, ctx)
        if result is not None and result.duplicate:
            # The first attempt's token was answered once and is stored only as a digest; never mint a second.
            raise InvalidTransition("this enrolment was already recorded and its token shown once; "
                                    "revoke that agent and enroll again", agentId=str(agent_id))
        return AgentOutcome(agent, result.last if result else None, token=token)

    async def get(self, ctx: CommandContext, machine_id: uuid.UUID, agent_id: uuid.UUID) -> MachineAgent:
        """The agent if it belongs to this machine (and the caller may see the machine); else NOT_FOUND."""
        try:
            agent = await self.repo.get(MachineAgent, agent_id, what="agent")
        except NotFound:
            raise AgentNotFound(f"agent {agent_id} not found") from None
        if agent.machine_id != machine_id:
            raise AgentNotFound(f"agent {agent_id} not found")
        return agent

    async def revoke(self, ctx: CommandContext, machine_id: uuid.UUID, agent_id: uuid.UUID, reason: str | None,
                     expected_version: int | None = None) -> AgentOutcome:
        await self.machines.require_operational(ctx, machine_id)

        async def attempt() -> AgentOutcome:
            agent = await self.get(ctx, machine_id, agent_id)
            check_expected(agent.version, expected_version, "agent")
            agent.revoke(reason, ctx.at)
            result = await self.repo.save(agent, ctx)
            if result is not None and result.duplicate:
                agent = await self.get(ctx, machine_id, agent_id)
            return AgentOutcome(agent, result.last if result else None)

        async def replay() -> AgentOutcome | None:
            # Refused (already revoked), but by this very request (its Idempotency-Key): answer as it did.
            done = await self.repo.recorded(ctx, agent_id)
            return None if done is None else AgentOutcome(await self.get(ctx, machine_id, agent_id), done.last)

        return await retry_conflicts(attempt, expected_version, replay=replay)

    async def heartbeat(self, ctx: CommandContext, token: str | None, reported: list[ReportedEndpoint],
                        lease_seconds: int | None = None) -> AgentOutcome:
        """Authenticate the agent, then record its heartbeat and upsert every endpoint it reports, atomically."""
        if not token:
            raise AgentAuthRequired("send the agent token as agentToken, x-agent-pairing-token or a Bearer token")
        agent_id = agent_id_in(token)
        if agent_id is None:
            raise AgentAuthInvalid("the agent token is not valid")
        presented = digest(token)
        if lease_seconds is not None:
            rules.check_lease_seconds(lease_seconds)
        if len(reported) > MAX_ENDPOINTS_PER_HEARTBEAT:
            raise ValidationFailed(f"at most {MAX_ENDPOINTS_PER_HEARTBEAT} endpoints per heartbeat", field="endpoints")
        keys = [rules.provider_key(e.provider_key) for e in reported]
        if len(set(keys)) != len(keys):
            raise ValidationFailed("each providerKey may appear once per heartbeat", field="endpoints")

        async def attempt() -> AgentOutcome:
            agent, machine, loaded = await self._load_for_beat(agent_id, keys)
            agent.authenticate(presented)
            agent.permit(keys)  # refused before the machine is judged (record_heartbeat checks it again)
            if not isinstance(machine, Machine):
                raise NotFound(f"machine {agent.machine_id} not found")
            machine.ensure_operational()
            lease_until = ctx.at + timedelta(seconds=lease_seconds or agent.lease_seconds)
            endpoints: list[RuntimeEndpoint] = []
            for key, entry, endpoint in zip(keys, reported, loaded, strict=True):
                sealed = self.runtime.sealed_token(endpoint, endpoint_id(agent.machine_id, key), entry.auth_token)
                cmd = UpsertEndpoint(url=entry.url, auth_token=sealed, metadata=dict(entry.metadata),
                                     source=AGENT, agent_id=agent.id, lease_expires_at=lease_until)
                if endpoint is None:
                    endpoint = RuntimeEndpoint.open(agent.account_id, agent.machine_id, key, cmd, ctx.at)
                else:
                    endpoint.upsert(cmd, ctx.at)
                endpoints.append(endpoint)
            agent.record_heartbeat(RecordHeartbeat(provider_keys=keys, lease_expires_at=lease_until), ctx.at)
            as_agent = msgspec.structs.replace(ctx, actor=f"agent:{agent.id}", account_id=agent.account_id)
            result = await self.repo.save_all([agent, *endpoints], as_agent)
            if result is not None and result.duplicate:
                # A retry (same Idempotency-Key) of a heartbeat already recorded: answer with what is stored.
                agent = await self.repo.get(MachineAgent, agent.id, what="agent")
                endpoints = [e for e in await asyncio.gather(
                    *(self.runtime.load(agent.machine_id, k) for k in keys)) if e is not None]
            return AgentOutcome(agent, result.last if result else None, endpoints=endpoints)

        return await retry_conflicts(attempt)

    async def _load_for_beat(self, agent_id: uuid.UUID, keys: list[str]) -> tuple[
            MachineAgent, Machine | None, list[RuntimeEndpoint | None]]:
        """The agent, its machine and the reported endpoints, in one statement once the agent's machine is known
        (an agent never changes machine), else two. Loading has no effect: the caller authenticates first."""
        machine_id = self._machine_of.get(agent_id)
        if machine_id is None:
            try:
                agent = await self.repo.get(MachineAgent, agent_id, what="agent")
            except NotFound:
                raise AgentNotFound(f"agent {agent_id} not found; it may never have been enrolled") from None
            machine_id = agent.machine_id
            rest = await self.repo.get_many([(Machine, machine_id),
                                             *((RuntimeEndpoint, endpoint_id(machine_id, k)) for k in keys)])
        else:
            found, *rest = await self.repo.get_many([(MachineAgent, agent_id), (Machine, machine_id),
                                                     *((RuntimeEndpoint, endpoint_id(machine_id, k)) for k in keys)])
            if not isinstance(found, MachineAgent):
                raise AgentNotFound(f"agent {agent_id} not found; it may never have been enrolled")
            agent = found
        if len(self._machine_of) >= _MACHINES_KNOWN:
            self._machine_of.clear()
        self._machine_of[agent_id] = agent.machine_id
        machine, *endpoints = rest
        return (agent, machine if isinstance(machine, Machine) else None,
                [e if isinstance(e, RuntimeEndpoint) else None for e in endpoints])
