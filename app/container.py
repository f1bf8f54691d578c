"""Composition root: builds the pool, store, repository and services once per process."""

from __future__ import annotations

import asyncpg

from app.audit_sse import sse_frame
from app.audit_tail import AuditTail
from app.db import create_pool
from app.sealing import Sealer
from app.services.accounts import AccountsService
from app.services.agents import AgentsService
from app.services.graph import GraphService
from app.services.ledger import LedgerService
from app.services.machines import MachinesService
from app.services.order_money import Escrow
from app.services.order_settlement import OrderSettlement
from app.services.orders import OrdersService
from app.services.policies import PoliciesService
from app.services.policy_guard import PolicyGuard
from app.services.policy_sources import PolicyRows, SellerRows, UsageRows
from app.services.runtime import RuntimeService
from app.services.task_sources import CatalogueOffers, SellerReputation
from app.services.task_waiter import OutcomeWaiter
from app.services.tasks import TasksService
from app.services.webhooks import WebhooksService
from app.settings import Settings
from app.store.credential_cache import CredentialCache
from app.store.credentials import ApiKeyCredentials
from app.store.event_store import EventStore
from app.store.notifier import Notifier
from app.store.repository import Repository
from projections.registry import projection_names


class Container:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, notify: bool = True) -> None:
        self.settings = settings
        self.pool = pool
        self.notifier = Notifier(pool) if notify else None
        # Without a DSN to LISTEN on (a container built on a bare pool) every lookup reads the table.
        self.credentials = CredentialCache(pool, None, settings.credential_cache_ttl_s)
        inline = (ApiKeyCredentials(on_revoked=self.credentials.invalidate),)
        self.store = EventStore(pool, self.notifier, inline)
        self.repo = Repository(self.store, settings.aggregate_cache_entries)
        self.machines = MachinesService(self.repo, settings.challenge_ttl_seconds)
        self.accounts = AccountsService(self.repo)
        self.sealer = Sealer(settings.secret_key)
        self.runtime = RuntimeService(self.repo, self.machines, self.sealer)
        self.agents = AgentsService(self.repo, self.machines, self.runtime)
        self.graph = GraphService(self.repo, self.machines)
        self.guard = PolicyGuard(self.repo, PolicyRows(pool), UsageRows(pool))
        self.tasks = TasksService(self.repo, self.machines, CatalogueOffers(pool), SellerReputation(pool),
                                  self.guard)
        # Execute requests wait on task outcomes; the LISTEN connection opens once a DSN is known (open()).
        self.outcomes = OutcomeWaiter(pool, None)
        self.policies = PoliciesService(self.repo, self.machines, PolicyRows(pool), SellerRows(pool), self.guard)
        self.webhooks = WebhooksService(self.repo, self.sealer)
        self.ledger = LedgerService(self.repo)
        self.orders = OrdersService(self.repo, pool, self.tasks, Escrow(self.ledger), fee_bps=settings.platform_fee_bps,
                                    intent_ttl_s=settings.payment_intent_ttl_s)
        self.order_settlement = OrderSettlement(self.orders)
        self.projection_names = projection_names()
        # Started by the first SSE subscriber; without a DSN to LISTEN on it polls.
        self.audit_tail = AuditTail(pool, settings.projection_poll_interval_s, sse_frame)

    @classmethod
    async def open(cls, settings: Settings, dsn: str, *, stateless_sessions: bool = False,
                   min_size: int | None = None, max_size: int | None = None) -> Container:
        pool = await create_pool(dsn, settings, stateless_sessions=stateless_sessions, min_size=min_size,
                                 max_size=max_size)
        container = cls(settings, pool)
        container.credentials.dsn = dsn
        container.outcomes.dsn = dsn
        container.audit_tail.dsn = dsn
        if container.notifier is not None:
            container.notifier.start()
        return container

    async def close(self) -> None:
        await self.audit_tail.stop()
        await self.credentials.stop()
        await self.outcomes.stop()
        if self.notifier is not None:
            await self.notifier.stop()
        await self.store.close()
        await self.pool.close()
