"""The webhook fan-out's `writes`: a batch needs its transaction only if it changes a subscription or one of its
accounts has an enabled one (else the runner moves the checkpoint alone)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from app.container import Container
from app.store.types import RecordedEvent
from projections.webhook_fanout import P, WebhookFanoutProjection


def _event(type_: str, account: uuid.UUID | None) -> RecordedEvent:
    return RecordedEvent(
        event_id=uuid.uuid4(), stream_id=uuid.uuid4(), stream_type="machines:Machine", version=1, type=type_,
        data={}, metadata={} if account is None else {"ownerAccountId": str(account)}, tx_id=1, position=1,
        recorded_at=datetime.now(UTC),
    )


async def test_writes_only_for_subscribed_accounts_or_subscription_changes(fresh_container: Container) -> None:
    fanout = WebhookFanoutProjection()
    subscribed, disabled, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with fresh_container.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO webhook_subscriptions (endpoint_id, account_id, types, enabled)"
            " VALUES ($1, $2, $3, true), ($4, $5, $3, false)",
            uuid.uuid4(), subscribed, ["*"], uuid.uuid4(), disabled)
        plain = "machines:Machine.Registered"
        assert not await fanout.writes(conn, [_event(plain, other), _event(plain, None)], {})
        assert not await fanout.writes(conn, [_event(plain, disabled)], {})  # a disabled one gets nothing
        assert await fanout.writes(conn, [_event(plain, other), _event(plain, subscribed)], {})
        assert await fanout.writes(conn, [_event(P + "Registered", None)], {})  # folds a subscription
