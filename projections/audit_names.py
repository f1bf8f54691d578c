"""Public audit type names for stored event topics, and which data keys never leave the server."""

from __future__ import annotations

import functools
import re

PUBLIC_NAMES: dict[str, str] = {
    "accounts:Account.Opened": "account.opened",
    "accounts:Account.ApiKeyIssued": "api-key.issued",
    "accounts:Account.ApiKeyRevoked": "api-key.revoked",
    "machines:Machine.Registered": "machine.registered",
    "machines:Machine.IdentityChallengeIssued": "machine.identity-challenge-issued",
    "machines:Machine.IdentityChallengeExpired": "machine.identity-challenge-expired",
    "machines:Machine.IdentityVerificationFailed": "machine.identity-verification-failed",
    "machines:Machine.IdentityVerified": "machine.identity-verified",
    "machines:Machine.ProfileRevised": "machine.profile-revised",
    "machines:Machine.Activated": "machine.activated",
    "machines:Machine.Suspended": "machine.suspended",
    "machines:Machine.Reactivated": "machine.reactivated",
    "machines:Machine.Retired": "machine.retired",
    # The first upsert opens the endpoint's stream; to readers of the feed it is an upsert like any other.
    "runtime:RuntimeEndpoint.Opened": "runtime-endpoint.upserted",
    "runtime:RuntimeEndpoint.Upserted": "runtime-endpoint.upserted",
    "runtime:RuntimeEndpoint.Deleted": "runtime-endpoint.deleted",
    "runtime:RuntimeEndpoint.Expired": "runtime-endpoint.expired",
    "runtime:MachineAgent.Enrolled": "machine-agent.enrolled",
    "runtime:MachineAgent.HeartbeatReceived": "machine-agent.heartbeat",
    "runtime:MachineAgent.Revoked": "machine-agent.revoked",
    "graph:MachineGraph.Opened": "graph.opened",
    "graph:MachineGraph.NodeCreated": "graph.node.created",
    "graph:MachineGraph.NodeRevised": "graph.node.updated",
    "graph:MachineGraph.NodeDeleted": "graph.node.deleted",
    "graph:MachineGraph.EdgeCreated": "graph.edge.created",
    "graph:MachineGraph.EdgeRevised": "graph.edge.updated",
    "graph:MachineGraph.EdgeDeleted": "graph.edge.deleted",
    "tasks:Task.Submitted": "task.created",
    "tasks:Task.Discovered": "task.discovered",
    "tasks:Task.Resolved": "task.resolved",
    "tasks:Task.ExecutionRequested": "task.execution-requested",
    "tasks:Task.RunStarted": "task.run-started",
    "tasks:Task.RunFinished": "task.run-finished",
    "tasks:Task.Succeeded": "task.succeeded",
    "tasks:Task.Failed": "task.failed",
    "tasks:Task.Cancelled": "task.cancelled",
    "policies:Policy.Defined": "policy.created",
    "policies:Policy.Revised": "policy.updated",
    "policies:PolicyDecision.Denied": "policy.denied",
    "policies:PolicyDecision.WouldDeny": "policy.would-deny",
    "policies:SpendBudget.Opened": "policy.budget-opened",
    "policies:SpendBudget.Reserved": "policy.budget-reserved",
    "policies:SpendBudget.Released": "policy.budget-released",
    "policies:RateWindow.Opened": "policy.rate-window-opened",
    "policies:RateWindow.Counted": "policy.rate-counted",
    "webhooks:WebhookEndpoint.Registered": "webhook-endpoint.created",
    "webhooks:WebhookEndpoint.Revised": "webhook-endpoint.updated",
    "webhooks:WebhookEndpoint.SecretRotated": "webhook-endpoint.secret-rotated",
    "webhooks:WebhookEndpoint.DisabledForFailures": "webhook-endpoint.disabled",
    "webhooks:WebhookEndpoint.DeliveryRetryRequested": "webhook-endpoint.delivery-retry-requested",
    "webhooks:WebhookEndpoint.Deleted": "webhook-endpoint.deleted",
    # Wallet movements keep ledger.* names; the market.payment.* names belong to the Order events beside them.
    "market:Wallet.Opened": "ledger.wallet-opened",
    "market:Wallet.Deposited": "ledger.deposited",
    "market:Wallet.Withdrawn": "ledger.withdrawn",
    "market:Wallet.EscrowHeld": "ledger.escrow-held",
    "market:Wallet.EscrowReleased": "ledger.escrow-released",
    "market:Wallet.EscrowRefunded": "ledger.escrow-refunded",
    "market:Wallet.CreditsCollected": "ledger.credits-collected",
    "market:SellerCredits.Opened": "ledger.seller-credits-opened",
    "market:SellerCredits.Credited": "ledger.seller-credited",
    "market:Order.Placed": "market.order.created",
    "market:Order.PaymentIntentCreated": "market.payment.intent-created",
    "market:Order.ProofRecorded": "market.payment.proof-recorded",
    "market:Order.EscrowHeld": "market.payment.escrow-held",
    "market:Order.PaymentFailed": "market.payment.failed",
    "market:Order.ExecutionRequested": "market.order.execution-requested",
    "market:Order.Executed": "market.order.executed",
    "market:Order.Confirmed": "market.order.confirmed",
    "market:Order.Disputed": "market.order.disputed",
    "market:Order.DisputeResolved": "market.dispute.resolved",
    "market:Order.Released": "market.payment.released",
    "market:Order.Refunded": "market.payment.refunded",
    "market:Order.Cancelled": "market.order.cancelled",
}

# Secrets and their digests are kept out of the feed (it is exported to operators and tenants).
REDACTED_KEYS = frozenset({"key_hash", "token_hash", "auth_token", "secret", "nonce",
                           "sealed_secret", "previous_sealed_secret"})

# Envelope fields that are columns of their own, not part of the public data (and the stored class version, a
# storage detail: the public data of an upcast event is its current shape).
ENVELOPE_KEYS = frozenset({"timestamp", "originator_topic", "_classVersion"})

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def public_name(topic: str) -> str:
    """The registered name, or a derived one so an unmapped topic never stalls the feed."""
    if topic in PUBLIC_NAMES:
        return PUBLIC_NAMES[topic]
    _context, _, rest = topic.partition(":")
    entity, _, kind = rest.rpartition(".")
    return f"{kebab(entity)}.{kebab(kind)}"


@functools.lru_cache(maxsize=4096)  # stream types and event kinds: a small set
def kebab(name: str) -> str:
    return _CAMEL.sub("-", name).lower()


@functools.lru_cache(maxsize=4096)  # the events' field names: a small set, met on every record
def camel(key: str) -> str:
    head, *tail = key.split("_")
    return head + "".join(part.title() for part in tail)
