"""Realistic machine events built through the real aggregate and mapper, as the Repository would store them."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from app.store.mapper import event_type, to_data
from app.store.repository import stream_type_of
from app.store.types import NewEvent
from domain.machines.aggregate import Machine
from domain.machines.commands import (
    ChangeStatus,
    IssueIdentityChallenge,
    RegisterMachine,
    ReviseProfile,
    VerifyIdentity,
)

_SIGNATURE = base64.b64encode(bytes(64)).decode()


def public_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def metadata(account_id: uuid.UUID, request_id: str) -> dict[str, Any]:
    """What Repository.save records for an API command by a tenant key."""
    return {
        "actor": f"api-key:{uuid.uuid4()}",
        "accountId": str(account_id),
        "requestId": request_id,
        "correlationId": request_id,
        "ownerAccountId": str(account_id),
    }


def _new_events(machine: Machine, meta: dict[str, Any]) -> list[NewEvent]:
    return [
        NewEvent(
            event_id=uuid.uuid4(), stream_id=machine.id, stream_type=stream_type_of(Machine),
            version=e.originator_version, type=event_type(e), data=to_data(e), metadata=meta,
        )
        for e in machine.collect_events()
    ]


def registered(account_id: uuid.UUID, at: datetime, n: int = 0) -> NewEvent:
    """One Machine.Registered event for a brand-new stream."""
    cmd = RegisterMachine(
        machine_id=uuid.uuid4(), account_id=account_id, name=f"bench-machine-{n}",
        description="GPU worker in rack 7, 2x A100, spot pricing", public_key=public_key(),
        labels={"region": "eu-west", "gpu": "a100", "tier": "spot"},
    )
    [event] = _new_events(Machine.register(cmd, at), metadata(account_id, uuid.uuid4().hex))
    return event


def lifecycle(account_id: uuid.UUID, at: datetime, n: int) -> list[NewEvent]:
    """One machine's history: registered, challenged, verified, activated, then revised or suspended (5 events)."""
    meta = metadata(account_id, uuid.uuid4().hex)
    cmd = RegisterMachine(
        machine_id=uuid.uuid4(), account_id=account_id, name=f"bench-machine-{n}",
        description="GPU worker in rack 7, 2x A100, spot pricing", public_key=public_key(),
        labels={"region": "eu-west", "gpu": "a100", "tier": "spot"},
    )
    machine = Machine.register(cmd, at)
    challenge = IssueIdentityChallenge(
        challenge_id=uuid.uuid4(), nonce=base64.urlsafe_b64encode(os.urandom(24)).decode(),
        expires_at=at + timedelta(minutes=5),
    )
    machine.issue_challenge(challenge, at + timedelta(seconds=1))
    verify = VerifyIdentity(challenge_id=challenge.challenge_id, signature=_SIGNATURE)
    machine.verify_identity(verify, at + timedelta(seconds=2), lambda _k, _m, _s: True)
    machine.activate(at + timedelta(seconds=3))
    if n % 2:
        machine.suspend(ChangeStatus(reason="maintenance window"), at + timedelta(seconds=4))
    else:
        revise = ReviseProfile(name=f"bench-machine-{n}-renamed", labels={"region": "eu-west", "gpu": "h100"})
        machine.revise_profile(revise, at + timedelta(seconds=4))
    return _new_events(machine, meta)


def machine_histories(count_events: int, account_id: uuid.UUID) -> Iterator[list[NewEvent]]:
    """Enough 5-event machine histories to reach `count_events` (rounded up to whole machines)."""
    start = datetime.now(UTC) - timedelta(days=1)
    made = 0
    n = 0
    while made < count_events:
        events = lifecycle(account_id, start + timedelta(milliseconds=n), n)
        made += len(events)
        n += 1
        yield events
