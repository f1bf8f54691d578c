"""Request and response bodies of the account and API-key endpoints."""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec

from app.api.schema_types import NOT_BLANK, UtcTime


class OpenAccountRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NOT_BLANK)]
    is_admin: bool = False


class IssueKeyRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    label: Annotated[str, msgspec.Meta(max_length=200)] = ""


class AccountView(msgspec.Struct, rename="camel", frozen=True):
    id: uuid.UUID
    name: str
    is_admin: bool
    created_at: UtcTime


class ApiKeyView(msgspec.Struct, rename="camel", frozen=True):
    id: uuid.UUID
    account_id: uuid.UUID
    prefix: str
    label: str
    created_at: UtcTime
    revoked_at: UtcTime | None = None


class IssuedKeyView(msgspec.Struct, rename="camel", frozen=True):
    """The only response that ever contains the key itself: store it now, it cannot be shown again."""

    id: uuid.UUID
    key: str
    prefix: str
    label: str


class OpenedAccountView(msgspec.Struct, rename="camel", frozen=True):
    account: AccountView
    api_key: IssuedKeyView
