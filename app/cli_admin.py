"""`mm admin create-key|list-keys|revoke-key` and MM_ADMIN_TOKEN registration: the built-in admin's keys."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from app.db import create_pool
from app.services.accounts import BOOTSTRAP_ADMIN_ID, AccountsService
from app.settings import Settings
from app.store.event_store import EventStore
from app.store.repository import Repository
from domain.shared.context import CommandContext
from domain.shared.errors import DomainError, NotFound

T = TypeVar("T")


async def with_accounts(settings: Settings, dsn: str, use: Callable[[AccountsService, CommandContext], Awaitable[T]],
                        actor: str = "system:mm-admin") -> T:
    pool = await create_pool(dsn, settings, min_size=1, max_size=2)
    try:
        ctx = CommandContext(at=datetime.now(UTC), actor=actor)
        return await use(AccountsService(Repository(EventStore(pool))), ctx)
    finally:
        await pool.close()


async def register_admin_token(settings: Settings, dsn: str, actor: str) -> bool:
    """Register MM_ADMIN_TOKEN (if set) as an admin key; idempotent, and safe from many processes at once."""
    token = settings.admin_token
    if not token:
        return False
    await with_accounts(settings, dsn, lambda accounts, ctx: accounts.bootstrap_admin(ctx, token), actor)
    return True


async def admin(settings: Settings, dsn: str, args: argparse.Namespace) -> int:
    try:
        if args.action == "create-key":
            issued = await with_accounts(settings, dsn, lambda a, ctx: a.issue_admin_key(ctx, args.label))
            # The key alone on stdout (KEY=$(mm admin create-key)); it is shown this once and never stored.
            print(issued.key)
            print(f"admin key {issued.key_id} (prefix {issued.prefix}, label {issued.label!r}) created;"
                  " keep it now, it cannot be shown again", file=sys.stderr)
        elif args.action == "revoke-key":
            key_id = await with_accounts(settings, dsn, lambda a, ctx: a.revoke_admin_key(ctx, args.key))
            print(f"admin key {key_id} revoked")
        else:
            account = await with_accounts(settings, dsn, lambda a, _: a.get(BOOTSTRAP_ADMIN_ID))
            print(f"{'id':<36}  {'prefix':<11}  {'state':<7}  label")
            for key_id, key in account.keys.items():
                state = "revoked" if key["revoked"] else "active"
                print(f"{key_id!s:<36}  {key.get('prefix', ''):<11}  {state:<7}  {key.get('label', '')}")
    except NotFound:
        print("mm admin: no admin key exists yet (set MM_ADMIN_TOKEN, or run `mm admin create-key`)",
              file=sys.stderr)
        return 1
    except DomainError as exc:
        print(f"mm admin: {exc}", file=sys.stderr)
        return 1
    return 0
