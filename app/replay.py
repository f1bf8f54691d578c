"""Replay for humans: each event of a stream and the aggregate's state after it, as a readable diff.

Pure (no I/O), so `mm replay STREAM` (from the database) and `mm replay --bundle` (offline) print alike. The
state comes from the aggregates' own evolve steps (app.store.mapper), never from a second copy of the rules.
Secrets are redacted in the state too: digests, nonces, sealed tokens never reach a terminal.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import msgspec
from eventsourcing.domain import Aggregate

from app.aggregates import AGGREGATES
from app.store.mapper import to_domain_event
from app.store.types import RecordedEvent
from projections.audit_names import REDACTED_KEYS, public_name

REDACTED = "[redacted]"
# State keeps some secrets under other names than their events do (an account's key digests under "hash").
_STATE_SECRETS = REDACTED_KEYS | {"hash"}
_INTERNAL = ("_pending_events",)
assert AGGREGATES  # imported for its side effect: every aggregate's event topics resolve


def redact(value: Any, secrets: frozenset[str] = _STATE_SECRETS) -> Any:
    """`value` with every secret-named key's value replaced (None stays None: whether one was set is not secret)."""
    if isinstance(value, dict):
        return {k: (REDACTED if k in secrets and v is not None else redact(v, secrets)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, secrets) for v in value]
    return value


def state_of(aggregate: Aggregate | None) -> dict[str, Any]:
    if aggregate is None:
        return {}
    raw = {k.lstrip("_"): v for k, v in aggregate.__dict__.items() if k not in _INTERNAL}
    state: dict[str, Any] = msgspec.to_builtins(raw, str_keys=True, enc_hook=str)
    return redact(state)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted paths (lists and scalars are leaves), so a diff names exactly what changed."""
    if isinstance(value, dict) and (value or not prefix):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    old, new = flatten(before), flatten(after)
    lines = []
    for key in sorted(old.keys() | new.keys()):
        if key not in old:
            lines.append(f"+ {key}: {_show(new[key])}")
        elif key not in new:
            lines.append(f"- {key}: {_show(old[key])}")
        elif old[key] != new[key]:
            lines.append(f"~ {key}: {_show(old[key])} -> {_show(new[key])}")
    return lines


def _show(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def headline(e: RecordedEvent, marked: bool = False) -> str:
    m = e.metadata
    who = " ".join(f"{k}={m[v]}" for k, v in (("actor", "actor"), ("request", "requestId"),
                                               ("correlation", "correlationId"), ("cause", "causationId")) if m.get(v))
    star = "*" if marked else " "
    return f"{star}v{e.version:<5} {e.recorded_at.isoformat()}  {public_name(e.type)}  {who}"


def replay(events: Iterable[RecordedEvent], marked: frozenset[str] = frozenset()) -> Iterator[str]:
    """Lines to print: each event's headline, then how the state changed (events in `marked` get a star)."""
    aggregate: Aggregate | None = None
    before: dict[str, Any] = {}
    for e in events:
        aggregate = to_domain_event(e).mutate(aggregate)
        after = state_of(aggregate)
        yield headline(e, str(e.event_id) in marked)
        yield from (f"        {line}" for line in diff(before, after) or ["(no state change)"])
        before = after
