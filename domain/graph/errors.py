"""Graph errors, each with a stable code the API maps to a problem response."""

from __future__ import annotations

from domain.shared.errors import DomainError


class NodeMissing(DomainError):
    """An edge names a node that is not in this machine's graph."""

    code = "GRAPH_NODE_MISSING"


class EdgeExists(DomainError):
    """An edge of this type already joins these two nodes."""

    code = "GRAPH_EDGE_EXISTS"


class GraphLimitReached(DomainError):
    """The graph already holds the most nodes or edges one machine may have."""

    code = "GRAPH_LIMIT_REACHED"


class InputSchemaInvalid(DomainError):
    """A capability's inputSchema is not a valid JSON Schema: nothing could ever be validated against it."""

    code = "VALIDATION_ERROR"
