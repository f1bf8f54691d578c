"""Account command service: open accounts, issue and revoke API keys, bootstrap the first admin."""

from __future__ import annotations

import uuid

from app.crypto import digest, new_api_key
from app.store.repository import Repository
from app.store.types import AppendResult, LogPosition
from domain.accounts.aggregate import Account
from domain.shared.context import CommandContext
from domain.shared.errors import ConcurrencyConflict, NotFound
from domain.shared.ids import derived_id, new_id

BOOTSTRAP_ADMIN_ID = derived_id("account", "bootstrap-admin")


class IssuedKey:
    def __init__(self, key_id: uuid.UUID, key: str, prefix: str, label: str, position: LogPosition | None) -> None:
        self.key_id, self.key, self.prefix, self.label, self.position = key_id, key, prefix, label, position


def _refuse_replayed_key(result: AppendResult | None) -> None:
    # A retry whose events were already recorded generated a key that was never stored; the stored one
    # was shown once and is gone, so say so rather than hand out a key that cannot work.
    if result is not None and result.duplicate:
        raise ConcurrencyConflict(
            "this Idempotency-Key already issued an API key, which cannot be shown again; issue a new key"
        )


class AccountsService:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    async def open(self, ctx: CommandContext, name: str, is_admin: bool) -> tuple[Account, IssuedKey]:
        """Open an account together with its first API key, in one atomic append."""
        account_id = derived_id("account", ctx.account_id, ctx.idempotency_key) if ctx.idempotency_key else new_id()
        account = Account.open(account_id, name, is_admin, ctx.at)
        key, prefix = new_api_key()
        key_id = new_id()
        account.issue_key(key_id, digest(key), prefix, "initial", ctx.at)
        result = await self.repo.save(account, ctx)
        assert result is not None
        _refuse_replayed_key(result)
        return account, IssuedKey(key_id, key, prefix, "initial", result.last)

    async def get(self, account_id: uuid.UUID) -> Account:
        return await self.repo.get(Account, account_id, what="account")

    async def issue_key(self, ctx: CommandContext, account_id: uuid.UUID, label: str) -> IssuedKey:
        account = await self.get(account_id)
        key, prefix = new_api_key()
        key_id = new_id()
        account.issue_key(key_id, digest(key), prefix, label, ctx.at)
        result = await self.repo.save(account, ctx)
        _refuse_replayed_key(result)
        return IssuedKey(key_id, key, prefix, label, result.last if result else None)

    async def revoke_key(self, ctx: CommandContext, account_id: uuid.UUID, key_id: uuid.UUID) -> LogPosition | None:
        account = await self.get(account_id)
        account.revoke_key(key_id, ctx.at)
        result = await self.repo.save(account, ctx)
        return result.last if result else None

    async def bootstrap_admin(self, ctx: CommandContext, token: str) -> LogPosition | None:
        """Make `token` an admin key of the bootstrap account. Idempotent: safe on every start."""
        try:
            account = await self.get(BOOTSTRAP_ADMIN_ID)
        except NotFound:
            account = Account.open(BOOTSTRAP_ADMIN_ID, "admin", True, ctx.at)
        key_hash = digest(token)
        account.issue_key(derived_id("api-key", key_hash), key_hash, token[:11], "bootstrap", ctx.at)
        result = await self.repo.save(account, ctx)
        return result.last if result else None


async def bootstrap_admin_key(dsn: str, token: str, actor: str) -> None:
    """Register `token` as the bootstrap admin key on the database at `dsn` (start-up and test set-up)."""
    from datetime import UTC, datetime

    from app.db import create_pool
    from app.settings import Settings
    from app.store.event_store import EventStore

    pool = await create_pool(dsn, Settings(), min_size=1, max_size=2)
    try:
        ctx = CommandContext(at=datetime.now(UTC), actor=actor)
        await AccountsService(Repository(EventStore(pool))).bootstrap_admin(ctx, token)
    finally:
        await pool.close()
