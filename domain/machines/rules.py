"""Pure validation for machine fields: public keys, names, labels."""

from __future__ import annotations

import base64
import binascii
import re

from domain.shared.errors import ValidationFailed

_LABEL_KEY = re.compile(r"^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?$")
MAX_LABELS = 32


def decode_public_key(value: str) -> bytes:
    """An Ed25519 public key is exactly 32 raw bytes, sent as standard base64."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationFailed("publicKey must be base64", field="publicKey") from None
    if len(raw) != 32:
        raise ValidationFailed("publicKey must be a 32-byte Ed25519 key", field="publicKey")
    return raw


def check_labels(labels: dict[str, str]) -> None:
    if len(labels) > MAX_LABELS:
        raise ValidationFailed(f"at most {MAX_LABELS} labels", field="labels")
    for key, value in labels.items():
        if not _LABEL_KEY.match(key):
            raise ValidationFailed(f"label key {key!r} must match {_LABEL_KEY.pattern}", field="labels")
        if len(value) > 256:
            raise ValidationFailed(f"label {key!r} value is over 256 characters", field="labels")


MAX_NAME, MAX_DESCRIPTION = 200, 2000


def check_name(name: str) -> None:
    if not name.strip():
        raise ValidationFailed("name must not be blank", field="name")
    if len(name) > MAX_NAME:
        raise ValidationFailed(f"name is over {MAX_NAME} characters", field="name")


def check_description(description: str) -> None:
    if len(description) > MAX_DESCRIPTION:
        raise ValidationFailed(f"description is over {MAX_DESCRIPTION} characters", field="description")


def decode_signature(value: str) -> bytes:
    """An Ed25519 signature is 64 raw bytes, sent as standard base64."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationFailed("signature must be base64", field="signature") from None
    if len(raw) != 64:
        raise ValidationFailed("signature must be 64 bytes (Ed25519)", field="signature")
    return raw
