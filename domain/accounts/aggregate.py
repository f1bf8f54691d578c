"""The Account aggregate: who owns machines, and the hashed API keys that act for it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate

from domain.accounts.errors import ApiKeyNotFound
from domain.shared.errors import InvalidTransition, ValidationFailed


class Account(Aggregate):
    TOPIC = "accounts:Account"

    class Created(Aggregate.Created):
        TOPIC = "accounts:Account.Created"  # required by eventsourcing once TOPIC is set; never triggered

    class Event(Aggregate.Event):
        TOPIC = "accounts:Account.Event"

    class Opened(Aggregate.Created):
        TOPIC = "accounts:Account.Opened"
        name: str
        is_admin: bool

    class ApiKeyIssued(Aggregate.Event):
        TOPIC = "accounts:Account.ApiKeyIssued"
        key_id: uuid.UUID
        key_hash: str
        prefix: str
        label: str

        def apply(self, aggregate: Any) -> None:
            aggregate.keys[self.key_id] = {
                "hash": self.key_hash, "prefix": self.prefix, "label": self.label, "revoked": False,
            }

    class ApiKeyRevoked(Aggregate.Event):
        TOPIC = "accounts:Account.ApiKeyRevoked"
        key_id: uuid.UUID

        def apply(self, aggregate: Any) -> None:
            aggregate.keys[self.key_id]["revoked"] = True

    def __init__(self, name: str, is_admin: bool) -> None:
        self.name = name
        self.is_admin = is_admin
        self.keys: dict[uuid.UUID, dict[str, Any]] = {}

    @classmethod
    def open(cls, account_id: uuid.UUID, name: str, is_admin: bool, at: datetime) -> Account:
        if not name.strip():
            raise ValidationFailed("name must not be blank", field="name")
        return cls._create(cls.Opened, id=account_id, timestamp=at, name=name, is_admin=is_admin)

    def issue_key(self, key_id: uuid.UUID, key_hash: str, prefix: str, label: str, at: datetime) -> None:
        if key_id in self.keys or any(k["hash"] == key_hash for k in self.keys.values()):
            return  # the same key again is a retry (or a restart re-registering it), never a second record
        self.trigger_event(
            self.ApiKeyIssued, timestamp=at, key_id=key_id, key_hash=key_hash, prefix=prefix, label=label
        )

    def revoke_key(self, key_id: uuid.UUID, at: datetime) -> None:
        key = self.keys.get(key_id)
        if key is None:
            raise ApiKeyNotFound(f"api key {key_id} not found")
        if key["revoked"]:
            raise InvalidTransition("this api key is already revoked")
        self.trigger_event(self.ApiKeyRevoked, timestamp=at, key_id=key_id)
