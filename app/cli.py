"""The `mm` command: migrate, api, projector, worker, up (all of them, supervised), projections tools."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from app.settings import Settings, get_settings

log = logging.getLogger("mm")


def database_url(settings: Settings) -> str:
    """MM_DATABASE_URL, or the embedded PostgreSQL under the data directory (started if needed)."""
    if settings.database_url:
        return settings.database_url
    from app.embedded_db import ensure_embedded_postgres

    return ensure_embedded_postgres((settings.data_dir / "pg").resolve(), database="mm")


def cmd_migrate(settings: Settings, _: argparse.Namespace) -> int:
    from app.cli_admin import register_admin_token
    from app.migrate import migrate

    dsn = database_url(settings)
    applied = asyncio.run(migrate(dsn))
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    if asyncio.run(register_admin_token(settings, dsn, "system:mm-migrate")):
        print("MM_ADMIN_TOKEN is registered as an admin key")
    return 0


def cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    _stop_cleanly_on_signals()
    import asyncpg
    import uvicorn

    from app.api.app import create_app
    from app.cli_admin import register_admin_token
    from app.container import Container

    if not settings.secret_key:
        print("mm api: MM_SECRET_KEY is not set. It seals runtime-endpoint credentials at rest; generate one"
              " with `mm secret-key` and keep it with your other secrets (`mm up` keeps one in MM_DATA_DIR).",
              file=sys.stderr)
        return 2
    if not settings.audit_public_key_b64:
        print("mm api: neither MM_AUDIT_PUBLIC_KEY nor MM_AUDIT_SIGNING_KEY is set. The API publishes the audit"
              " checkpoints' public key at /v1/audit-events/signing-key; give it the public half (the projector"
              " alone needs the private key; `mm audit new-signing-key` makes one, `mm up` keeps one in"
              " MM_DATA_DIR).", file=sys.stderr)
        return 2
    dsn = database_url(settings)
    # Registered here too (idempotently), so the documented variable works without `mm up` or a migrate
    # run that saw it; a database that is unreachable now stops start-up, and the unit restarts it.
    try:
        asyncio.run(register_admin_token(settings, dsn, "system:mm-api"))
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"mm api: cannot register MM_ADMIN_TOKEN: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    # The API never LISTENs, locks or SETs on its pool, so released connections skip the session reset.
    app = create_app(settings, open_container=lambda: Container.open(settings, dsn, stateless_sessions=True))
    # uvicorn drains, restores our handlers, then re-raises the signal it stopped on: ours exit 0.
    uvicorn.run(app, host=args.host or settings.host, port=args.port or settings.port,
                log_level=settings.log_level.lower(), access_log=False, proxy_headers=True)
    return 0


def _exit_cleanly(signum: int, _frame: object) -> None:
    raise SystemExit(0)


def _stop_cleanly_on_signals() -> None:
    """A service stopped before its own handlers take over exits 0; then take any stop held since exec."""
    from app.lifeline import release_stop_signals

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_cleanly)
    release_stop_signals()


def _require_audit_key(settings: Settings, command: str) -> bool:
    if settings.audit_signing_key:
        return True
    print(f"mm {command}: MM_AUDIT_SIGNING_KEY is not set. The audit projection signs its checkpoints with it"
          " (`mm audit new-signing-key` makes one; `mm up` keeps one in MM_DATA_DIR).", file=sys.stderr)
    return False


def cmd_projector(settings: Settings, _: argparse.Namespace) -> int:
    _stop_cleanly_on_signals()
    if not _require_audit_key(settings, "projector"):
        return 2
    from app.event_loops import fast_loop_factory
    from projections.main import run_projector

    dsn = database_url(settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGUSR1, _log_tasks)
        await run_projector(settings, dsn, stop)

    with asyncio.Runner(loop_factory=fast_loop_factory()) as runner:
        runner.run(main())
    return 0


def _log_tasks() -> None:
    """`kill -USR1 <projector pid>`: where each projection's task is waiting, for an operator chasing a stall."""
    for task in asyncio.all_tasks():
        stack = task.get_stack(limit=8)
        where = " <- ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in reversed(stack)) or "(no frames)"
        log.warning("task %s: %s", task.get_name(), where)


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    env = {**os.environ, "MM_DATABASE_URL": database_url(settings)}
    # The workers run in this very process (exec keeps the pid), not under Dramatiq's forking CLI, so
    # killing `mm worker` kills them; with --processes N its copies get a parent-death signal.
    argv = [sys.executable, "-m", "workers.main", "--processes", str(args.processes), "--threads", str(args.threads)]
    from app.lifeline import STOP_SIGNALS

    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # held across exec until workers.main can stop
    os.execve(sys.executable, argv, env)
    return 0  # not reached


