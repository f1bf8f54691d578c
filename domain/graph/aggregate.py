"""The MachineGraph aggregate: one machine's capability nodes and the edges between them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec
from eventsourcing.domain import Aggregate

from domain.graph import rules
from domain.graph.commands import CreateEdge, CreateNode, OpenGraph, ReviseEdge, ReviseNode
from domain.graph.errors import EdgeExists, GraphLimitReached, NodeMissing
from domain.shared.errors import InvalidTransition, NotFound, ValidationFailed
from domain.shared.ids import derived_id

_encode, _decode = msgspec.json.Encoder().encode, msgspec.json.Decoder(dict[str, Any]).decode


def graph_id_of(machine_id: uuid.UUID) -> uuid.UUID:
    """One graph per machine, so its stream id follows from the machine's."""
    return derived_id("graph", machine_id)


def _text(data: dict[str, Any]) -> str:
    # State keeps user data as JSON text: the snapshot transcoder would otherwise read a user object
    # shaped like its own {"_type_", "_data_"} tags as a typed value and fail to load the graph.
    return _encode(data).decode()


def data_of(item: dict[str, Any]) -> dict[str, Any]:
    """The data of a node or edge from state."""
    return _decode(item["data"])


class MachineGraph(Aggregate):
    TOPIC = "graph:MachineGraph"
    SNAPSHOT_EVERY = 100

    class Created(Aggregate.Created):
        TOPIC = "graph:MachineGraph.Created"  # required by eventsourcing once TOPIC is set; never triggered

    class Event(Aggregate.Event):
        TOPIC = "graph:MachineGraph.Event"

    class Opened(Aggregate.Created):
        TOPIC = "graph:MachineGraph.Opened"
        account_id: uuid.UUID
        machine_id: uuid.UUID

    class NodeCreated(Aggregate.Event):
        TOPIC = "graph:MachineGraph.NodeCreated"
        node_id: uuid.UUID
        node_type: str
        label: str
        status: str
        data: dict[str, Any]

        def apply(self, aggregate: Any) -> None:
            aggregate.nodes[str(self.node_id)] = {
                "id": self.node_id, "type": self.node_type, "label": self.label, "status": self.status,
                "data": _text(self.data), "version": 1, "created_at": self.timestamp, "updated_at": self.timestamp,
            }

    class NodeRevised(Aggregate.Event):
        """Carries only what changed; `data` is the node's whole data after the merge."""

        TOPIC = "graph:MachineGraph.NodeRevised"
        node_id: uuid.UUID
        node_type: str | None
        label: str | None
        status: str | None
        data: dict[str, Any] | None

        def apply(self, aggregate: Any) -> None:
            node = aggregate.nodes[str(self.node_id)]
            for key, value in (("type", self.node_type), ("label", self.label), ("status", self.status)):
                if value is not None:
                    node[key] = value
            if self.data is not None:
                node["data"] = _text(self.data)
            node["version"] += 1
            node["updated_at"] = self.timestamp

    class NodeDeleted(Aggregate.Event):
        TOPIC = "graph:MachineGraph.NodeDeleted"
        node_id: uuid.UUID

        def apply(self, aggregate: Any) -> None:
            del aggregate.nodes[str(self.node_id)]

    class EdgeCreated(Aggregate.Event):
        TOPIC = "graph:MachineGraph.EdgeCreated"
        edge_id: uuid.UUID
        from_node_id: uuid.UUID
        to_node_id: uuid.UUID
        edge_type: str
        data: dict[str, Any]

        def apply(self, aggregate: Any) -> None:
            aggregate.edges[str(self.edge_id)] = {
                "id": self.edge_id, "from": self.from_node_id, "to": self.to_node_id, "type": self.edge_type,
                "data": _text(self.data), "version": 1, "created_at": self.timestamp, "updated_at": self.timestamp,
            }

    class EdgeRevised(Aggregate.Event):
        TOPIC = "graph:MachineGraph.EdgeRevised"
        edge_id: uuid.UUID
        edge_type: str | None
        data: dict[str, Any] | None

        def apply(self, aggregate: Any) -> None:
            edge = aggregate.edges[str(self.edge_id)]
            if self.edge_type is not None:
                edge["type"] = self.edge_type
            if self.data is not None:
                edge["data"] = _text(self.data)
            edge["version"] += 1
            edge["updated_at"] = self.timestamp

    class EdgeDeleted(Aggregate.Event):
        """`with_node_id` names the deleted node that took this edge with it (None: deleted on its own)."""

        TOPIC = "graph:MachineGraph.EdgeDeleted"
        edge_id: uuid.UUID
        with_node_id: uuid.UUID | None

        def apply(self, aggregate: Any) -> None:
            del aggregate.edges[str(self.edge_id)]

    def __init__(self, account_id: uuid.UUID, machine_id: uuid.UUID) -> None:
        self.account_id = account_id
        self.machine_id = machine_id
        # Keyed by str(id): snapshots are JSON, whose object keys are strings.
        self.nodes: dict[str, dict[str, Any]] = {}
        self.edges: dict[str, dict[str, Any]] = {}

    # --- decisions -------------------------------------------------------------------------------

    @classmethod
    def open(cls, cmd: OpenGraph, at: datetime) -> MachineGraph:
        return cls._create(cls.Opened, id=cmd.graph_id, timestamp=at, account_id=cmd.account_id,
                           machine_id=cmd.machine_id)

    def create_node(self, cmd: CreateNode, at: datetime) -> None:
        if str(cmd.node_id) in self.nodes:
            raise InvalidTransition(f"node {cmd.node_id} already exists")
        rules.check_node_type(cmd.node_type)
        rules.check_label(cmd.label)
        rules.check_status(cmd.status)
        data = rules.node_data(cmd.node_type, cmd.data)
        if len(self.nodes) >= rules.MAX_NODES:
            raise GraphLimitReached(f"a graph holds at most {rules.MAX_NODES} nodes", limit=rules.MAX_NODES)
        self.trigger_event(self.NodeCreated, timestamp=at, node_id=cmd.node_id, node_type=cmd.node_type,
                           label=cmd.label, status=cmd.status, data=data)

    def revise_node(self, cmd: ReviseNode, at: datetime) -> None:
        """Records only what changes; the merged data is validated against the node's resulting type."""
        node = self.node(cmd.node_id)
        if cmd.node_type is not None:
            rules.check_node_type(cmd.node_type)
        if cmd.label is not None:
            rules.check_label(cmd.label)
        if cmd.status is not None:
            rules.check_status(cmd.status)
        node_type = cmd.node_type if cmd.node_type is not None else node["type"]
        current = data_of(node)
        data = rules.node_data(node_type, rules.merge(current, cmd.data) if cmd.data is not None else current)
        changes = {
            "node_type": None if node_type == node["type"] else node_type,
            "label": None if cmd.label in (None, node["label"]) else cmd.label,
            "status": None if cmd.status in (None, node["status"]) else cmd.status,
            "data": None if data == current else data,
        }
        if any(v is not None for v in changes.values()):
            self.trigger_event(self.NodeRevised, timestamp=at, node_id=cmd.node_id, **changes)

    def delete_node(self, node_id: uuid.UUID, at: datetime) -> None:
        """The node's edges go first, each as its own event, so no state ever has an edge to nowhere."""
        self.node(node_id)
        for edge in [e for e in self.edges.values() if node_id in (e["from"], e["to"])]:
            self.trigger_event(self.EdgeDeleted, timestamp=at, edge_id=edge["id"], with_node_id=node_id)
        self.trigger_event(self.NodeDeleted, timestamp=at, node_id=node_id)

    def create_edge(self, cmd: CreateEdge, at: datetime) -> None:
        if str(cmd.edge_id) in self.edges:
            raise InvalidTransition(f"edge {cmd.edge_id} already exists")
        if cmd.from_node_id == cmd.to_node_id:
            raise ValidationFailed("an edge cannot join a node to itself", field="to")
        rules.check_edge_type(cmd.edge_type)
        rules.check_data(cmd.data, rules.MAX_EDGE_DATA_BYTES)
        for field, node_id in (("from", cmd.from_node_id), ("to", cmd.to_node_id)):
            if str(node_id) not in self.nodes:
                raise NodeMissing(f"node {node_id} ({field}) is not in this machine's graph",
                                  field=field, nodeId=str(node_id))
        if len(self.edges) >= rules.MAX_EDGES:
            raise GraphLimitReached(f"a graph holds at most {rules.MAX_EDGES} edges", limit=rules.MAX_EDGES)
        self._no_duplicate(cmd.from_node_id, cmd.to_node_id, cmd.edge_type)
        self.trigger_event(self.EdgeCreated, timestamp=at, edge_id=cmd.edge_id, from_node_id=cmd.from_node_id,
                           to_node_id=cmd.to_node_id, edge_type=cmd.edge_type, data=dict(cmd.data))

    def revise_edge(self, cmd: ReviseEdge, at: datetime) -> None:
        edge = self.edge(cmd.edge_id)
        edge_type = None if cmd.edge_type in (None, edge["type"]) else cmd.edge_type
        if edge_type is not None:
            rules.check_edge_type(edge_type)
            self._no_duplicate(edge["from"], edge["to"], edge_type)
        current = data_of(edge)
        data = rules.merge(current, cmd.data) if cmd.data is not None else current
        rules.check_data(data, rules.MAX_EDGE_DATA_BYTES)
        if edge_type is not None or data != current:
            self.trigger_event(self.EdgeRevised, timestamp=at, edge_id=cmd.edge_id, edge_type=edge_type,
                               data=None if data == current else data)

    def delete_edge(self, edge_id: uuid.UUID, at: datetime) -> None:
        self.edge(edge_id)
        self.trigger_event(self.EdgeDeleted, timestamp=at, edge_id=edge_id, with_node_id=None)

    # --- queries ---------------------------------------------------------------------------------

    def node(self, node_id: uuid.UUID) -> dict[str, Any]:
        node = self.nodes.get(str(node_id))
        if node is None:
            raise NotFound(f"node {node_id} not found in this machine's graph")
        return node

    def edge(self, edge_id: uuid.UUID) -> dict[str, Any]:
        edge = self.edges.get(str(edge_id))
        if edge is None:
            raise NotFound(f"edge {edge_id} not found in this machine's graph")
        return edge

    def _no_duplicate(self, from_id: uuid.UUID, to_id: uuid.UUID, edge_type: str) -> None:
        for e in self.edges.values():
            if (e["from"], e["to"], e["type"]) == (from_id, to_id, edge_type):
                raise EdgeExists(f"a {edge_type!r} edge from {from_id} to {to_id} already exists",
                                 edgeId=str(e["id"]))
