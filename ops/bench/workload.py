"""Realistic machine and runtime-endpoint events built through the real aggregates and mapper, as the Repository
would store them."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from eventsourcing.domain import Aggregate

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
from domain.runtime.commands import AGENT, UpsertEndpoint
from domain.runtime.endpoint import RuntimeEndpoint

_SIGNATURE = base64.b64encode(bytes(64)).decode()


def public_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def metadata(account_id: uuid.UUID, request_id: str, actor: str | None = None) -> dict[str, Any]:
    """What Repository.save records for an API command by a tenant key (or by `actor`)."""
    return {
        "actor": actor or f"api-key:{uuid.uuid4()}",
        "accountId": str(account_id),
        "requestId": request_id,
        "correlationId": request_id,
        "ownerAccountId": str(account_id),
    }


def _new_events(aggregate: Aggregate, meta: dict[str, Any]) -> list[NewEvent]:
    return [
        NewEvent(
            event_id=uuid.uuid4(), stream_id=aggregate.id, stream_type=stream_type_of(type(aggregate)),
            version=e.originator_version, type=event_type(e), data=to_data(e), metadata=meta,
        )
        for e in aggregate.collect_events()
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


def interleave(histories: Sequence[list[NewEvent]]) -> list[NewEvent]:
    """The histories in the order live traffic writes them: streams start one after another and each goes on while
    later ones start, so a stream's events lie far apart in the log (in different runner batches) and every batch
    mixes hundreds of streams. Event v of stream m is placed at m + v * stride (stride = streams / events per
    stream), which keeps each stream's own order."""
    longest = max((len(h) for h in histories), default=1)
    stride = max(1, len(histories) // longest)
    slots = sorted((m + v * stride, m, v) for m, history in enumerate(histories) for v in range(len(history)))
    return [histories[m][v] for _, m, v in slots]


def agent_endpoint(beats: list[datetime], lease_seconds: int, n: int = 0) -> list[NewEvent]:
    """One agent-reported endpoint stream: a heartbeat at each of `beats` (oldest first), each leasing the
    endpoint for `lease_seconds` from its own time (Opened, then Upserted per later beat)."""
    account_id, machine_id, agent_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    key = f"gpu-{n % 4}"
    endpoint: RuntimeEndpoint | None = None
    for at in beats:
        cmd = UpsertEndpoint(
            url=f"https://{key}.m{n}.bench.example.net/v1", auth_token=f"bench-secret-{agent_id.hex[:12]}",
            metadata={"gpu": "a100", "slots": 4}, source=AGENT, agent_id=agent_id,
            lease_expires_at=at + timedelta(seconds=lease_seconds),
        )
        if endpoint is None:
            endpoint = RuntimeEndpoint.open(account_id, machine_id, key, cmd, at)
        else:
            endpoint.upsert(cmd, at)
    if endpoint is None:
        raise ValueError("an endpoint stream needs at least one heartbeat")
    return _new_events(endpoint, metadata(account_id, uuid.uuid4().hex, actor=f"agent:{agent_id}"))
