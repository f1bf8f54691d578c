"""The audit feed's tamper evidence over HTTP: the platform's public key and the signed checkpoints."""

from __future__ import annotations

import base64
import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency, Provide
from litestar.params import QueryParameter

from app.api.audit import parse_cursor
from app.api.audit_formats import CheckpointLine
from app.api.context import AUTHENTICATED, Principal, container_of, provide_principal
from app.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, encode_cursor
from app.api.problems import ApiError, problems
from projections.audit_chain import NO_ACCOUNT, chain_key, decode_raw_key, key_id
from projections.audit_reader import list_checkpoints


class SigningKeyView(msgspec.Struct, rename="camel", frozen=True):
    """The Ed25519 key audit checkpoints are signed with: pin it, and pass it to `mm audit verify`."""

    public_key: str  # base64 of the raw 32 bytes
    key_id: str  # as each checkpoint names it
    algorithm: str = "Ed25519"


class CheckpointPage(msgspec.Struct, rename="camel", frozen=True):
    """One page of a list; nextCursor fetches the next (null on the last page)."""

    data: list[CheckpointLine]
    next_cursor: str | None = None


class AuditCheckpointsController(Controller):
    path = "/v1/audit-events"
    tags = ["audit"]
    security = AUTHENTICATED
    dependencies = {"principal": Provide(provide_principal)}

    @get("/signing-key", operation_id="getAuditSigningKey", summary="The public key audit checkpoints verify with",
         responses=problems(401, 503))
    async def signing_key(self, request: Request[Any, Any, Any], principal: NamedDependency[Principal]
                          ) -> SigningKeyView:
        public = container_of(request).settings.audit_public_key_b64
        if not public:
            raise ApiError(503, "AUDIT_KEY_UNAVAILABLE", "this server has no audit public key configured")
        return SigningKeyView(public_key=public, key_id=key_id(decode_raw_key(public, "MM_AUDIT_PUBLIC_KEY")))

    @get("/checkpoints", operation_id="listAuditCheckpoints",
         summary="List signed audit checkpoints (account-scoped; admins see all)", responses=problems(400, 401, 503))
    async def checkpoints(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        account_id: Annotated[uuid.UUID | None, QueryParameter(name="accountId")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
    ) -> CheckpointPage:
        after = parse_cursor(cursor)
        if not principal.is_admin:
            if account_id is not None and account_id != principal.account_id:
                return CheckpointPage(data=[])  # another account's: nothing, as if it had none
            account_id = principal.account_id
        key = chain_key(account_id) if account_id is not None else None
        rows = await list_checkpoints(container_of(request).pool, key, after, limit + 1)
        views = [CheckpointLine(
            account_id=None if r["account_key"] == NO_ACCOUNT else r["account_key"], count=r["seq"],
            last_cursor=encode_cursor(r["tx_id"], r["position"]), last_hash=r["last_hash"].hex(), at=r["at"],
            key_id=r["key_id"], signature=base64.b64encode(r["signature"]).decode(),
        ) for r in rows[:limit]]
        more = len(rows) > limit
        return CheckpointPage(data=views, next_cursor=views[-1].last_cursor if more and views else None)
