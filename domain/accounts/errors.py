"""Account and API-key errors."""

from __future__ import annotations

from domain.shared.errors import DomainError


class ApiKeyNotFound(DomainError):
    code = "NOT_FOUND"
