"""Webhook errors with the stable codes the API answers."""

from __future__ import annotations

from domain.shared.errors import NotFound


class WebhookEndpointNotFound(NotFound):
    pass
