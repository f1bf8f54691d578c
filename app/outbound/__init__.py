"""Outbound HTTP: the one client every call to a seller or webhook receiver goes through (ARCHITECTURE §9).

    from app.outbound import OutboundError, shared_client

    try:
        answer = await shared_client().request(
            endpoint_url, idempotency_key=str(run_id), json=task_input, bearer_token=token,
            timeout_s=timeout_ms / 1000)
    except OutboundError as exc:
        record_failure(exc.error_class, exc.retryable, str(exc))  # ssrf-refused, connect, timeout, ...
    else:
        record_answer(answer.status, answer.body, answer.elapsed_ms)  # any status, 3xx included

Webhooks send exact bytes (`content=body, content_type="application/cloudevents+json",
headers={"MM-Signature": ...}`). Tests: `configure_shared_client(allow_private=..., resolver=...)`, and
`app.outbound.stub_seller.StubSeller` for a real seller on loopback.
"""

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
from app.outbound.shared import close_shared_client, configure_shared_client, shared_client

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
    "configure_shared_client",
    "shared_client",
    "system_resolver",
]
