"""The webhook fan-out's `writes`: a batch needs its transaction only if it changes a subscription or one of its
accounts has an enabled one (else the runner moves the checkpoint alone)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from app.container import Container
from app.store.types import LogPosition, RecordedEvent
from projections.webhook_fanout import P, WebhookFanoutProjection


def _event(type_: str, account: uuid.UUID | None, position: int = 1) -> RecordedEvent:
    return RecordedEvent(
        event_id=uuid.uuid4(), stream_id=uuid.uuid4(), stream_type="machines:Machine", version=1, type=type_,
        data={}, metadata={} if account is None else {"ownerAccountId": str(account)}, tx_id=1, position=position,
        recorded_at=datetime.now(UTC),
    )


AT = LogPosition(1, 0)


async def test_writes_only_for_subscribed_accounts_or_subscription_changes(fresh_container: Container) -> None:
    fanout = WebhookFanoutProjection()
    subscribed, disabled, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with fresh_container.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO webhook_subscriptions (endpoint_id, account_id, types, enabled)"
            " VALUES ($1, $2, $3, true), ($4, $5, $3, false)",
            uuid.uuid4(), subscribed, ["*"], uuid.uuid4(), disabled)
        plain = "machines:Machine.Registered"
        assert not await fanout.writes(conn, [_event(plain, other), _event(plain, None)], {}, AT)
        assert not await fanout.writes(conn, [_event(plain, disabled)], {}, AT)  # a disabled one gets nothing
        assert await fanout.writes(conn, [_event(plain, other), _event(plain, subscribed)], {}, AT)
        assert await fanout.writes(conn, [_event(P + "Registered", None)], {}, AT)  # folds a subscription


async def test_the_subscribed_accounts_are_read_again_unless_the_batch_follows_the_last_one(
        fresh_container: Container) -> None:
    """What `writes` read holds for the next batch only when that batch starts where the last one (without a
    subscription change) ended: a batch starting anywhere else (another leader applied some, a restart) or
    following a subscription change reads the table again."""
    fanout, account = WebhookFanoutProjection(), uuid.uuid4()
    plain = "machines:Machine.Registered"
    statements: list[str] = []
    async with fresh_container.pool.acquire() as conn:
        # Called soon after each statement, on the loop; the test's own writes are not counted.
        conn.add_query_logger(lambda record: record.query.startswith("SELECT") and statements.append(record.query))
        first = [_event(plain, account, 1), _event(plain, account, 2)]
        assert not await fanout.writes(conn, first, {}, AT)
        await asyncio.sleep(0)
        assert len(statements) == 1
        # The next batch, from where that one ended: no statement.
        assert not await fanout.writes(conn, [_event(plain, account, 3)], {}, LogPosition(1, 2))
        await asyncio.sleep(0)
        assert len(statements) == 1
        # Meanwhile another leader applied a batch that subscribed the account: a batch starting after it reads.
        await conn.execute("INSERT INTO webhook_subscriptions (endpoint_id, account_id, types, enabled)"
                           " VALUES ($1, $2, $3, true)", uuid.uuid4(), account, ["*"])
        assert await fanout.writes(conn, [_event(plain, account, 9)], {}, LogPosition(1, 8))
        await asyncio.sleep(0)
        assert len(statements) == 2
        # A batch that changes a subscription: the one after it reads again, even from where it ended.
        assert await fanout.writes(conn, [_event(P + "Revised", None, 10)], {}, LogPosition(1, 9))
        await conn.execute("UPDATE webhook_subscriptions SET enabled = false")
        assert not await fanout.writes(conn, [_event(plain, account, 11)], {}, LogPosition(1, 10))
        await asyncio.sleep(0)
        assert len(statements) == 3
