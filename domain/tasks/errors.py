"""Task errors with the stable codes the API answers."""

from __future__ import annotations

from domain.shared.errors import DomainError, NotFound


class TaskNotFound(NotFound):
    pass


class NoRoute(DomainError):
    """Resolve found no candidate left to route to (none discovered, or all cooling down / filtered)."""

    code = "NO_ROUTE"


class RouteRequired(DomainError):
    code = "ROUTE_REQUIRED"


class TaskNotCancellable(DomainError):
    code = "TASK_NOT_CANCELLABLE"
