"""Graph command service: guard the machine, load (or open) its graph, decide, save; retry lost races."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from app.services.json_schemas import schema_error
from app.services.machines import MachinesService
from app.services.retries import check_expected, retry_conflicts
from app.store.repository import Repository
from app.store.types import AppendResult, LogPosition
from domain.graph.aggregate import MachineGraph, data_of, graph_id_of
from domain.graph.commands import CreateEdge, CreateNode, OpenGraph, ReviseEdge, ReviseNode
from domain.graph.errors import InputSchemaInvalid
from domain.shared.context import CommandContext
from domain.shared.errors import NotFound
from domain.shared.ids import derived_id, new_id

# Every node and edge of a machine shares one stream, so concurrent edits of different nodes race here.
_RETRIES = 8


class Outcome:
    """The graph after the command, the node or edge it was about, and where its last event sits in the log."""

    def __init__(self, graph: MachineGraph, item: dict[str, Any] | None, result: AppendResult | None) -> None:
        self.graph = graph
        self.item = item
        self.position: LogPosition | None = result.last if result else None


def _check_version(item: dict[str, Any], what: str, expected: int | None) -> None:
    # If-Match names the node's or edge's own version: edits elsewhere in the graph are no conflict.
    check_expected(item["version"], expected, what)


def _check_input_schema(node: dict[str, Any]) -> None:
    """A capability's inputSchema must be a valid JSON Schema (checked here: the domain has no jsonschema), so
    discovery never meets a listing no input could be validated against."""
    if node["type"] != "capability":
        return
    problem = schema_error(data_of(node).get("inputSchema", {}))
    if problem is not None:
        raise InputSchemaInvalid(f"capability data.inputSchema is not a valid JSON Schema: {problem}",
                                 field="data.inputSchema")


class GraphService:
    def __init__(self, repo: Repository, machines: MachinesService) -> None:
        self.repo = repo
        self.machines = machines

    async def create_node(self, ctx: CommandContext, machine_id: uuid.UUID, *, node_type: str, label: str,
                          status: str, data: dict[str, Any]) -> Outcome:
        node_id = self._new_id("graph-node", ctx, machine_id)
        cmd = CreateNode(node_id=node_id, node_type=node_type, label=label, status=status, data=data)

        def decide(g: MachineGraph) -> None:
            if str(node_id) not in g.nodes:  # present already: a retry of a create that was recorded
                g.create_node(cmd, ctx.at)
                _check_input_schema(g.node(node_id))

        graph, result = await self._change(ctx, machine_id, decide)
        return Outcome(graph, graph.node(node_id), result)

    async def revise_node(self, ctx: CommandContext, machine_id: uuid.UUID, cmd: ReviseNode,
                          expected: int | None = None) -> Outcome:
        def decide(g: MachineGraph) -> None:
            _check_version(g.node(cmd.node_id), "node", expected)
            g.revise_node(cmd, ctx.at)
            if cmd.data is not None or cmd.node_type is not None:
                _check_input_schema(g.node(cmd.node_id))

        graph, result = await self._change(ctx, machine_id, decide)
        return Outcome(graph, graph.node(cmd.node_id), result)

    async def delete_node(self, ctx: CommandContext, machine_id: uuid.UUID, node_id: uuid.UUID,
                          expected: int | None = None) -> Outcome:
        def decide(g: MachineGraph) -> None:
            _check_version(g.node(node_id), "node", expected)
            g.delete_node(node_id, ctx.at)

        graph, result = await self._change(ctx, machine_id, decide)
        return Outcome(graph, None, result)

    async def create_edge(self, ctx: CommandContext, machine_id: uuid.UUID, *, from_node_id: uuid.UUID,
                          to_node_id: uuid.UUID, edge_type: str, data: dict[str, Any]) -> Outcome:
        edge_id = self._new_id("graph-edge", ctx, machine_id)
        cmd = CreateEdge(edge_id=edge_id, from_node_id=from_node_id, to_node_id=to_node_id, edge_type=edge_type,
                         data=data)

        def decide(g: MachineGraph) -> None:
            if str(edge_id) not in g.edges:
                g.create_edge(cmd, ctx.at)

        graph, result = await self._change(ctx, machine_id, decide)
        return Outcome(graph, graph.edge(edge_id), result)

    async def revise_edge(self, ctx: CommandContext, machine_id: uuid.UUID, cmd: ReviseEdge,
                          expected: int | None = None) -> Outcome:
        def decide(g: MachineGraph) -> None:
            _check_version(g.edge(cmd.edge_id), "edge", expected)
            g.revise_edge(cmd, ctx.at)

        graph, result = await self._change(ctx, machine_id, decide)
        return Outcome(graph, graph.edge(cmd.edge_id), result)

    async def delete_edge(self, ctx: CommandContext, machine_id: uuid.UUID, edge_id: uuid.UUID,
                          expected: int | None = None) -> Outcome:
        def decide(g: MachineGraph) -> None:
            _check_version(g.edge(edge_id), "edge", expected)
            g.delete_edge(edge_id, ctx.at)

        graph, result = await self._change(ctx, machine_id, decide)
        return Outcome(graph, None, result)

    @staticmethod
    def _new_id(kind: str, ctx: CommandContext, machine_id: uuid.UUID) -> uuid.UUID:
        # A retried request must name the same node or edge, so its id derives from the idempotency key.
        return derived_id(kind, ctx.account_id, machine_id, ctx.idempotency_key) if ctx.idempotency_key else new_id()

    async def _change(self, ctx: CommandContext, machine_id: uuid.UUID,
                      decide: Callable[[MachineGraph], None]) -> tuple[MachineGraph, AppendResult | None]:
        machine = await self.machines.require_operational(ctx, machine_id)
        graph_id = graph_id_of(machine_id)

        async def attempt() -> tuple[MachineGraph, AppendResult | None]:
            graph = await self._load(graph_id)
            fresh = graph is None
            if graph is None:
                # The first write opens the stream: Opened and the first node are appended together.
                opening = OpenGraph(graph_id=graph_id, account_id=machine.account_id, machine_id=machine_id)
                graph = MachineGraph.open(opening, ctx.at)
            decide(graph)
            if fresh and len(graph.pending_events) == 1:
                return graph, None  # nothing decided on a graph that does not exist yet: do not open it
            result = await self.repo.save(graph, ctx)
            if result is not None and result.duplicate:
                reloaded = await self._load(graph_id)
                assert reloaded is not None  # the duplicate proves the stream exists
                graph = reloaded
            return graph, result

        # If-Match is checked per node or edge inside `decide`, so every lost race on the shared stream is
        # retried: edits elsewhere in the graph are no conflict.
        return await retry_conflicts(attempt, attempts=_RETRIES, jitter_s=0.002)

    async def _load(self, graph_id: uuid.UUID) -> MachineGraph | None:
        try:
            return await self.repo.get(MachineGraph, graph_id, what="graph")
        except NotFound:
            return None
