"""HTTP routes for a machine's capability graph: read it, and create, revise and delete nodes and edges."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody

from app.api.consistency import etag, expected_version, write_headers
from app.api.context import AUTHENTICATED, container_of, provide_ctx, provide_principal, readable_machine
from app.api.openapi_headers import AS_OF_VERSION, ETAG, IF_MATCH, LOCATION, LOG_POSITION, MIN_POSITION, headers
from app.api.problems import problems
from app.api.schemas_graph import (
    CreateEdgeRequest,
    CreateNodeRequest,
    EdgeView,
    GraphView,
    NodeView,
    ReviseEdgeRequest,
    ReviseNodeRequest,
)
from app.api.time_travel import AsOfParam, VersionParam, load_guarded, point_in_time
from app.services.graph import Outcome
from domain.graph.aggregate import MachineGraph, graph_id_of
from domain.graph.commands import ReviseEdge, ReviseNode
from domain.shared.context import CommandContext
from domain.shared.errors import NotFound
from projections.graph_reader import get_edge, get_node, list_edges, list_nodes

_MERGE_NOTE = (
    " `data` is shallow-merged into the current data: a top-level key given replaces that key's value,"
    " a key set to null is removed, other keys are kept; the merged result is validated again."
    " If-Match (the ETag from a read) makes the change conditional on this item's version."
)

_SCHEMA_NOTE = " A capability whose data.inputSchema is not a valid JSON Schema is refused: 422 VALIDATION_ERROR."


def _headers(outcome: Outcome, **extra: str) -> dict[str, str]:
    return write_headers(outcome.item["version"] if outcome.item is not None else None, outcome.position, **extra)


class GraphController(Controller):
    path = "/v1/machines/{machine_id:uuid}/graph"
    tags = ["graph"]
    security = AUTHENTICATED
    dependencies = {"principal": Provide(provide_principal), "ctx": Provide(provide_ctx)}
    request_max_body_size = 64 * 1024

    @get("/", operation_id="getGraph", opt=headers(honours=[MIN_POSITION], sends=[AS_OF_VERSION]),
         summary="Get a machine's graph (all nodes and edges; now, or asOf a time / at a version)",
         responses=problems(400, 401, 404, 409, 422, 503))
    async def get_graph(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                        machine_id: FromPath[uuid.UUID], as_of: AsOfParam = None,
                        version: VersionParam = None) -> Response[GraphView]:
        point = point_in_time(as_of, version)
        if point is not None:
            container = container_of(request)
            graph = await load_guarded(container, container.machines.require_operational(ctx, machine_id),
                                       MachineGraph, graph_id_of(machine_id), point, "graph")
            return Response(GraphView.of(graph), headers={AS_OF_VERSION: str(graph.version)})
        await readable_machine(request, ctx, machine_id, "graph", graph_id_of(machine_id))
        # One snapshot for both reads, so an edge never names a node that the node list does not show.
        async with container_of(request).pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                                                   readonly=True):
            nodes, edges = await list_nodes(conn, machine_id), await list_edges(conn, machine_id)
        return Response(GraphView(machine_id=machine_id, nodes=[NodeView(**n) for n in nodes],
                                  edges=[EdgeView.row(e) for e in edges]))

    @get("/nodes/{node_id:uuid}", operation_id="getGraphNode", opt=headers(honours=[MIN_POSITION], sends=[ETAG]),
         summary="Get a node", responses=problems(400, 401, 404, 409, 503))
    async def get_node(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                       machine_id: FromPath[uuid.UUID], node_id: FromPath[uuid.UUID]) -> Response[NodeView]:
        await readable_machine(request, ctx, machine_id, "graph", graph_id_of(machine_id))
        row = await get_node(container_of(request).pool, machine_id, node_id)
        if row is None:
            raise NotFound(f"node {node_id} not found in this machine's graph")
        return Response(NodeView(**row), headers={"ETag": etag(row["version"])})

    @get("/edges/{edge_id:uuid}", operation_id="getGraphEdge", opt=headers(honours=[MIN_POSITION], sends=[ETAG]),
         summary="Get an edge", responses=problems(400, 401, 404, 409, 503))
    async def get_edge(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                       machine_id: FromPath[uuid.UUID], edge_id: FromPath[uuid.UUID]) -> Response[EdgeView]:
        await readable_machine(request, ctx, machine_id, "graph", graph_id_of(machine_id))
        row = await get_edge(container_of(request).pool, machine_id, edge_id)
        if row is None:
            raise NotFound(f"edge {edge_id} not found in this machine's graph")
        return Response(EdgeView.row(row), headers={"ETag": etag(row["version"])})

    @post("/nodes", operation_id="createGraphNode", opt=headers(sends=[ETAG, LOG_POSITION, LOCATION]),
          status_code=201, summary="Create a node (status defaults to draft)",
          description="409 GRAPH_LIMIT_REACHED once the graph holds the most nodes a machine may have." + _SCHEMA_NOTE,
          responses=problems(400, 401, 404, 409, 413, 422))
    async def create_node(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                          machine_id: FromPath[uuid.UUID], data: JSONBody[CreateNodeRequest]) -> Response[NodeView]:
        outcome = await container_of(request).graph.create_node(
            ctx, machine_id, node_type=data.type, label=data.label, status=data.status, data=data.data)
        assert outcome.item is not None
        location = f"/v1/machines/{machine_id}/graph/nodes/{outcome.item['id']}"
        return Response(NodeView.of(machine_id, outcome.item), status_code=201,
                        headers=_headers(outcome, Location=location))

    @patch("/nodes/{node_id:uuid}", operation_id="reviseGraphNode",
           opt=headers(honours=[IF_MATCH], sends=[ETAG, LOG_POSITION]),
           summary="Revise a node's type, label, status or data",
           description="Every field is optional." + _MERGE_NOTE + _SCHEMA_NOTE,
           responses=problems(400, 401, 404, 409, 412, 413, 422))
    async def revise_node(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                          machine_id: FromPath[uuid.UUID], node_id: FromPath[uuid.UUID],
                          data: JSONBody[ReviseNodeRequest]) -> Response[NodeView]:
        cmd = ReviseNode(node_id=node_id, node_type=data.type, label=data.label, status=data.status, data=data.data)
        outcome = await container_of(request).graph.revise_node(ctx, machine_id, cmd, expected_version(request))
        assert outcome.item is not None
        return Response(NodeView.of(machine_id, outcome.item), headers=_headers(outcome))

    @delete("/nodes/{node_id:uuid}", operation_id="deleteGraphNode",
            opt=headers(honours=[IF_MATCH], sends=[LOG_POSITION]),
            status_code=204, summary="Delete a node and every edge touching it",
            description="Each removed edge is recorded as its own graph.edge.deleted event, in the same append.",
            responses=problems(400, 401, 404, 409, 412))
    async def delete_node(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                          machine_id: FromPath[uuid.UUID], node_id: FromPath[uuid.UUID]) -> Response[None]:
        outcome = await container_of(request).graph.delete_node(ctx, machine_id, node_id, expected_version(request))
        return Response(None, status_code=204, headers=_headers(outcome))

    @post("/edges", operation_id="createGraphEdge", opt=headers(sends=[ETAG, LOG_POSITION, LOCATION]),
          status_code=201, summary="Create an edge between two nodes of this graph",
          description="422 GRAPH_NODE_MISSING when from or to is not a node of this graph; 409 GRAPH_EDGE_EXISTS"
                      " when an edge of this type already joins them; 400 for a self-loop.",
          responses=problems(400, 401, 404, 409, 413, 422))
    async def create_edge(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                          machine_id: FromPath[uuid.UUID], data: JSONBody[CreateEdgeRequest]) -> Response[EdgeView]:
        outcome = await container_of(request).graph.create_edge(
            ctx, machine_id, from_node_id=data.from_, to_node_id=data.to, edge_type=data.type, data=data.data)
        assert outcome.item is not None
        location = f"/v1/machines/{machine_id}/graph/edges/{outcome.item['id']}"
        return Response(EdgeView.of(machine_id, outcome.item), status_code=201,
                        headers=_headers(outcome, Location=location))

    @patch("/edges/{edge_id:uuid}", operation_id="reviseGraphEdge",
           opt=headers(honours=[IF_MATCH], sends=[ETAG, LOG_POSITION]),
           summary="Revise an edge's type or data",
           description="A new type must not duplicate another edge between the same nodes (409 GRAPH_EDGE_EXISTS)."
                       + _MERGE_NOTE, responses=problems(400, 401, 404, 409, 412, 413))
    async def revise_edge(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                          machine_id: FromPath[uuid.UUID], edge_id: FromPath[uuid.UUID],
                          data: JSONBody[ReviseEdgeRequest]) -> Response[EdgeView]:
        cmd = ReviseEdge(edge_id=edge_id, edge_type=data.type, data=data.data)
        outcome = await container_of(request).graph.revise_edge(ctx, machine_id, cmd, expected_version(request))
        assert outcome.item is not None
        return Response(EdgeView.of(machine_id, outcome.item), headers=_headers(outcome))

    @delete("/edges/{edge_id:uuid}", operation_id="deleteGraphEdge",
            opt=headers(honours=[IF_MATCH], sends=[LOG_POSITION]), status_code=204, summary="Delete an edge",
            responses=problems(400, 401, 404, 409, 412))
    async def delete_edge(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                          machine_id: FromPath[uuid.UUID], edge_id: FromPath[uuid.UUID]) -> Response[None]:
        outcome = await container_of(request).graph.delete_edge(ctx, machine_id, edge_id, expected_version(request))
        return Response(None, status_code=204, headers=_headers(outcome))
