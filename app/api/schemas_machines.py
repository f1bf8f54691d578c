"""Request and response bodies of the machine endpoints (camelCase, unknown fields refused)."""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec

from app.api.schema_types import NOT_BLANK, UtcTime
from domain.machines.aggregate import Machine

LabelKey = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?$", max_length=63)]
LabelValue = Annotated[str, msgspec.Meta(max_length=256)]
Labels = Annotated[dict[LabelKey, LabelValue], msgspec.Meta(max_length=32)]
# Not blank (the domain refuses a blank name too).
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NOT_BLANK)]
Description = Annotated[str, msgspec.Meta(max_length=2000)]


class RegisterMachineRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    name: Name
    # Standard base64 of exactly 32 bytes is 43 characters and one '=' (the domain decodes it again).
    public_key: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9+/]{43}=$", min_length=44, max_length=44,
                                            description="Ed25519 public key, 32 bytes, standard base64",
                                            examples=["A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="])]
    description: Description = ""
    labels: Labels = msgspec.field(default_factory=dict)


class ReviseMachineRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    name: Name | None = None
    description: Description | None = None
    labels: Labels | None = None


class StatusChangeRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    reason: Annotated[str, msgspec.Meta(max_length=500)] | None = None


class VerifyIdentityRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    challenge_id: uuid.UUID
    # Deliberately loose: any wrong signature, malformed ones included, is a failed attempt (422) that burns
    # the challenge, so a guesser learns nothing from a 400.
    signature: Annotated[str, msgspec.Meta(min_length=1, max_length=128,
                                           description="Ed25519 signature (64 bytes) of the nonce's UTF-8 bytes,"
                                                       " standard base64 (88 characters)")]


class ChallengeView(msgspec.Struct, rename="camel", frozen=True):
    challenge_id: uuid.UUID
    nonce: str
    expires_at: UtcTime
    algorithm: str = "ed25519"
    sign: str = "the UTF-8 bytes of nonce"


class MachineView(msgspec.Struct, rename="camel", frozen=True):
    id: uuid.UUID
    account_id: uuid.UUID
    name: str
    description: str
    public_key: str
    labels: dict[str, str]
    status: str
    identity_verified: bool
    identity_verified_at: UtcTime | None
    version: int
    created_at: UtcTime
    updated_at: UtcTime

    @classmethod
    def of(cls, m: Machine) -> MachineView:
        return cls(
            id=m.id, account_id=m.account_id, name=m.name, description=m.description, public_key=m.public_key,
            labels=dict(m.labels), status=m.status, identity_verified=m.identity_verified,
            identity_verified_at=m.identity_verified_at, version=m.version, created_at=m.created_on,
            updated_at=m.modified_on,
        )


class MachinePage(msgspec.Struct, rename="camel", frozen=True):
    """One page of a list; nextCursor fetches the next (null on the last page)."""

    data: list[MachineView]
    next_cursor: str | None = None
