"""Who and when for a command: time, actor and correlation enter here so decisions stay pure."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec


class CommandContext(msgspec.Struct, frozen=True, kw_only=True):
    at: datetime
    actor: str
    account_id: uuid.UUID | None = None
    request_id: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    # When set, event ids derive from it so a retried command cannot append twice. Over HTTP it is the request's
    # Idempotency-Key bound to the request itself (method, path, query and body; app.api.middleware): one key
    # reused for another request, once the first one's record has expired, derives other ids.
    idempotency_key: str | None = None
    is_admin: bool = False

    def metadata(self) -> dict[str, object]:
        return {
            "actor": self.actor,
            "accountId": str(self.account_id) if self.account_id else None,
            "requestId": self.request_id,
            "correlationId": self.correlation_id or self.request_id,
            "causationId": self.causation_id,
        }
