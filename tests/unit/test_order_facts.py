"""What an orders service remembers of the orders it has seen: bounded, oldest dropped first."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any, cast

import pytest

from app.services import orders as orders_module
from app.services.orders import OrdersService
from domain.market.order import Order
from domain.shared.money import Money


def _order() -> Order:
    return cast(Order, SimpleNamespace(id=uuid.uuid4(), account_id=uuid.uuid4(), machine_id=uuid.uuid4(),
                                       seller_account_id=uuid.uuid4(), price=Money(100, "USD")))


def test_remembers_an_orders_facts_up_to_the_bound_dropping_the_oldest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(orders_module, "MAX_FACTS", 2)
    none: Any = None
    service = OrdersService(none, none, none, none, fee_bps=0, intent_ttl_s=60)
    first, second, third = _order(), _order(), _order()
    for order in (first, second, first, third):  # seeing an order again does not make it younger or a copy
        service._remember(order)
    assert service.facts_of(first.id) is None
    facts = service.facts_of(third.id)
    assert facts is not None and (facts.machine_id, facts.currency) == (third.machine_id, "USD")
    assert service.facts_of(second.id) is not None
    service.forget(second.id)
    assert service.facts_of(second.id) is None
