"""Domain errors: each carries a stable machine code that the API maps to a problem response."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    code = "DOMAIN_ERROR"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class ValidationFailed(DomainError):
    code = "VALIDATION_ERROR"


class NotFound(DomainError):
    code = "NOT_FOUND"


class ConcurrencyConflict(DomainError):
    """The stream moved on since it was read (optimistic concurrency)."""

    code = "CONCURRENCY_CONFLICT"


class PreconditionFailed(DomainError):
    """If-Match named a version that is no longer current."""

    code = "PRECONDITION_FAILED"


class InvalidTransition(DomainError):
    code = "INVALID_STATE_TRANSITION"


class PermissionDenied(DomainError):
    code = "PERMISSION_DENIED"
