"""Policy aggregate, given/when/then on events: definition, validation of every rule kind, revisions as versions."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import pytest

from app.store.mapper import event_type, rebuild, to_data
from app.store.types import RecordedEvent
from domain.policies import rules as r
from domain.policies.aggregate import Policy
from domain.policies.commands import DefinePolicy, RevisePolicy
from domain.shared.errors import NotFound, ValidationFailed
from domain.shared.money import Money
from tests.factories import FIXED_AT

T0 = FIXED_AT
ACCOUNT = uuid.uuid4()
EVERY_KIND: list[r.Rule] = [
    r.SpendLimit(amount=Money(1000, "USD"), period="month"),
    r.PriceCeiling(max=Money(50, "USD"), capability="translate"),
    r.ProviderKeys(allow=(" OpenAI ", "openai", "anthropic")),
    r.Sellers(deny=(ACCOUNT, ACCOUNT)),
    r.Capabilities(deny=("translate",)),
    r.MinSellerReputation(success_rate=0.9, min_runs=20),
    r.RateLimit(tasks=10, per_seconds=60),
]


def define(**fields: Any) -> Policy:
    base: dict[str, Any] = {"policy_id": uuid.uuid4(), "account_id": ACCOUNT, "platform": False, "name": " caps ",
                            "description": "", "scope": r.AccountScope(), "mode": "enforce", "rules": EVERY_KIND}
    return Policy.define(DefinePolicy(**{**base, **fields}), T0)


def replay(policy: Policy) -> Policy:
    """Through the stored form (JSON), as the repository loads it."""
    events = policy.collect_events()
    recorded = [RecordedEvent(position=i, tx_id=1, event_id=uuid.uuid4(), stream_id=policy.id,
                              stream_type="policies:Policy", version=e.originator_version, type=event_type(e),
                              data=msgspec.json.decode(msgspec.json.encode(to_data(e))), metadata={},
                              recorded_at=T0) for i, e in enumerate(events)]
    loaded = rebuild(recorded)
    assert isinstance(loaded, Policy)
    return loaded


def test_defining_records_one_event_with_normalised_rules() -> None:
    p = define()
    assert p.name == "caps" and p.version == 1
    assert p.rules[2] == r.ProviderKeys(allow=("openai", "anthropic"))
    assert p.rules[3] == r.Sellers(deny=(ACCOUNT,))
    events = p.collect_events()
    assert [event_type(e) for e in events] == ["policies:Policy.Defined"]
    data = to_data(events[0])
    assert data["rules"][0] == {"type": "spend-limit", "amount": {"amount": 1000, "currency": "USD"},
                                "period": "month"}
    assert data["rules"][5] == {"type": "min-seller-reputation", "successRate": 0.9, "minRuns": 20}


def test_replay_reproduces_every_rule_and_version() -> None:
    p = define()
    p.revise(RevisePolicy(mode="shadow"), T0)
    p.revise(RevisePolicy(rules=[r.Capabilities(allow=("summarise",))], scope=r.MachinesScope(
        machine_ids=(ACCOUNT,))), T0)
    loaded = replay(p)
    assert loaded.version == 3 and loaded.mode == "shadow"
    assert loaded.rules == [r.Capabilities(allow=("summarise",))]
    assert loaded.at_version(1).rules == [*EVERY_KIND[:2], r.ProviderKeys(allow=("openai", "anthropic")),
                                          r.Sellers(deny=(ACCOUNT,)), *EVERY_KIND[4:]]
    assert loaded.at_version(1).mode == "enforce" and loaded.at_version(2).mode == "shadow"
    assert loaded.at_version(3).scope == r.MachinesScope(machine_ids=(ACCOUNT,))
    with pytest.raises(NotFound):
        loaded.at_version(4)


def test_a_revision_names_what_changed_and_a_no_op_records_nothing() -> None:
    p = define()
    p.collect_events()
    p.revise(RevisePolicy(name="caps", mode="enforce", rules=list(p.rules)), T0)
    assert p.collect_events() == []
    p.revise(RevisePolicy(name="renamed", mode="disabled"), T0)
    (event,) = p.collect_events()
    assert event_type(event) == "policies:Policy.Revised" and to_data(event)["changed"] == ["name", "mode"]


@pytest.mark.parametrize("rule", [
    r.SpendLimit(amount=Money(-1, "USD"), period="day"),
    r.PriceCeiling(max=Money(2**53, "USD")),
    r.PriceCeiling(max=Money(1, "USD"), capability="  "),
    r.ProviderKeys(),
    r.ProviderKeys(allow=("a",), deny=("b",)),
    r.ProviderKeys(deny=("not a key!",)),
    r.Sellers(allow=tuple(uuid.uuid4() for _ in range(101))),
    r.Capabilities(allow=(" ",)),
    r.MinSellerReputation(success_rate=1.5, min_runs=1),
    r.MinSellerReputation(success_rate=0.5, min_runs=-1),
    r.RateLimit(tasks=0, per_seconds=60),
    r.RateLimit(tasks=1, per_seconds=0),
])
def test_invalid_rules_are_refused(rule: r.Rule) -> None:
    with pytest.raises(ValidationFailed):
        define(rules=[rule])


@pytest.mark.parametrize("fields", [
    {"name": "  "}, {"mode": "sometimes"}, {"description": "x" * 2001},
    {"scope": r.MachinesScope(machine_ids=())}, {"scope": r.LabelsScope(labels={})},
    {"rules": [r.Capabilities(deny=("x",))] * 33},
])
def test_invalid_definitions_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationFailed):
        define(**fields)


def test_an_invalid_revision_records_nothing() -> None:
    p = define()
    p.collect_events()
    with pytest.raises(ValidationFailed):
        p.revise(RevisePolicy(mode="shadow", rules=[r.RateLimit(tasks=0, per_seconds=1)]), T0)
    assert p.collect_events() == [] and p.mode == "enforce"
