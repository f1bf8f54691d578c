"""Every aggregate kind, imported here so their event topics resolve wherever events are replayed (`mm replay`
offline has no services to import them). tests/unit/test_aggregate_kinds.py fails when a new one is missing."""

from __future__ import annotations

from eventsourcing.domain import Aggregate

from domain.accounts.aggregate import Account
from domain.graph.aggregate import MachineGraph
from domain.machines.aggregate import Machine
from domain.market.ledger import SellerCredits, Wallet
from domain.market.order import Order
from domain.policies.aggregate import Policy
from domain.policies.budget import SpendBudget
from domain.policies.decision import PolicyDecision
from domain.policies.rate_window import RateWindow
from domain.runtime.agent import MachineAgent
from domain.runtime.endpoint import RuntimeEndpoint
from domain.tasks.aggregate import Task
from domain.webhooks.aggregate import WebhookEndpoint

AGGREGATES: tuple[type[Aggregate], ...] = (Account, Machine, RuntimeEndpoint, MachineAgent, MachineGraph, Task,
                                           Policy, PolicyDecision, SpendBudget, RateWindow, WebhookEndpoint, Wallet,
                                           SellerCredits, Order)