def cmd_projections(settings: Settings, args: argparse.Namespace) -> int:
    from app.cli_projections import rebuild_one, show_status

    if args.action == "rebuild" and args.name == "audit" and not _require_audit_key(settings, "projections"):
        return 2
    dsn = database_url(settings)
    if args.action == "status":
        return asyncio.run(show_status(settings, dsn))
    if args.as_of or args.schema or args.all:
        from app.cli_projections import rebuild_as_of_into

        if not (args.as_of and args.schema):
            print("--as-of and --schema go together (a past read model is built beside the live one)")
            return 2
        return asyncio.run(rebuild_as_of_into(settings, dsn, args.name, args.all, args.as_of, args.schema))
    if not args.name:
        print("name the read model to rebuild")
        return 2
    return asyncio.run(rebuild_one(settings, dsn, args.name))


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from app.supervisor import run_stack

    return run_stack(settings, args)


def cmd_admin(settings: Settings, args: argparse.Namespace) -> int:
    from app.cli_admin import admin

    return asyncio.run(admin(settings, database_url(settings), args))


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from app.cli_demo import main as demo

    return demo(settings, args)


def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    from app.cli_audit import run

    return run(settings, args)


def cmd_secret_key(settings: Settings, args: argparse.Namespace) -> int:
    from app.sealing import new_secret_key

    print(new_secret_key())
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mm", description="Machine Markets service")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply sql/ migrations").set_defaults(fn=cmd_migrate)
    sub.add_parser("secret-key", help="print a new MM_SECRET_KEY").set_defaults(fn=cmd_secret_key)
    api = sub.add_parser("api", help="run the HTTP API")
    api.add_argument("--host")
    api.add_argument("--port", type=int)
    api.set_defaults(fn=cmd_api)
    sub.add_parser("projector", help="run the projections and the relay").set_defaults(fn=cmd_projector)
    worker = sub.add_parser("worker", help="run Dramatiq workers")
    worker.add_argument("--processes", type=int, default=1)
    worker.add_argument("--threads", type=int, default=4)
    worker.set_defaults(fn=cmd_worker)
    proj = sub.add_parser("projections", help="projection status and rebuild")
    proj_sub = proj.add_subparsers(dest="action", required=True)
    proj_sub.add_parser("status", help="position and lag of each projection")
    rebuild = proj_sub.add_parser("rebuild", help="replay a read model from zero and swap it in; or, with --as-of"
                                  " and --schema, build it as it stood then in a schema of its own")
    rebuild.add_argument("name", nargs="?")
    rebuild.add_argument("--all", action="store_true", help="every read model (with --as-of)")
    rebuild.add_argument("--as-of", help="a log position (tx.position) or an RFC 3339 time")
    rebuild.add_argument("--schema", help="where the past read model goes (live tables are never touched)")
    proj.set_defaults(fn=cmd_projections)
    admin = sub.add_parser("admin", help="admin keys: create (rotation), list, revoke")
    admin_sub = admin.add_subparsers(dest="action", required=True)
    create = admin_sub.add_parser("create-key", help="print a new admin key (shown once)")
    create.add_argument("--label", default="created by mm admin", help="shown in key listings")
    admin_sub.add_parser("list-keys", help="the admin keys (never the keys themselves)")
    revoke = admin_sub.add_parser("revoke-key", help="revoke an admin key by id or prefix")
    revoke.add_argument("key", help="the key id, or its prefix as `mm admin list-keys` shows it")
    admin.set_defaults(fn=cmd_admin)
    from app.cli_history import add_history_commands

    add_history_commands(sub, database_url)  # replay, events tail, debug bundle
    from app.cli_ledger import add_ledger_commands

    add_ledger_commands(sub, database_url)  # ledger verify
    from app.cli_audit import add_parsers

    add_parsers(sub).set_defaults(fn=cmd_audit)
    up = sub.add_parser("up", help="migrate, then run api + projector + worker, supervised")
    up.add_argument("--no-worker", action="store_true", help="skip the Dramatiq worker")
    up.set_defaults(fn=cmd_up)
    demo = sub.add_parser("demo", help="drive a task end to end against a running stack (make run)")
    demo.add_argument("--base", help="the stack's base URL (default http://MM_HOST:MM_PORT)")
    demo.add_argument("--admin-key", help="an admin key (default MM_ADMIN_TOKEN, else the one mm up keeps)")
    demo.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.fn(settings, args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
