"""Runtime-endpoint command service: manual upserts and deletes, and lease expiry for the worker."""

from __future__ import annotations

import uuid

from app.sealing import Sealer
from app.services.machines import MachinesService
from app.services.retries import check_expected, retry_conflicts
from app.store.repository import Repository
from app.store.types import LogPosition
from domain.runtime import rules
from domain.runtime.commands import MANUAL, UpsertEndpoint
from domain.runtime.endpoint import RuntimeEndpoint, endpoint_id
from domain.runtime.errors import EndpointNotFound
from domain.shared.context import CommandContext
from domain.shared.errors import NotFound


class EndpointOutcome:
    def __init__(self, endpoint: RuntimeEndpoint, position: LogPosition | None, created: bool = False) -> None:
        self.endpoint, self.position, self.created = endpoint, position, created


class RuntimeService:
    def __init__(self, repo: Repository, machines: MachinesService, sealer: Sealer) -> None:
        self.repo, self.machines, self.sealer = repo, machines, sealer

    def sealed_token(self, current: RuntimeEndpoint | None, stream_id: uuid.UUID, token: str | None) -> str | None:
        """The token sealed for this endpoint's stream; the stored value itself when the token is unchanged,
        so an unchanged PUT stays a no-op (sealing is randomised)."""
        if token is None:
            return None
        if current is not None and self.sealer.matches(current.auth_token, token, stream_id.bytes):
            return current.auth_token
        return self.sealer.seal(token, stream_id.bytes)

    def reveal_auth_token(self, endpoint: RuntimeEndpoint) -> str | None:
        """The plaintext token, for the executor that calls the endpoint; never for an API response."""
        return None if endpoint.auth_token is None else self.sealer.unseal(endpoint.auth_token, endpoint.id.bytes)

    async def load(self, machine_id: uuid.UUID, provider_key: str) -> RuntimeEndpoint | None:
        """The endpoint's stream (deleted ones included), or None if it never existed."""
        return await self.load_stream(endpoint_id(machine_id, provider_key))

    async def load_stream(self, stream_id: uuid.UUID) -> RuntimeEndpoint | None:
        try:
            return await self.repo.get(RuntimeEndpoint, stream_id)
        except NotFound:
            return None

    async def put_manual(self, ctx: CommandContext, machine_id: uuid.UUID, provider_key: str, *, url: str,
                         auth_token: str | None, metadata: dict[str, object],
                         expected_version: int | None = None) -> EndpointOutcome:
        machine = await self.machines.require_operational(ctx, machine_id)
        key = rules.provider_key(provider_key)
        # The request's own checks come before its preconditions (RFC 9110 §13.2.2): a stale If-Match on an
        # invalid body answers what is wrong with the body, not 412 (a retry with a fresh ETag would fail anyway).
        rules.check_url(url)
        rules.check_metadata(dict(metadata))

        async def attempt() -> EndpointOutcome:
            endpoint = await self.load(machine_id, key)
            token = self.sealed_token(endpoint, endpoint_id(machine_id, key), auth_token)
            cmd = UpsertEndpoint(url=url, auth_token=token, metadata=dict(metadata), source=MANUAL)
            check_expected(endpoint.version if endpoint and endpoint.exists else None, expected_version,
                           "runtime endpoint")
            created = endpoint is None or not endpoint.exists
            if endpoint is None:
                endpoint = RuntimeEndpoint.open(machine.account_id, machine_id, key, cmd, ctx.at)
            else:
                endpoint.upsert(cmd, ctx.at)
            result = await self.repo.save(endpoint, ctx)
            if result is not None and result.duplicate:
                reloaded = await self.load(machine_id, key)
                assert reloaded is not None
                endpoint = reloaded
            return EndpointOutcome(endpoint, result.last if result else None, created)

        return await retry_conflicts(attempt, expected_version)

    async def delete(self, ctx: CommandContext, machine_id: uuid.UUID, provider_key: str,
                     expected_version: int | None = None) -> EndpointOutcome:
        await self.machines.require_operational(ctx, machine_id)
        key = rules.provider_key(provider_key)

        async def attempt() -> EndpointOutcome:
            endpoint = await self.load(machine_id, key)
            if endpoint is None or not endpoint.exists:
                raise EndpointNotFound(f"no runtime endpoint for provider key {key!r} on machine {machine_id}")
            check_expected(endpoint.version, expected_version, "runtime endpoint")
            endpoint.delete(ctx.at)
            result = await self.repo.save(endpoint, ctx)
            return EndpointOutcome(endpoint, result.last if result else None)

        return await retry_conflicts(attempt, expected_version)

    async def expire(self, ctx: CommandContext, stream_id: uuid.UUID) -> RuntimeEndpoint | None:
        """Expire the lease if it has run out (idempotent); returns the endpoint as it now stands."""
        async def attempt() -> RuntimeEndpoint | None:
            endpoint = await self.load_stream(stream_id)
            if endpoint is None:
                return None
            if endpoint.expire(ctx.at):
                await self.repo.save(endpoint, ctx)
            return endpoint

        return await retry_conflicts(attempt)
