"""Pure validation for graph fields: types, statuses, labels, free-form data and capability data."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from domain.runtime.rules import PROVIDER_KEY
from domain.shared.documents import check_depth
from domain.shared.errors import ValidationFailed
from domain.shared.money import Money

CAPABILITY = "capability"
NODE_TYPES = (CAPABILITY, "resource", "tool", "model", "dataset", "service", "other")
NODE_STATUSES = ("draft", "active", "blocked", "degraded")
SLUG = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")

MAX_LABEL = 200
MAX_NODES, MAX_EDGES = 500, 2000
MAX_DATA_KEYS, MAX_KEY_LENGTH = 64, 128
# Edges carry little (a weight, a note); their smaller budget keeps a full graph's state in single-digit MiB.
MAX_NODE_DATA_BYTES, MAX_EDGE_DATA_BYTES = 16 * 1024, 4 * 1024
MAX_NAME = 200
MAX_AMOUNT = 2**53 - 1  # the largest integer every JSON client reads exactly

_encode = msgspec.json.Encoder().encode


def check_label(label: str) -> None:
    if not label.strip():
        raise ValidationFailed("label must not be blank", field="label")
    if len(label) > MAX_LABEL:
        raise ValidationFailed(f"label is over {MAX_LABEL} characters", field="label")


def check_node_type(node_type: str) -> None:
    if node_type not in NODE_TYPES:
        raise ValidationFailed(f"type must be one of {', '.join(NODE_TYPES)}", field="type")


def check_status(status: str) -> None:
    if status not in NODE_STATUSES:
        raise ValidationFailed(f"status must be one of {', '.join(NODE_STATUSES)}", field="status")


def check_edge_type(edge_type: str) -> None:
    if not SLUG.match(edge_type):
        raise ValidationFailed(f"edge type must be a lower-case slug matching {SLUG.pattern}", field="type")


def merge(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Shallow merge: a patch key replaces the whole top-level value; a None value removes the key."""
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def check_data(data: dict[str, Any], max_bytes: int) -> None:
    """Bounds keep one graph's aggregate small enough to load on every command."""
    if len(data) > MAX_DATA_KEYS:
        raise ValidationFailed(f"data has more than {MAX_DATA_KEYS} keys", field="data")
    if any(len(k) > MAX_KEY_LENGTH for k in data):
        raise ValidationFailed(f"data keys must be at most {MAX_KEY_LENGTH} characters", field="data")
    check_depth(data, "data")
    if len(_encode(data)) > max_bytes:
        raise ValidationFailed(f"data is over {max_bytes} bytes once encoded as JSON", field="data")


def node_data(node_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """The data a node of this type stores: bounded, and for a capability validated and normalised."""
    check_data(data, MAX_NODE_DATA_BYTES)
    return capability_data(data) if node_type == CAPABILITY else data


def capability_data(data: dict[str, Any]) -> dict[str, Any]:
    """A capability is what a later catalogue lists, so its name, price and provider must be usable."""
    name = data.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise ValidationFailed(f"capability data.name must be a non-blank string of at most {MAX_NAME} characters",
                               field="data.name")
    price = _price(data.get("price"))
    provider = data.get("providerKey")
    # The runtime context's own pattern and normalisation, so a capability names the endpoint serving it.
    provider = provider.strip().lower() if isinstance(provider, str) else None
    if provider is None or not PROVIDER_KEY.match(provider):
        raise ValidationFailed(f"capability data.providerKey must be a slug matching {PROVIDER_KEY.pattern}",
                               field="data.providerKey")
    schema = data.get("inputSchema", {})
    if not isinstance(schema, dict):
        raise ValidationFailed("capability data.inputSchema must be a JSON object", field="data.inputSchema")
    return {**data, "price": {"amount": price.amount, "currency": price.currency},
            "providerKey": provider, "inputSchema": schema}


def _price(raw: object) -> Money:
    detail = 'capability data.price must be money: {"amount": <integer minor units >= 0>, "currency": "USD"}'
    if not isinstance(raw, dict) or set(raw) != {"amount", "currency"} or not isinstance(raw["currency"], str):
        raise ValidationFailed(detail, field="data.price")
    try:
        price = Money(raw["amount"], raw["currency"])
    except ValueError as exc:
        raise ValidationFailed(f"{detail}: {exc}", field="data.price") from None
    if not 0 <= price.amount <= MAX_AMOUNT:
        raise ValidationFailed(f"{detail}: amount must be between 0 and {MAX_AMOUNT}", field="data.price")
    return price
