"""Policy errors with the stable codes the API answers."""

from __future__ import annotations

from domain.shared.errors import DomainError, NotFound


class PolicyNotFound(NotFound):
    pass


class PolicyDenied(DomainError):
    """A command refused by an enforced policy: the first deny names itself (policy, rule, reason)."""

    code = "POLICY_DENIED"
