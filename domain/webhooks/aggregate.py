"""The WebhookEndpoint aggregate: where an account wants its audit events pushed, and the secret that signs them."""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.domain import Aggregate

from domain.webhooks import rules
from domain.webhooks.commands import RegisterWebhookEndpoint, ReviseWebhookEndpoint, RotateWebhookSecret
from domain.webhooks.errors import WebhookEndpointNotFound

_FIELDS = ("url", "types", "description", "enabled")


class WebhookEndpoint(Aggregate):
    TOPIC = "webhooks:WebhookEndpoint"

    class Created(Aggregate.Created):
        TOPIC = "webhooks:WebhookEndpoint.Created"  # required by eventsourcing once TOPIC is set; never triggered

    class Event(Aggregate.Event):
        TOPIC = "webhooks:WebhookEndpoint.Event"

    class Registered(Aggregate.Created):
        """Public name webhook-endpoint.created. The secret is sealed (AES-GCM) and redacted from the feed."""

        TOPIC = "webhooks:WebhookEndpoint.Registered"
        account_id: uuid.UUID
        url: str
        types: list[str]
        description: str
        enabled: bool
        sealed_secret: str

    class Revised(Aggregate.Event):
        """Public name webhook-endpoint.updated; carries the whole new definition."""

        TOPIC = "webhooks:WebhookEndpoint.Revised"
        url: str
        types: list[str]
        description: str
        enabled: bool
        changed: list[str]

        def apply(self, aggregate: Any) -> None:
            aggregate.url, aggregate.types = self.url, list(self.types)
            aggregate.description, aggregate.enabled = self.description, self.enabled

    class SecretRotated(Aggregate.Event):
        """Public name webhook-endpoint.secret-rotated; the previous secret still signs until the given time."""

        TOPIC = "webhooks:WebhookEndpoint.SecretRotated"
        sealed_secret: str
        previous_sealed_secret: str
        previous_valid_until: str

        def apply(self, aggregate: Any) -> None:
            aggregate.previous_sealed_secret = self.previous_sealed_secret
            aggregate.previous_valid_until = self.previous_valid_until
            aggregate.sealed_secret = self.sealed_secret

    class DisabledForFailures(Aggregate.Event):
        """Public name webhook-endpoint.disabled: deliveries kept failing for longer than the retry span."""

        TOPIC = "webhooks:WebhookEndpoint.DisabledForFailures"
        reason: str

        def apply(self, aggregate: Any) -> None:
            aggregate.enabled = False

    class DeliveryRetryRequested(Aggregate.Event):
        """Public name webhook-endpoint.delivery-retry-requested: a client asked for one delivery again now."""

        TOPIC = "webhooks:WebhookEndpoint.DeliveryRetryRequested"
        delivery_id: uuid.UUID

    class Deleted(Aggregate.Event):
        """Public name webhook-endpoint.deleted."""

        TOPIC = "webhooks:WebhookEndpoint.Deleted"

        def apply(self, aggregate: Any) -> None:
            aggregate.deleted = True

    def __init__(self, account_id: uuid.UUID, url: str, types: list[str], description: str, enabled: bool,
                 sealed_secret: str) -> None:
        self.account_id, self.url, self.types = account_id, url, list(types)
        self.description, self.enabled, self.sealed_secret = description, enabled, sealed_secret
        self.previous_sealed_secret: str | None = None
        self.previous_valid_until: str | None = None
        self.deleted = False

    # --- decisions -------------------------------------------------------------------------------

    @classmethod
    def register(cls, cmd: RegisterWebhookEndpoint, at: Any) -> WebhookEndpoint:
        return cls._create(cls.Registered, id=cmd.endpoint_id, timestamp=at, account_id=cmd.account_id,
                           url=rules.check_url(cmd.url), types=rules.check_types(cmd.types),
                           description=rules.check_description(cmd.description), enabled=cmd.enabled,
                           sealed_secret=cmd.sealed_secret)

    def revise(self, cmd: ReviseWebhookEndpoint, at: Any) -> None:
        """Records an event only when something changes."""
        self._live()
        new: dict[str, Any] = {
            "url": rules.check_url(cmd.url) if cmd.url is not None else self.url,
            "types": rules.check_types(cmd.types) if cmd.types is not None else list(self.types),
            "description": rules.check_description(cmd.description) if cmd.description is not None
            else self.description,
            "enabled": cmd.enabled if cmd.enabled is not None else self.enabled,
        }
        changed = [f for f in _FIELDS if new[f] != getattr(self, f)]
        if changed:
            self.trigger_event(self.Revised, timestamp=at, changed=changed, **new)

    def rotate_secret(self, cmd: RotateWebhookSecret, at: Any) -> None:
        self._live()
        self.trigger_event(self.SecretRotated, timestamp=at, sealed_secret=cmd.sealed_secret,
                           previous_sealed_secret=self.sealed_secret, previous_valid_until=cmd.previous_valid_until)

    def disable_for_failures(self, reason: str, at: Any) -> None:
        """A no-op on an endpoint already disabled or deleted (the failing delivery may race a client)."""
        if self.enabled and not self.deleted:
            self.trigger_event(self.DisabledForFailures, timestamp=at, reason=reason)

    def request_delivery_retry(self, delivery_id: uuid.UUID, at: Any) -> None:
        """The delivery's existence and state are the work list's (checked by the service); this records intent."""
        self._live()
        self.trigger_event(self.DeliveryRetryRequested, timestamp=at, delivery_id=delivery_id)

    def delete(self, at: Any) -> None:
        self._live()
        self.trigger_event(self.Deleted, timestamp=at)

    def _live(self) -> None:
        if self.deleted:
            raise WebhookEndpointNotFound(f"webhook endpoint {self.id} not found")


