"""Every aggregate under domain/ is listed in app.aggregates, so replay (and offline bundles) can read its events."""

from __future__ import annotations

import importlib
import pkgutil

from eventsourcing.domain import Aggregate

import domain
from app.aggregates import AGGREGATES


def test_every_domain_aggregate_is_listed() -> None:
    for module in pkgutil.walk_packages(domain.__path__, "domain."):
        importlib.import_module(module.name)
    found = set()
    pending = list(Aggregate.__subclasses__())
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        if cls.__module__.startswith("domain.") and getattr(cls, "TOPIC", None) and "." not in cls.__qualname__:
            found.add(cls)
    assert found and found <= set(AGGREGATES), sorted(c.__qualname__ for c in found - set(AGGREGATES))
