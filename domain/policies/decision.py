"""A recorded policy decision: a refusal (policy.denied) or a shadow policy's would-be refusal (policy.would-deny).

One short stream per decision, so recording one never contends with another command.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate

from domain.policies.values import DENY, Action, Decision, RuleResult


class PolicyDecision(Aggregate):
    TOPIC = "policies:PolicyDecision"

    class Created(Aggregate.Created):
        TOPIC = "policies:PolicyDecision.Created"  # required by eventsourcing once TOPIC is set; never triggered

    class Event(Aggregate.Event):
        TOPIC = "policies:PolicyDecision.Event"

    class Denied(Aggregate.Created):
        """Public name policy.denied: the command was refused; `denied_by` is the deny it names."""

        TOPIC = "policies:PolicyDecision.Denied"
        account_id: uuid.UUID
        machine_id: uuid.UUID
        action: str
        subject_id: uuid.UUID | None
        denied_by: RuleResult
        denials: list[RuleResult]
        command: Action | None = None  # what was judged (added later: older decisions have none)

    class WouldDeny(Aggregate.Created):
        """Public name policy.would-deny: only shadow policies objected; the command went ahead."""

        TOPIC = "policies:PolicyDecision.WouldDeny"
        account_id: uuid.UUID
        machine_id: uuid.UUID
        action: str
        subject_id: uuid.UUID | None
        denied_by: RuleResult
        denials: list[RuleResult]
        command: Action | None = None  # what was judged (added later: older decisions have none)

    def __init__(self, account_id: uuid.UUID, machine_id: uuid.UUID, action: str, subject_id: uuid.UUID | None,
                 denied_by: RuleResult, denials: list[RuleResult], command: Action | None = None) -> None:
        self.account_id, self.machine_id, self.action, self.subject_id = account_id, machine_id, action, subject_id
        self.denied_by, self.denials, self.command = denied_by, list(denials), command

    @classmethod
    def record(cls, decision: Decision, account_id: uuid.UUID, machine_id: uuid.UUID,
               subject_id: uuid.UUID | None, at: datetime, command: Action | None = None) -> PolicyDecision | None:
        """The decision as a fact worth keeping, with the command it judged (capability, seller, price, ...);
        None for an allow (nothing to record: the command's own event carries its id)."""
        if decision.denied_by is None:
            return None
        kind: Any = cls.Denied if decision.effect == DENY else cls.WouldDeny
        # Only the rules that objected in the decision's own mode: a refusal lists enforced denies.
        mode = decision.denied_by.mode
        denials = [x for x in decision.results if x.outcome == DENY and x.mode == mode]
        return cls._create(kind, id=decision.decision_id, timestamp=at, account_id=account_id, machine_id=machine_id,
                           action=decision.action, subject_id=subject_id, denied_by=decision.denied_by,
                           denials=denials, command=command)
