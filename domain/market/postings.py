"""Postings: one line of a double-entry movement (ledger account, signed integer minor units).

A movement's postings are in the one currency of the event that carries them and always sum to zero.
Ledger accounts: per platform account `available` and `escrow`; the platform's `fees`; `external` (money entering
or leaving the platform). `account_id` names the platform account for `available`/`escrow`, None otherwise.
"""

from __future__ import annotations

import uuid

import msgspec

AVAILABLE, ESCROW, FEES, EXTERNAL = "available", "escrow", "fees", "external"
PER_ACCOUNT = frozenset({AVAILABLE, ESCROW})
LEDGERS = frozenset({AVAILABLE, ESCROW, FEES, EXTERNAL})


class Posting(msgspec.Struct, frozen=True):
    ledger: str
    account_id: uuid.UUID | None
    amount: int

    def key(self) -> str:
        """A stable name for the ledger account, e.g. `available:<uuid>` or `fees`."""
        return f"{self.ledger}:{self.account_id}" if self.account_id is not None else self.ledger


def posting_set(*lines: Posting) -> list[Posting]:
    """The non-zero lines, checked: known ledgers, an account exactly where one belongs, and a zero sum."""
    kept = [p for p in lines if p.amount != 0]
    for p in kept:
        if p.ledger not in LEDGERS or (p.ledger in PER_ACCOUNT) != (p.account_id is not None):
            raise ValueError(f"malformed posting {p!r}")
    if not kept or sum(p.amount for p in kept) != 0:
        raise ValueError(f"postings must be non-empty and sum to zero: {kept!r}")
    return kept
