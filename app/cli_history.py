"""The history sub-commands of `mm`: replay, events tail, debug bundle (parsers and entry points)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable

from app.settings import Settings

DsnOf = Callable[[Settings], str]


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    from app.cli_replay import replay_bundle, replay_stream

    if args.bundle:
        return replay_bundle(args.bundle)  # offline: no database is started or touched
    if not args.stream_id:
        print("mm replay: give a STREAM_ID or --bundle FILE", file=sys.stderr)
        return 2
    return asyncio.run(replay_stream(settings, args.dsn_of(settings), args.stream_id, args.to_version))


def cmd_events(settings: Settings, args: argparse.Namespace) -> int:
    from app.cli_tail import tail

    return asyncio.run(tail(settings, args.dsn_of(settings), args.type or [], args.stream or [], args.from_start))


def cmd_debug(settings: Settings, args: argparse.Namespace) -> int:
    from app.cli_replay import write_bundle

    return asyncio.run(write_bundle(settings, args.dsn_of(settings), args.correlation))


def add_history_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], dsn_of: DsnOf) -> None:
    """`dsn_of` is `mm`'s database_url (MM_DATABASE_URL or the embedded server), passed in to keep imports one-way."""
    replay = sub.add_parser("replay", help="a stream's events and the state after each, as a diff")
    replay.add_argument("stream_id", nargs="?", help="the stream (aggregate) id")
    replay.add_argument("--to-version", type=int, help="stop after this version")
    replay.add_argument("--bundle", help="replay a `mm debug bundle` file offline instead (no database)")
    replay.set_defaults(fn=cmd_replay, dsn_of=dsn_of)
    events = sub.add_parser("events", help="the event log")
    events_sub = events.add_subparsers(dest="action", required=True)
    follow = events_sub.add_parser("tail", help="follow the log live (LISTEN-woken), one line per event")
    follow.add_argument("--type", action="append", help="public type or topic; repeat for several")
    follow.add_argument("--stream", action="append", help="stream id; repeat for several")
    follow.add_argument("--from-start", action="store_true", help="print the whole log first")
    events.set_defaults(fn=cmd_events, dsn_of=dsn_of)
    debug = sub.add_parser("debug", help="debugging aids")
    debug_sub = debug.add_subparsers(dest="action", required=True)
    pack = debug_sub.add_parser("bundle", help="write every stream and event behind one trace as JSON to stdout")
    pack.add_argument("--correlation", required=True, help="the trace's correlation or request id")
    debug.set_defaults(fn=cmd_debug, dsn_of=dsn_of)
