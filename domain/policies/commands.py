"""Imperative policy commands (frozen structs); ids and time come from the caller."""

from __future__ import annotations

import uuid

import msgspec

from domain.policies.rules import Rule, Scope


class DefinePolicy(msgspec.Struct, frozen=True, kw_only=True):
    policy_id: uuid.UUID
    account_id: uuid.UUID
    platform: bool
    name: str
    description: str
    scope: Scope
    mode: str
    rules: list[Rule]


class RevisePolicy(msgspec.Struct, frozen=True, kw_only=True):
    """None leaves a field as it is; `rules` replaces the whole list."""

    name: str | None = None
    description: str | None = None
    scope: Scope | None = None
    mode: str | None = None
    rules: list[Rule] | None = None
