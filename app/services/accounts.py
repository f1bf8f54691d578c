"""Account command service: open accounts, issue and revoke API keys, bootstrap the first admin."""

from __future__ import annotations

import uuid

from app.crypto import digest, new_api_key
from app.services.retries import retry_conflicts
from app.store.repository import Repository
from app.store.types import AppendResult, LogPosition
from domain.accounts.aggregate import Account
from domain.accounts.errors import ApiKeyNotFound
from domain.shared.context import CommandContext
from domain.shared.errors import ConcurrencyConflict, NotFound, ValidationFailed
from domain.shared.ids import derived_id, new_id

BOOTSTRAP_ADMIN_ID = derived_id("account", "bootstrap-admin")
# Many API processes can start together and all register MM_ADMIN_TOKEN on the one bootstrap stream.
_BOOTSTRAP_ATTEMPTS = 12


def _prefix(token: str) -> str:
    """The listing prefix: the 8 hex digits of an `mm_<hex>_...` key, else a fingerprint (never part of the secret)."""
    parts = token.split("_")
    return parts[1] if len(parts) >= 3 and parts[0] == "mm" else digest(token)[:8]


def _find_key(account: Account, ref: str) -> uuid.UUID:
    try:
        key_id = uuid.UUID(ref)
    except ValueError:
        wanted = ref.removeprefix("mm_")
        found = [k for k, v in account.keys.items() if v.get("prefix", "").removeprefix("mm_") == wanted]
        if len(found) > 1:
            raise ValidationFailed(f"prefix {ref!r} names {len(found)} keys; use the key id", field="key") from None
        key_id = found[0] if found else uuid.UUID(int=0)
    if key_id not in account.keys:
        raise ApiKeyNotFound(f"no admin key {ref!r}")
    return key_id


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

    async def bootstrap_admin(self, ctx: CommandContext, token: str, label: str = "bootstrap") -> LogPosition | None:
        """Make `token` an admin key of the bootstrap account. Idempotent: safe on every start.

        A key the account already knows is left as it is, so restarting with a revoked MM_ADMIN_TOKEN never
        brings it back. Every API process may run this at once: a lost race re-reads and finds the key.
        """

        async def attempt() -> LogPosition | None:
            try:
                account = await self.get(BOOTSTRAP_ADMIN_ID)
            except NotFound:
                account = Account.open(BOOTSTRAP_ADMIN_ID, "admin", True, ctx.at)
            key_hash = digest(token)
            account.issue_key(derived_id("api-key", key_hash), key_hash, _prefix(token), label, ctx.at)
            result = await self.repo.save(account, ctx)
            return result.last if result else None

        return await retry_conflicts(attempt, attempts=_BOOTSTRAP_ATTEMPTS, jitter_s=0.05)

    async def issue_admin_key(self, ctx: CommandContext, label: str) -> IssuedKey:
        """A new key of the bootstrap admin account (`mm admin create-key`, for rotation)."""
        key, prefix = new_api_key()
        position = await self.bootstrap_admin(ctx, key, label)
        return IssuedKey(derived_id("api-key", digest(key)), key, prefix, label, position)

    async def revoke_admin_key(self, ctx: CommandContext, ref: str) -> uuid.UUID:
        """Revoke a bootstrap admin key named by its id or its listing prefix; returns the key id."""

        async def attempt() -> uuid.UUID:
            account = await self.get(BOOTSTRAP_ADMIN_ID)
            key_id = _find_key(account, ref)
            account.revoke_key(key_id, ctx.at)
            await self.repo.save(account, ctx)
            return key_id

        return await retry_conflicts(attempt)


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
