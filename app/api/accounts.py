"""HTTP routes for accounts and their API keys (admins open accounts; keys are shown once)."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody

from app.api.consistency import POSITION_HEADER, read_your_writes
from app.api.context import AUTHENTICATED, Principal, container_of, provide_ctx, provide_principal, require_admin
from app.api.openapi_headers import CACHE_CONTROL, LOCATION, LOG_POSITION, headers
from app.api.problems import problems
from app.api.schemas_accounts import (
    AccountView,
    ApiKeyView,
    IssuedKeyView,
    IssueKeyRequest,
    OpenAccountRequest,
    OpenedAccountView,
)
from app.services.accounts import IssuedKey
from domain.shared.context import CommandContext
from domain.shared.errors import NotFound
from projections.accounts_reader import get_account, list_keys


def _own_or_admin(principal: NamedDependency[Principal], account_id: FromPath[uuid.UUID]) -> None:
    if not principal.is_admin and principal.account_id != account_id:
        raise NotFound(f"account {account_id} not found")  # another tenant's account does not exist for you


# The body carries a secret shown once: no cache may keep it (and the idempotency store seals it).
NO_STORE = {"Cache-Control": "no-store"}


def _shown_once(issued: IssuedKey) -> dict[str, str]:
    # No wait for a projection: the key's credential row was written with its events (app/store/credentials.py).
    if issued.position is not None:
        return {POSITION_HEADER: issued.position.token(), **NO_STORE}
    return dict(NO_STORE)


async def _account_view(request: Request[Any, Any, Any], account_id: uuid.UUID) -> AccountView:
    # A plain function: a decorated handler is a route object, not something another handler can call.
    container = container_of(request)
    await read_your_writes(container.pool, "accounts", account_id, container.settings.read_your_writes_timeout_s)
    row = await get_account(container.pool, account_id)
    if row is None:
        raise NotFound(f"account {account_id} not found")
    return AccountView(**row)


def _issued_view(issued: IssuedKey) -> IssuedKeyView:
    return IssuedKeyView(id=issued.key_id, key=issued.key, prefix=issued.prefix, label=issued.label)


class AccountsController(Controller):
    path = "/v1/accounts"
    tags = ["accounts"]
    security = AUTHENTICATED
    dependencies = {"principal": Provide(provide_principal), "ctx": Provide(provide_ctx)}

    @post("/", operation_id="openAccount",
          opt=headers(sends=[LOG_POSITION, LOCATION, CACHE_CONTROL]),
          status_code=201, summary="Open an account with its first API key (admin)",
          responses=problems(400, 401, 403, 409, 422))
    async def open_account(self, request: Request[Any, Any, Any], principal: NamedDependency[Principal],
                           ctx: NamedDependency[CommandContext],
                           data: JSONBody[OpenAccountRequest]) -> Response[OpenedAccountView]:
        require_admin(principal)
        account, issued = await container_of(request).accounts.open(ctx, data.name, data.is_admin)
        headers = _shown_once(issued)
        view = OpenedAccountView(
            account=AccountView(id=account.id, name=account.name, is_admin=account.is_admin,
                                created_at=account.created_on),
            api_key=_issued_view(issued),
        )
        return Response(view, status_code=201, headers={**headers, "Location": f"/v1/accounts/{account.id}"})

    @get("/me", operation_id="getMyAccount", summary="The caller's account", responses=problems(401))
    async def me(self, request: Request[Any, Any, Any], principal: NamedDependency[Principal]) -> AccountView:
        return await _account_view(request, principal.account_id)

    @get("/{account_id:uuid}", operation_id="getAccount", summary="Get an account", responses=problems(400, 401, 404))
    async def get_one(self, request: Request[Any, Any, Any], principal: NamedDependency[Principal],
                      account_id: FromPath[uuid.UUID]) -> AccountView:
        _own_or_admin(principal, account_id)
        return await _account_view(request, account_id)

    @get("/{account_id:uuid}/api-keys", operation_id="listApiKeys", summary="List API keys (never the keys themselves)",
         responses=problems(400, 401, 404))
    async def keys(self, request: Request[Any, Any, Any], principal: NamedDependency[Principal],
                   account_id: FromPath[uuid.UUID]) -> list[ApiKeyView]:
        _own_or_admin(principal, account_id)
        container = container_of(request)
        # Every key lives in the account's one stream: reading that stream's writes costs one lookup.
        await read_your_writes(container.pool, "accounts", account_id, container.settings.read_your_writes_timeout_s)
        return [ApiKeyView(**r) for r in await list_keys(container.pool, account_id)]

    @post("/{account_id:uuid}/api-keys", operation_id="issueApiKey", opt=headers(sends=[LOG_POSITION, CACHE_CONTROL]),
          status_code=201, summary="Issue an API key (shown once)",
          responses=problems(400, 401, 404, 409, 422))
    async def issue(self, request: Request[Any, Any, Any], principal: NamedDependency[Principal],
                    ctx: NamedDependency[CommandContext],
                    account_id: FromPath[uuid.UUID], data: JSONBody[IssueKeyRequest]) -> Response[IssuedKeyView]:
        _own_or_admin(principal, account_id)
        issued = await container_of(request).accounts.issue_key(ctx, account_id, data.label)
        return Response(_issued_view(issued), status_code=201, headers=_shown_once(issued))

    @delete("/{account_id:uuid}/api-keys/{key_id:uuid}", operation_id="revokeApiKey",
            status_code=204, summary="Revoke an API key",
            responses=problems(400, 401, 404, 409))
    async def revoke(self, request: Request[Any, Any, Any], principal: NamedDependency[Principal],
                     ctx: NamedDependency[CommandContext],
                     account_id: FromPath[uuid.UUID], key_id: FromPath[uuid.UUID]) -> None:
        _own_or_admin(principal, account_id)
        # The key stops working in the same transaction that records its revocation.
        await container_of(request).accounts.revoke_key(ctx, account_id, key_id)
