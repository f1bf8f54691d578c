"""The projections this service runs, by name."""

from __future__ import annotations

from projections.accounts import AccountsProjection
from projections.audit import AuditProjection
from projections.base import Projection
from projections.catalogue import CatalogueProjection
from projections.graph import GraphProjection
from projections.machines import MachinesProjection
from projections.relay import RelayProjection
from projections.runtime import RuntimeProjection
from projections.seller_stats import SellerStatsProjection
from projections.tasks import TasksProjection


def read_models() -> list[Projection]:
    """Projections that only write rows (the relay, which enqueues work, is added by the worker side)."""
    return [AccountsProjection(), MachinesProjection(), RuntimeProjection(), GraphProjection(), AuditProjection(),
            CatalogueProjection(), SellerStatsProjection(), TasksProjection()]


def by_name(projections: list[Projection]) -> dict[str, Projection]:
    return {p.name: p for p in projections}


def projection_names() -> list[str]:
    """Every projection the projector runs, the relay included (status, readiness, metrics list them all)."""
    return sorted([*(p.name for p in read_models()), RelayProjection.name])
