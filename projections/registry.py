"""The projections this service runs, by name."""

from __future__ import annotations

from app.settings import Settings
from projections.accounts import AccountsProjection
from projections.audit import AuditProjection
from projections.audit_chain import Signer
from projections.base import Projection
from projections.catalogue import CatalogueProjection
from projections.graph import GraphProjection
from projections.ledger import LedgerProjection
from projections.machines import MachinesProjection
from projections.orders import OrdersProjection
from projections.policies import PoliciesProjection
from projections.relay import RelayProjection
from projections.runtime import RuntimeProjection
from projections.seller_stats import SellerStatsProjection
from projections.tasks import TasksProjection
from projections.webhook_fanout import WebhookFanoutProjection
from projections.webhooks import WebhooksProjection


def read_models(settings: Settings | None = None) -> list[Projection]:
    """Projections that only write rows (the relay, which enqueues work, is added by the worker side).

    The audit projection signs checkpoints only with `settings` that hold MM_AUDIT_SIGNING_KEY."""
    return [AccountsProjection(), MachinesProjection(), RuntimeProjection(), GraphProjection(),
            audit_projection(settings), CatalogueProjection(), SellerStatsProjection(), TasksProjection(),
            PoliciesProjection(), WebhooksProjection(), LedgerProjection(), OrdersProjection()]


def audit_projection(settings: Settings | None) -> AuditProjection:
    if settings is None:
        return AuditProjection()
    signer = Signer(settings.audit_signing_key) if settings.audit_signing_key else None
    return AuditProjection(signer, settings.audit_checkpoint_every, settings.audit_checkpoint_interval_s)


def by_name(projections: list[Projection]) -> dict[str, Projection]:
    return {p.name: p for p in projections}


def projection_names() -> list[str]:
    """Every projection the projector runs, the relay included (status, readiness, metrics list them all)."""
    return sorted([*(p.name for p in read_models()), RelayProjection.name, WebhookFanoutProjection.name])
