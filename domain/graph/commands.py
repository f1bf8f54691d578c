"""Imperative graph commands (frozen structs); ids and the owning machine are chosen by the caller."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec


class OpenGraph(msgspec.Struct, frozen=True, kw_only=True):
    graph_id: uuid.UUID
    account_id: uuid.UUID
    machine_id: uuid.UUID


class CreateNode(msgspec.Struct, frozen=True, kw_only=True):
    node_id: uuid.UUID
    node_type: str
    label: str
    status: str = "draft"
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class ReviseNode(msgspec.Struct, frozen=True, kw_only=True):
    """None leaves a field as it is; `data` is a shallow patch where a None value removes that key."""

    node_id: uuid.UUID
    node_type: str | None = None
    label: str | None = None
    status: str | None = None
    data: dict[str, Any] | None = None


class CreateEdge(msgspec.Struct, frozen=True, kw_only=True):
    edge_id: uuid.UUID
    from_node_id: uuid.UUID
    to_node_id: uuid.UUID
    edge_type: str
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class ReviseEdge(msgspec.Struct, frozen=True, kw_only=True):
    """Same patch semantics as ReviseNode."""

    edge_id: uuid.UUID
    edge_type: str | None = None
    data: dict[str, Any] | None = None
