"""Request and response bodies of the graph endpoints (camelCase, unknown fields refused)."""

from __future__ import annotations

import enum
import uuid
from typing import Annotated, Any

import msgspec

from app.api.schema_types import NOT_BLANK, UtcTime
from domain.graph import rules
from domain.graph.aggregate import MachineGraph, data_of
from domain.shared.documents import MAX_DEPTH


class NodeType(enum.StrEnum):
    """A named enum (not an inline Literal), so every schema that uses it shares one component."""

    CAPABILITY = "capability"
    RESOURCE = "resource"
    TOOL = "tool"
    MODEL = "model"
    DATASET = "dataset"
    SERVICE = "service"
    OTHER = "other"


class NodeStatus(enum.StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    BLOCKED = "blocked"
    DEGRADED = "degraded"


Label = Annotated[str, msgspec.Meta(min_length=1, max_length=rules.MAX_LABEL, pattern=NOT_BLANK)]
EdgeType = Annotated[str, msgspec.Meta(pattern=rules.SLUG.pattern, max_length=63, examples=["depends-on"])]

_CAPABILITY = (
    'A capability node\'s data must hold name (non-blank string), price ({"amount": <integer minor units >= 0>,'
    ' "currency": "USD"}), providerKey (slug ^[a-z0-9][a-z0-9._-]{0,62}$, lower-cased on the way in) and'
    " optionally inputSchema (a JSON object, {} when absent)."
)
_BOUNDS = f"At most {rules.MAX_DATA_KEYS} top-level keys, {MAX_DEPTH} levels deep"
# Top-level keys of free-form data are bounded (the domain checks them too).
DataKey = Annotated[str, msgspec.Meta(max_length=rules.MAX_KEY_LENGTH)]
NodeData = Annotated[dict[DataKey, Any], msgspec.Meta(
    max_length=rules.MAX_DATA_KEYS,
    description=f"Free-form JSON object. {_BOUNDS}, {rules.MAX_NODE_DATA_BYTES} bytes encoded. {_CAPABILITY}")]
EdgeData = Annotated[dict[DataKey, Any], msgspec.Meta(
    max_length=rules.MAX_DATA_KEYS,
    description=f"Free-form JSON object. {_BOUNDS}, {rules.MAX_EDGE_DATA_BYTES} bytes encoded.")]
_MERGE = (
    "Shallow-merged into the current data: each key given replaces that top-level key's whole value,"
    " a key set to null is removed, keys not given are kept. The merged result is validated again."
)
NodeDataPatch = Annotated[dict[DataKey, Any], msgspec.Meta(max_length=rules.MAX_DATA_KEYS, description=_MERGE)]
EdgeDataPatch = Annotated[dict[DataKey, Any], msgspec.Meta(max_length=rules.MAX_DATA_KEYS, description=_MERGE)]


class CreateNodeRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    type: NodeType
    label: Label
    status: NodeStatus = NodeStatus.DRAFT
    data: NodeData = msgspec.field(default_factory=dict)


class ReviseNodeRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    type: NodeType | None = None
    label: Label | None = None
    status: NodeStatus | None = None
    data: NodeDataPatch | None = None


class CreateEdgeRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    # `from` is a Python keyword: the attribute is from_, the wire name stays "from".
    from_: uuid.UUID = msgspec.field(name="from")
    to: uuid.UUID
    type: EdgeType
    data: EdgeData = msgspec.field(default_factory=dict)


class ReviseEdgeRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    type: EdgeType | None = None
    data: EdgeDataPatch | None = None


class NodeView(msgspec.Struct, rename="camel", frozen=True):
    id: uuid.UUID
    machine_id: uuid.UUID
    type: NodeType
    label: str
    status: NodeStatus
    data: dict[str, Any]
    version: int
    created_at: UtcTime
    updated_at: UtcTime

    @classmethod
    def of(cls, machine_id: uuid.UUID, n: dict[str, Any]) -> NodeView:
        """From the aggregate's state (command responses)."""
        return cls(id=n["id"], machine_id=machine_id, type=n["type"], label=n["label"], status=n["status"],
                   data=data_of(n), version=n["version"], created_at=n["created_at"], updated_at=n["updated_at"])


class EdgeView(msgspec.Struct, rename="camel", frozen=True):
    id: uuid.UUID
    machine_id: uuid.UUID
    from_: uuid.UUID = msgspec.field(name="from")
    to: uuid.UUID
    type: str
    data: dict[str, Any]
    version: int
    created_at: UtcTime
    updated_at: UtcTime

    @classmethod
    def of(cls, machine_id: uuid.UUID, e: dict[str, Any]) -> EdgeView:
        return cls(id=e["id"], machine_id=machine_id, from_=e["from"], to=e["to"], type=e["type"],
                   data=data_of(e), version=e["version"], created_at=e["created_at"], updated_at=e["updated_at"])

    @classmethod
    def row(cls, r: dict[str, Any]) -> EdgeView:
        """From a read-model row."""
        return cls(id=r["id"], machine_id=r["machine_id"], from_=r["from_node_id"], to=r["to_node_id"],
                   type=r["type"], data=r["data"], version=r["version"], created_at=r["created_at"],
                   updated_at=r["updated_at"])


class GraphView(msgspec.Struct, rename="camel", frozen=True):
    machine_id: uuid.UUID
    nodes: list[NodeView]
    edges: list[EdgeView]

    @classmethod
    def of(cls, g: MachineGraph) -> GraphView:
        """From the aggregate (time travel), ordered as the read model lists them."""
        def order(item: dict[str, Any]) -> tuple[Any, ...]:
            return item["created_at"], item["id"]

        m = g.machine_id
        return cls(machine_id=m, nodes=[NodeView.of(m, n) for n in sorted(g.nodes.values(), key=order)],
                   edges=[EdgeView.of(m, e) for e in sorted(g.edges.values(), key=order)])
