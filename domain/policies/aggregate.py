"""The Policy aggregate: typed rules over a scope, every revision kept as a version (decide, then evolve)."""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.domain import Aggregate

from domain.policies import rules
from domain.policies.commands import DefinePolicy, RevisePolicy
from domain.policies.rules import Rule, Scope
from domain.policies.values import PolicyVersion
from domain.shared.errors import NotFound, ValidationFailed

_FIELDS = ("name", "description", "scope", "mode", "rules")
MAX_DESCRIPTION = 2000


class Policy(Aggregate):
    TOPIC = "policies:Policy"

    class Created(Aggregate.Created):
        TOPIC = "policies:Policy.Created"  # required by eventsourcing once TOPIC is set; never triggered

    class Event(Aggregate.Event):
        TOPIC = "policies:Policy.Event"

    class Defined(Aggregate.Created):
        """Public name policy.created."""

        TOPIC = "policies:Policy.Defined"
        account_id: uuid.UUID
        platform: bool
        name: str
        description: str
        scope: Scope
        mode: str
        rules: list[Rule]

        def apply(self, aggregate: Any) -> None:
            aggregate.history.append(aggregate.current_version(self.originator_version, self.timestamp))

    class Revised(Aggregate.Event):
        """Public name policy.updated. Carries the whole new definition, so each version stands on its own."""

        TOPIC = "policies:Policy.Revised"
        name: str
        description: str
        scope: Scope
        mode: str
        rules: list[Rule]
        changed: list[str]

        def apply(self, aggregate: Any) -> None:
            aggregate.name, aggregate.description, aggregate.scope = self.name, self.description, self.scope
            aggregate.mode, aggregate.rules = self.mode, list(self.rules)
            aggregate.history.append(aggregate.current_version(self.originator_version, self.timestamp))

    def __init__(self, account_id: uuid.UUID, platform: bool, name: str, description: str, scope: Scope,
                 mode: str, rules: list[Rule]) -> None:
        self.account_id, self.platform = account_id, platform
        self.name, self.description, self.scope, self.mode = name, description, scope, mode
        self.rules = list(rules)
        self.history: list[PolicyVersion] = []

    # --- decisions -------------------------------------------------------------------------------

    @classmethod
    def define(cls, cmd: DefinePolicy, at: Any) -> Policy:
        return cls._create(cls.Defined, id=cmd.policy_id, timestamp=at, account_id=cmd.account_id,
                           platform=cmd.platform, name=rules.check_name(cmd.name),
                           description=_description(cmd.description), scope=rules.check_scope(cmd.scope),
                           mode=rules.check_mode(cmd.mode), rules=rules.check_rules(cmd.rules))

    def revise(self, cmd: RevisePolicy, at: Any) -> None:
        """Records a new version only when something changes; a PATCH that changes nothing records nothing."""
        new = {
            "name": rules.check_name(cmd.name) if cmd.name is not None else self.name,
            "description": _description(cmd.description) if cmd.description is not None else self.description,
            "scope": rules.check_scope(cmd.scope) if cmd.scope is not None else self.scope,
            "mode": rules.check_mode(cmd.mode) if cmd.mode is not None else self.mode,
            "rules": rules.check_rules(cmd.rules) if cmd.rules is not None else list(self.rules),
        }
        changed = [f for f in _FIELDS if new[f] != getattr(self, f)]
        if changed:
            self.trigger_event(self.Revised, timestamp=at, changed=changed, **new)

    # --- queries ---------------------------------------------------------------------------------

    def current_version(self, version: int, at: Any) -> PolicyVersion:
        return PolicyVersion(policy_id=self.id, version=version, account_id=self.account_id,
                             platform=self.platform, name=self.name, description=self.description,
                             scope=self.scope, mode=self.mode, rules=list(self.rules), at=at)

    def at_version(self, version: int) -> PolicyVersion:
        """Any version this policy has had (1 is the definition); the store keeps them all."""
        if not 1 <= version <= len(self.history):
            raise NotFound(f"policy {self.id} has no version {version}")
        return self.history[version - 1]


def _description(text: str) -> str:
    if len(text) > MAX_DESCRIPTION:
        raise ValidationFailed(f"description holds at most {MAX_DESCRIPTION} characters", field="description")
    return text
