"""`mm ledger verify`: check the ledger's invariants from the event log; exit 1 naming every breach."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable

from app.settings import Settings

DsnOf = Callable[[Settings], str]


def add_ledger_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], dsn_of: DsnOf) -> None:
    ledger = sub.add_parser("ledger", help="the double-entry ledger")
    ledger_sub = ledger.add_subparsers(dest="action", required=True)
    ledger_sub.add_parser("verify", help="check every posting, balance and escrow from the event log")
    ledger.set_defaults(fn=cmd_ledger, dsn_of=dsn_of)


def cmd_ledger(settings: Settings, args: argparse.Namespace) -> int:
    from app.ledger_verify import verify_ledger

    audit = asyncio.run(verify_ledger(args.dsn_of(settings)))
    if audit.breaches:
        for breach in audit.breaches:
            print(f"BREACH {breach}", file=sys.stderr)
        print(f"ledger verify: {len(audit.breaches)} breach(es) in {audit.summary()}", file=sys.stderr)
        return 1
    print(f"ledger verified: {audit.summary()}; every posting set balanced, no available or escrow below zero,"
          " every currency sums to zero, every order settled once and in full")
    return 0
