"""Webhook-endpoint command service: register, read (tenant-scoped), revise, rotate the secret, delete, disable."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta

from app.sealing import Sealer
from app.services.retries import check_expected, retry_conflicts
from app.store.repository import Repository
from app.store.types import AppendResult, LogPosition
from domain.shared.context import CommandContext
from domain.shared.errors import NotFound
from domain.shared.ids import derived_id, new_id
from domain.webhooks.aggregate import WebhookEndpoint
from domain.webhooks.commands import RegisterWebhookEndpoint, ReviseWebhookEndpoint, RotateWebhookSecret
from domain.webhooks.errors import WebhookEndpointNotFound

SECRET_PREFIX = "whsec_"
ROTATION_OVERLAP = timedelta(hours=24)


class WebhookOutcome:
    """The endpoint after the command, where its last event sits, and a secret to show once (None otherwise)."""

    def __init__(self, endpoint: WebhookEndpoint, result: AppendResult | None, secret: str | None = None) -> None:
        self.endpoint, self.secret = endpoint, secret
        self.position: LogPosition | None = result.last if result else None


def new_signing_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


class WebhooksService:
    def __init__(self, repo: Repository, sealer: Sealer) -> None:
        self.repo, self.sealer = repo, sealer

    def _seal(self, endpoint_id: uuid.UUID, secret: str) -> str:
        # Bound to the endpoint's stream: a sealed secret copied to another endpoint does not open.
        return self.sealer.seal(secret, endpoint_id.bytes)

    def signing_secrets(self, endpoint: WebhookEndpoint, at: datetime) -> list[str]:
        """The secrets a delivery at `at` is signed with: the current one, and the previous one while it overlaps."""
        out = [self.sealer.unseal(endpoint.sealed_secret, endpoint.id.bytes)]
        if endpoint.previous_sealed_secret and endpoint.previous_valid_until \
                and at < datetime.fromisoformat(endpoint.previous_valid_until):
            out.append(self.sealer.unseal(endpoint.previous_sealed_secret, endpoint.id.bytes))
        return out

    async def register(self, ctx: CommandContext, *, url: str, types: list[str], description: str,
                       enabled: bool) -> WebhookOutcome:
        assert ctx.account_id is not None
        # A retried request lands on the same stream (its id derives from the idempotency key).
        endpoint_id = derived_id("webhook-endpoint", ctx.account_id, ctx.idempotency_key) \
            if ctx.idempotency_key else new_id()
        secret = new_signing_secret()
        cmd = RegisterWebhookEndpoint(endpoint_id=endpoint_id, account_id=ctx.account_id, url=url, types=types,
                                      description=description, enabled=enabled,
                                      sealed_secret=self._seal(endpoint_id, secret))
        endpoint = WebhookEndpoint.register(cmd, ctx.at)
        result = await self.repo.save(endpoint, ctx)
        if result is not None and result.duplicate:
            endpoint = await self.get(ctx, endpoint_id)
            secret = self.sealer.unseal(endpoint.sealed_secret, endpoint_id.bytes)
        return WebhookOutcome(endpoint, result, secret)

    async def get(self, ctx: CommandContext, endpoint_id: uuid.UUID) -> WebhookEndpoint:
        """Another account's (or a deleted) endpoint answers NOT_FOUND, never 403; admins see every account's."""
        endpoint = await self.load(endpoint_id)
        if endpoint is None or endpoint.deleted or (not ctx.is_admin and endpoint.account_id != ctx.account_id):
            raise WebhookEndpointNotFound(f"webhook endpoint {endpoint_id} not found")
        return endpoint

    async def load(self, endpoint_id: uuid.UUID) -> WebhookEndpoint | None:
        try:
            return await self.repo.get(WebhookEndpoint, endpoint_id, what="webhook endpoint")
        except NotFound:
            return None

    async def revise(self, ctx: CommandContext, endpoint_id: uuid.UUID, cmd: ReviseWebhookEndpoint,
                     expected_version: int | None) -> WebhookOutcome:
        async def attempt() -> WebhookOutcome:
            endpoint = await self.get(ctx, endpoint_id)
            check_expected(endpoint.version, expected_version, "webhook endpoint")
            endpoint.revise(cmd, ctx.at)
            return WebhookOutcome(endpoint, await self.repo.save(endpoint, ctx))

        return await retry_conflicts(attempt, expected_version)

    async def rotate_secret(self, ctx: CommandContext, endpoint_id: uuid.UUID,
                            expected_version: int | None) -> WebhookOutcome:
        async def attempt() -> WebhookOutcome:
            endpoint = await self.get(ctx, endpoint_id)
            check_expected(endpoint.version, expected_version, "webhook endpoint")
            secret = new_signing_secret()
            endpoint.rotate_secret(RotateWebhookSecret(
                sealed_secret=self._seal(endpoint_id, secret),
                previous_valid_until=(ctx.at + ROTATION_OVERLAP).isoformat()), ctx.at)
            result = await self.repo.save(endpoint, ctx)
            if result is not None and result.duplicate:
                # A retry of a rotation already recorded: never show this attempt's secret, which was not saved.
                return await self._rotated(ctx, endpoint_id, result)
            return WebhookOutcome(endpoint, result, secret)

        async def replay() -> WebhookOutcome | None:
            # Refused (If-Match: its own rotation moved the version on), but recorded by this very request.
            done = await self.repo.recorded(ctx, endpoint_id)
            return None if done is None else await self._rotated(ctx, endpoint_id, done)

        return await retry_conflicts(attempt, expected_version, replay=replay)

    async def _rotated(self, ctx: CommandContext, endpoint_id: uuid.UUID, result: AppendResult) -> WebhookOutcome:
        """The endpoint as it stands, with the secret this request's recorded rotation generated."""
        rotation = await self.repo.recorded_event(ctx, endpoint_id)
        assert rotation is not None  # `result` is its append
        secret = self.sealer.unseal(rotation.data["sealed_secret"], endpoint_id.bytes)
        return WebhookOutcome(await self.get(ctx, endpoint_id), result, secret)

    async def delete(self, ctx: CommandContext, endpoint_id: uuid.UUID,
                     expected_version: int | None) -> WebhookOutcome:
        async def attempt() -> WebhookOutcome:
            endpoint = await self.get(ctx, endpoint_id)
            check_expected(endpoint.version, expected_version, "webhook endpoint")
            endpoint.delete(ctx.at)
            return WebhookOutcome(endpoint, await self.repo.save(endpoint, ctx))

        return await retry_conflicts(attempt, expected_version)

    async def request_delivery_retry(self, ctx: CommandContext, endpoint_id: uuid.UUID,
                                     delivery_id: uuid.UUID) -> WebhookOutcome:
        async def attempt() -> WebhookOutcome:
            endpoint = await self.get(ctx, endpoint_id)
            endpoint.request_delivery_retry(delivery_id, ctx.at)
            return WebhookOutcome(endpoint, await self.repo.save(endpoint, ctx))

        return await retry_conflicts(attempt)

    async def disable_for_failures(self, ctx: CommandContext, endpoint_id: uuid.UUID, reason: str) -> None:
        async def attempt() -> None:
            endpoint = await self.load(endpoint_id)
            if endpoint is not None:
                endpoint.disable_for_failures(reason, ctx.at)
                await self.repo.save(endpoint, ctx)

        await retry_conflicts(attempt)
