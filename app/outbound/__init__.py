"""Outbound HTTP: the one client every call to a seller or webhook receiver goes through (ARCHITECTURE §9)."""

from app.outbound.client import DEFAULT_MAX_BODY_BYTES, OutboundClient, OutboundResponse
from app.outbound.errors import (
    OutboundConnectError,
    OutboundError,
    OutboundProtocolError,
    OutboundRefused,
    OutboundRequestInvalid,
    OutboundTimeout,
    ResponseTooLarge,
)
from app.outbound.guard import Resolver, system_resolver
from app.outbound.shared import close_shared_client, shared_client

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "OutboundClient",
    "OutboundConnectError",
    "OutboundError",
    "OutboundProtocolError",
    "OutboundRefused",
    "OutboundRequestInvalid",
    "OutboundResponse",
    "OutboundTimeout",
    "Resolver",
    "ResponseTooLarge",
    "close_shared_client",
    "shared_client",
    "system_resolver",
]
