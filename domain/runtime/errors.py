"""Runtime errors: agent authentication and policy refusals, with the codes the seed API used."""

from __future__ import annotations

from domain.shared.errors import DomainError, NotFound


class AgentAuthRequired(DomainError):
    """No agent token was presented at all."""

    code = "AGENT_AUTH_REQUIRED"


class AgentAuthInvalid(DomainError):
    """A token was presented but it is malformed or does not match the agent's."""

    code = "AGENT_AUTH_INVALID"


class AgentPairingInactive(DomainError):
    """The token is right but the agent was revoked: it may no longer report endpoints."""

    code = "AGENT_PAIRING_INACTIVE"


class AgentPolicyDenied(DomainError):
    """The agent reported a provider key outside its allowedProviderKeys."""

    code = "AGENT_POLICY_DENIED"


class EndpointNotFound(NotFound):
    pass


class AgentNotFound(NotFound):
    pass
