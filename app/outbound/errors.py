"""Typed failures of an outbound call, each with the stable `error_class` a run or delivery records."""

from __future__ import annotations

from typing import ClassVar


class OutboundError(Exception):
    """Base of every outbound failure. Messages name host and port at most: never a token, body or query."""

    error_class: ClassVar[str] = "outbound"
    # Whether trying again (later, or the next fallback) can help; the executor and webhooks decide with it.
    retryable: ClassVar[bool] = False


class OutboundRequestInvalid(OutboundError):
    """The call itself cannot be sent (a header value with control characters, a body and json at once)."""

    error_class = "invalid-request"


class OutboundRefused(OutboundError):
    """The SSRF guard refused the target: nothing was sent, and no address was connected to."""

    error_class = "ssrf-refused"

    def __init__(self, reason: str) -> None:
        super().__init__(f"outbound call refused: {reason}")
        self.reason = reason


class OutboundConnectError(OutboundError):
    """No connection could be made (refused, unreachable, TLS handshake or certificate failure, DNS failure)."""

    error_class = "connect"
    retryable = True


class OutboundTimeout(OutboundError):
    """The call's time budget ran out (connecting, waiting for a pooled connection, sending or reading)."""

    error_class = "timeout"
    retryable = True


class OutboundProtocolError(OutboundError):
    """Connected, but the exchange broke (peer closed mid-response, malformed HTTP)."""

    error_class = "protocol"
    retryable = True


class ResponseTooLarge(OutboundError):
    """The response body passed the cap; reading stopped there, so memory stayed bounded."""

    error_class = "response-too-large"

    def __init__(self, limit: int, status: int) -> None:
        super().__init__(f"response body exceeds {limit} bytes (status {status})")
        self.limit, self.status = limit, status
