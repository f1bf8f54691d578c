"""`make bench`: run the store, HTTP, catch-up, heartbeat and lease-timer phases on a throw-away database; print one
table."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import urlsplit

import asyncpg
import psutil

from ops.bench import (
    catchup,
    commands,
    export,
    heartbeats,
    http_api,
    market,
    policies,
    store,
    tasks,
    time_travel,
    timers,
)
from ops.bench.db import bench_database, describe, server_facts, server_url, tree_cpu
from ops.bench.report import Report, Row, rate

PHASES = ("store", "http", "catchup", "heartbeats", "timers", "commands", "timetravel", "export", "policies",
          "tasks", "market")
STORE_RATIO_TARGET = 0.70
# Catch-up from zero as a fraction of the runner's no-op floor (same runner, batch size and log, same run).
# 0.20: a projection's own work may cost at most four times what the runner spends reading, decoding and
# checkpointing each event. Measured here: machines 0.32-0.44, audit 0.23-0.33.
CATCHUP_RATIO_TARGETS = {"machines": 0.20, "audit": 0.20}
# The command path against the thinnest endpoint (issue 13), same run: POST at least half its rate, p99 within
# 50 ms at 32 connections, live projecting at most 3x the CPU per event of catching up, lag p99 within 100 ms.
COMMANDS_RATIO_TARGET, COMMANDS_P99_MS, COMMANDS_LIVE_CPU_RATIO, COMMANDS_LAG_P99_MS = 0.50, 50.0, 3.0, 100.0
# Issue 11: a time-travel GET of a 1,000-event stream (with snapshots), one request at a time.
TIMETRAVEL_P99_MS = 20.0
# Issue 10: NDJSON export over HTTP at least 150,000 rows/s and half the raw server-side cursor (same run); the
# API's memory flat (peak growth of the full export within this of a tenth of it); SSE p99 delivery lag.
EXPORT_RATE, EXPORT_RATIO, EXPORT_RSS_SLACK_MIB, SSE_P99_MS = 150_000, 0.50, 16.0, 250.0
# Issue 8: evaluation on the task-create path, 0 vs 100 policies in scope, same run.
POLICIES_ADDED_P50_MS = 2.0
# The requirement: 10,000 agents each beating every 30 s must be sustainable.
REQUIRED_AGENTS, BEAT_SECONDS = 10_000, 30


@dataclass(frozen=True)
class Plan:
    store_seconds: float
    store_warmup: float
    store_rounds: int
    http_requests: int
    http_warmup: int
    catchup_events: int
    heartbeat_machines: int
    heartbeat_agents: int
    heartbeat_requests: int
    timer_relay: int  # heartbeat events relayed into the broker
    timer_renewed: int  # due timers of renewed leases drained by the worker
    timer_expiring: int  # due timers of leases that really ran out
    commands_seconds: float  # one wrk run
    commands_rounds: int  # alternating rounds of bare, POST /v1/machines and heartbeat
    # Heartbeat agents (on agents // 10 machines), beaten round-robin: more than the connections, so no two
    # beats of one agent are in flight at once (they would conflict: 409).
    commands_agents: int
    export_rows: int
    sse_subscribers: int
    sse_rate: float  # events/s appended while the subscribers follow
    sse_seconds: float
    tasks: int  # auto tasks timed (and as many direct calls)
    tasks_warmup: int
    tasks_listings: int  # the catalogue discovery runs over
    tasks_discovers: int


FULL = Plan(store_seconds=5.0, store_warmup=1.0, store_rounds=5, http_requests=3_000, http_warmup=200,
            catchup_events=100_000, heartbeat_machines=100, heartbeat_agents=1_000, heartbeat_requests=5_000,
            timer_relay=5_000, timer_renewed=5_000, timer_expiring=500, commands_seconds=10.0,
            commands_rounds=3, commands_agents=500, export_rows=200_000, sse_subscribers=1_000, sse_rate=1_000,
            sse_seconds=10.0, tasks=3_000, tasks_warmup=300, tasks_listings=10_000, tasks_discovers=500)
QUICK = Plan(store_seconds=2.0, store_warmup=0.3, store_rounds=2, http_requests=500, http_warmup=50,
             catchup_events=10_000, heartbeat_machines=10, heartbeat_agents=100, heartbeat_requests=500,
             timer_relay=500, timer_renewed=500, timer_expiring=50, commands_seconds=1.0, commands_rounds=1,
             commands_agents=100, export_rows=20_000, sse_subscribers=50, sse_rate=200, sse_seconds=3.0, tasks=100,
             tasks_warmup=32, tasks_listings=500, tasks_discovers=50)


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ops.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short smoke run (~15 s) instead of the full one")
    parser.add_argument("--only", choices=PHASES, help="run just this phase")
    return parser.parse_args(argv)


async def _store(report: Report, dsn: str, plan: Plan) -> None:
    r = await store.run(dsn, plan.store_seconds, plan.store_warmup, plan.store_rounds)
    w = store.WRITERS
    report.add(Row("store", f"raw asyncpg INSERT, {w} writers (baseline)", f"{rate(r.raw.rate)} ev/s"))
    report.add(Row("store", f"EventStore.append, {w} writers", f"{rate(r.store.rate)} ev/s"))
    report.check("store", "ratio append/raw", r.ratio, STORE_RATIO_TARGET, ".2f")
    report.notes.append(
        f"store: {r.raw.events:,} raw and {r.store.events:,} appended single-event transactions,"
        f" {plan.store_rounds} interleaved rounds each, {plan.store_seconds:g} s per side after"
        f" {plan.store_warmup:g} s warm-up"
    )


def _load_rows(report: Report, phase: str, label: str, load: http_api.Load, unit: str) -> None:
    """Rate and latency rows for one timed HTTP run, and a note with its statuses and the API's CPU."""
    report.add(Row(phase, f"{label}, {http_api.CLIENTS} clients", f"{rate(load.rate)} {unit}"))
    report.add(Row(phase, "  latency p50 / p99", f"{load.percentile(50):.1f} / {load.percentile(99):.1f} ms"))
    cpu = load.server_cpu / load.seconds * 100 if load.seconds else 0.0
    report.notes.append(
        f"{phase} {label}: {load.requests:,} requests in {load.seconds:.2f} s, statuses"
        f" {dict(sorted(load.statuses.items()))}, API process CPU {cpu:.0f}% of one core"
        + (f", transport errors {dict(load.failures)}" if load.failures else "")
    )


async def _http(report: Report, dsn: str, plan: Plan) -> None:
    r = await http_api.run(dsn, plan.http_requests, plan.http_warmup)
    for label, load, unit in (
        ("GET /health (harness ceiling)", r.health, "req/s"),
        ("POST /v1/machines", r.post, "cmd/s"),
        ("GET /v1/machines/{id}", r.get, "req/s"),
    ):
        _load_rows(report, "http", label, load, unit)
        if load is not r.health and r.health.rate:
            report.add(Row("http", "  ratio to GET /health ceiling (same run)", f"{load.rate / r.health.rate:.2f}"))
        if load.errors:
            report.add(Row("http", f"  {label} errors", f"{load.errors:,}", "0", "FAIL"))


async def _heartbeats(report: Report, dsn: str, plan: Plan) -> None:
    r = await heartbeats.run(dsn, plan.heartbeat_machines, plan.heartbeat_agents, plan.heartbeat_requests,
                             plan.http_warmup)
    required = REQUIRED_AGENTS / BEAT_SECONDS
    _load_rows(report, "heartbeats", "GET /health (harness ceiling)", r.health, "req/s")
    _load_rows(report, "heartbeats", "POST /v1/machine-agents/heartbeat", r.beats, "beats/s")
    report.check("heartbeats", f"heartbeats/s vs required {required:.0f}/s ({REQUIRED_AGENTS:,} agents /"
                 f" {BEAT_SECONDS} s)", r.beats.rate / required, 1.0, ".2f")
    ceiling = r.beats.rate / r.health.rate if r.health.rate else 0.0
    report.add(Row("heartbeats", "ratio heartbeats/s / GET /health ceiling (same run)", f"{ceiling:.2f}"))
    report.check_max("heartbeats", "heartbeat responses other than 200", r.non_200, 0, ",d")
    for x in r.replays:
        report.check_max("heartbeats", f"events an {x.kind} load replays (worst of {x.streams:,} streams)",
                         x.worst_replay, x.every - 1, "d")
    report.notes.append(
        f"heartbeats setup (not timed, {r.setup_seconds:.1f} s): {r.machines:,} machines registered, verified"
        f" (Ed25519) and activated and {r.agents:,} agents enrolled over HTTP, 1 endpoint each;"
        f" {r.history_events:,} past agent+endpoint events seeded through the aggregates and Repository.save_all"
        f" ({r.history_beats[0]}-{r.history_beats[1]} past beats per agent, so every stream is past its first"
        f" snapshot and the timed loads replay 0-{r.replays[0].every - 1} events after it, as in steady state);"
        f" 1 warm-up beat per agent"
    )
    beats = r.beats
    db = "n/a" if r.db_cpu is None else (f"{r.db_cpu / beats.seconds * 100:.0f}% of one core,"
                                          f" {r.db_cpu / beats.requests * 1000:.2f} ms per beat")
    report.notes.append(
        f"heartbeats: each beat loads the agent, its machine and its endpoint and appends 2 events in one"
        f" transaction; round-robin over {r.agents:,} agents; CPU during the timed beats: API process"
        f" {beats.server_cpu / beats.requests * 1000:.2f} ms per beat, PostgreSQL {db} (all its processes, so"
        f" other databases on that server count too)"
    )
    report.notes.append("heartbeats streams after the run: " + "; ".join(
        f"hottest {x.kind} stream {x.hottest_events} events, a load replays {x.hottest_replay}"
        f" after snapshot v{x.hottest_snapshot} ({x.snapshotted:,} of {x.streams:,} streams have a snapshot,"
        f" worst replay {x.worst_replay})" for x in r.replays
    ))


async def _timers(report: Report, dsn: str, plan: Plan) -> None:
    r = await timers.run(dsn, plan.timer_relay, plan.timer_renewed, plan.timer_expiring)
    required = REQUIRED_AGENTS / BEAT_SECONDS
    report.add(Row("timers", "broker.enqueue of the same timers, 1 thread (baseline)", f"{rate(r.enqueue.rate)} msg/s"))
    report.add(Row("timers", "RelayProjection.apply_many -> PostgreSQL broker", f"{rate(r.relay.rate)} msg/s"))
    report.check("timers", f"relay msg/s vs required {required:.0f}/s", r.relay.rate / required, 1.0, ".2f")
    ratio = r.relay.rate / r.enqueue.rate if r.enqueue.rate else 0.0
    report.add(Row("timers", "ratio relay / broker.enqueue (same run)", f"{ratio:.2f}"))
    report.check("timers", f"worker ({timers.THREADS} threads): renewed-lease timers", r.renewed.rate, required,
                 ",.0f", " timers/s")
    report.add(Row("timers", f"worker ({timers.THREADS} threads): timers that expire a lease",
                   f"{rate(r.expiring.rate)} timers/s"))
    ok = r.expired_due == r.expiring.events and r.expired_renewed == 0
    expired = f"{r.expired_due:,} / {r.expired_renewed:,}"
    report.add(Row("timers", "Expired events: due leases / renewed leases", expired, f"{r.expiring.events:,} / 0",
                   "PASS" if ok else "FAIL"))
    report.check_max("timers", "timer messages retried or dead-lettered", r.troubled, 0, ",d")
    report.notes.append(
        f"timers setup (not timed, {r.setup_seconds:.1f} s): {r.seeded:,} endpoint events (2 agent heartbeats per"
        f" stream, {timers.BEAT_SECONDS} s apart, {timers.LEASE_SECONDS} s leases) built through RuntimeEndpoint and"
        f" appended, then read back with EventStore.read_all"
    )
    report.notes.append(
        f"timers relay: {r.relay.events:,} events in batches of {r.batch} vs"
        f" {r.enqueue.events:,} prebuilt messages, interleaved A B B A on one PostgresBroker; {r.relay_delayed:,}"
        f" messages still delayed (eta in the future) afterwards, so nothing was claimable while they were enqueued:"
        f" the baseline's {r.enqueue.events:,} and the relay's one per stream (each heartbeat's timer supersedes the"
        f" endpoint's previous one: dropped when both are in one batch, else deleted while still queued)"
    )
    report.notes.append(
        f"timers worker: one dramatiq.Worker, FastAsyncIO (uvloop) + CloseContainer middleware, started after the"
        f" timers were enqueued and timed until none is left undone (start-up inside the timing):"
        f" {r.renewed.events:,} renewed in {r.renewed.seconds:.2f} s,"
        f" {r.expiring.events:,} expiring in {r.expiring.seconds:.2f} s"
    )


async def _catchup(report: Report, dsn: str, plan: Plan) -> None:
    r = await catchup.run(dsn, plan.catchup_events)
    report.add(Row("catchup", "log: machine events (5 per machine, interleaved)", f"{r.loaded:,} events"))
    report.add(Row("catchup", f"distinct streams per batch of {r.batch}", f"{r.mix.streams_per_batch:,.0f}"))
    report.add(Row("catchup", "EventStore.read_all plan", r.plan))
    report.add(Row("catchup", "catch_up no-op projection (runner floor, baseline)", f"{rate(r.floor.rate)} ev/s"))
    for run in r.runs:
        report.add(Row("catchup", f"catch_up {run.name} from zero", f"{rate(run.rate)} ev/s"))
        report.check("catchup", f"ratio {run.name} / runner floor", r.ratio(run), CATCHUP_RATIO_TARGETS[run.name],
                     ".2f")
    for run in (r.floor, *r.runs):
        if not run.rows_ok:
            report.add(Row("catchup", f"  {run.name} result", run.detail, "all events and rows", "FAIL"))
    report.notes.append(
        f"catchup: {r.loaded:,} events of {r.machines:,} machines loaded in {r.load_seconds:.1f} s (bulk appends of"
        f" {catchup.APPEND_CHUNK:,} in live-traffic order: consecutive events of a machine lie"
        f" {r.mix.gap:,.0f} log positions apart on average); runs in order floor, machines, audit, floor:"
        f" " + "; ".join(f"{x.name} {x.seconds:.2f} s ({x.detail})" for x in (r.floor, *r.runs))
    )


async def _commands(report: Report, dsn: str, plan: Plan) -> None:
    r = await commands.run(dsn, plan.commands_seconds, plan.commands_rounds, max(1, plan.commands_agents // 10),
                           plan.commands_agents)
    c = commands.CONNECTIONS
    for label, side in (("bare Litestar + 1 asyncpg INSERT (baseline)", r.bare), ("POST /v1/machines", r.post),
                        ("POST /v1/machine-agents/heartbeat", r.beat)):
        report.add(Row("commands", f"{label}, {c} conns", f"{rate(side.median('rate'))} req/s"))
        report.add(Row("commands", "  latency p50 / p99 (median of rounds)",
                       f"{side.median('p50_ms'):.1f} / {side.median('p99_ms'):.1f} ms"))
        report.add(Row("commands", "  server CPU per request", f"{side.cpu_ms('api'):.2f} ms"))
        if side.errors:
            report.add(Row("commands", f"  {label} non-2xx or socket errors", f"{side.errors:,}", "0", "FAIL"))
    report.check("commands", "ratio POST /v1/machines / bare (same run)", r.ratio, COMMANDS_RATIO_TARGET, ".2f")
    beat_ratio = r.beat.median("rate") / r.bare.median("rate") if r.bare.runs else 0.0
    report.add(Row("commands", "ratio heartbeat / bare (same run)", f"{beat_ratio:.2f}"))
    report.check_max("commands", f"POST /v1/machines p99 at {c} connections", r.post.median("p99_ms"),
                     COMMANDS_P99_MS, ".1f", " ms")
    live, catch = r.live_cpu_per_event * 1000, r.catchup_cpu_per_event * 1000
    report.add(Row("commands", "projector CPU per event, live follow", f"{live:.3f} ms"))
    report.add(Row("commands", "projector CPU per event, catch-up (same traffic)", f"{catch:.3f} ms"))
    report.check_max("commands", "ratio projector CPU live / catch-up", live / catch if catch else float("inf"),
                     COMMANDS_LIVE_CPU_RATIO, ".2f")
    report.check_max("commands", "projection lag p99 under load (all projections)", r.lag_p99_ms(),
                     COMMANDS_LAG_P99_MS, ".0f", " ms")
    report.add(Row("commands", "  during POST / heartbeat rounds",
                   f"{commands.p99_ms(r.post.lag_samples):.0f} / {commands.p99_ms(r.beat.lag_samples):.0f} ms"))
    report.notes.append(
        f"commands: load generator {r.generator}, 1 thread, {c} connections, {r.seconds:g} s per run,"
        f" {r.rounds} rounds alternating bare, POST, heartbeat / heartbeat, POST, bare; figures are medians of"
        f" rounds. API = `mm api`, with `mm projector` and `mm worker` running (as `mm up`); {r.agents} heartbeat"
        f" agents. Live projector CPU counts from each round's start until every projection has caught up:"
        f" {r.post.events + r.beat.events:,} events; catch-up: projector paused (SIGSTOP) during one more POST run"
        f" ({r.catchup_events:,} events), then timed until caught up. Lag: oldest unapplied event's age,"
        f" sampled every {commands.LAG_SAMPLE_S * 1000:.0f} ms ({len(r.lag_samples):,} samples); p99 by projection: "
        + ", ".join(f"{n} {ms:.0f} ms" for n, ms in r.lag_by_projection().items())
    )
    # Where the two cores went: wrk's rate is bounded by the whole machine, not the API process alone.
    report.notes.append(
        "commands: CPU ms per request by process, over every round (the projector's counted within the runs only): "
        + "; ".join(f"{label} " + ", ".join(f"{proc} {side.cpu_ms(proc):.3f}" for proc in
                                            ("api", "projector", "worker", "postgres", "wrk") if side.runs and
                                            proc in side.runs[0].cpu)
                    for label, side in (("bare", r.bare), ("POST", r.post), ("heartbeat", r.beat)))
    )


async def _timetravel(report: Report, dsn: str, plan: Plan) -> None:
    time_travel.add_rows(report, await time_travel.run(dsn, plan.http_requests, plan.http_warmup), TIMETRAVEL_P99_MS)


async def _export(report: Report, dsn: str, plan: Plan) -> None:
    r = await export.run(dsn, plan.export_rows, plan.sse_subscribers, plan.sse_rate, plan.sse_seconds)
    report.add(Row("export", "audit feed (rows, 50 accounts)", f"{r.rows:,} rows"))
    report.add(Row("export", "audit projection catch-up (chain + signed checkpoints)", f"{rate(r.project.rate)} ev/s"))
    report.add(Row("export", "asyncpg server-side cursor + JSON decode (baseline)", f"{rate(r.baseline.rate)} rows/s"))
    nd = r.formats["ndjson"]
    report.check("export", "GET /v1/audit-events/export ndjson over HTTP", nd.rate, EXPORT_RATE, ",.0f", " rows/s")
    report.check("export", "ratio ndjson / baseline (same run)", nd.rate / r.baseline.rate, EXPORT_RATIO, ".2f")
    for fmt in ("csv", "cloudevents"):
        report.add(Row("export", f"  {fmt} over HTTP", f"{rate(r.formats[fmt].rate)} rows/s"))
    report.check_max("export", "API peak RSS growth, full export minus a tenth of it", nd.peak_rss_growth_mib
                     - r.small_growth_mib, EXPORT_RSS_SLACK_MIB, ".1f", " MiB")
    if r.sse is not None:
        s = r.sse
        label = f"SSE delivery lag p99, {s.subscribers:,} subscribers at {s.target_rate:,.0f} ev/s"
        report.check_max("export", label, s.p(99), SSE_P99_MS, ".0f", " ms")
        expected = s.sent * s.subscribers
        report.check("export", "SSE records delivered / sent x subscribers", s.received_events / expected
                     if expected else 0.0, 1.0, ".3f")
        report.notes.append(
            f"export SSE: {s.sent:,} events in {s.seconds:.1f} s ({s.sent / s.seconds:,.0f}/s) appended 1 per 10 ms"
            f" tick in small transactions while `mm projector` followed live; subscribers in a process of their own"
            f" (ops/bench/sse_client.py: raw sockets counting event boundaries); lag = arrival minus the occurredAt"
            f" stamped just before the append, of the first record of each read, given to every record that read"
            f" completed (an upper bound); p50 {s.p(50):.0f} ms, p99 {s.p(99):.0f} ms, max {s.p(100):.0f} ms over"
            f" {s.measured:,} records; {s.resumes} slow-consumer resumes; `mm api` CPU {s.api_cpu:.0%} of one core,"
            f" subscribers' process {s.client_cpu_s:.1f} s CPU in all; the audit projection's own lag (sampled"
            f" every 200 ms) p50 {s.projector_p(50):.0f} ms, p99 {s.projector_p(99):.0f} ms")
    report.notes.append(
        f"export: full ndjson {nd.rows:,} lines in {nd.seconds:.2f} s, API RSS peak +{nd.peak_rss_growth_mib:.1f} MiB"
        f" (a tenth of it: +{r.small_growth_mib:.1f} MiB); baseline {r.baseline.rows:,} rows in"
        f" {r.baseline.seconds:.2f} s; `mm api` process, one httpx client counting lines")


async def _tasks(report: Report, dsn: str, plan: Plan) -> None:
    result = await tasks.run(dsn, plan.tasks, plan.tasks_warmup, plan.tasks_listings, plan.tasks_discovers)
    tasks.add_rows(report, result, plan.tasks, plan.tasks_warmup)
    market.tasks_rate = result.auto.rate  # the market phase reports its ratio to this


async def _market(report: Report, dsn: str, plan: Plan) -> None:
    # As many orders as the tasks phase runs tasks (the issue compares the two rates).
    market.add_rows(report, await market.run(dsn, plan.tasks, plan.tasks_warmup), plan.tasks)


Phase = Callable[[Report, str, Plan], Awaitable[None]]
async def _policies(report: Report, dsn: str, plan: Plan) -> None:
    policies.add_rows(report, await policies.run(dsn, plan.http_requests), POLICIES_ADDED_P50_MS)


RUNNERS: dict[str, Phase] = {"store": _store, "http": _http, "catchup": _catchup, "heartbeats": _heartbeats,
                             "timers": _timers, "commands": _commands, "timetravel": _timetravel,
                             "export": _export, "policies": _policies, "tasks": _tasks,
                             "market": _market}


def cpu_speed_s() -> float:
    """CPU seconds of a fixed pure-Python loop (10 M additions): this machine's speed right now.

    On the bench machine the same additions (at module level) took 0.69 s and 1.03 s a minute apart, and every
    process's CPU per operation moved with it; printed before and after each phase, it tells a slow run from a
    slow change.
    """
    started, total = time.process_time(), 0
    for i in range(10_000_000):
        total += i
    return time.process_time() - started


async def round_trip_us(dsn: str, count: int = 3_000, at_least_s: float = 0.3) -> tuple[float, float | None]:
    """CPU microseconds per trivial statement round trip (`SELECT $1::int` on one asyncpg connection): this
    process's, and its PostgreSQL backend's (None when the server is not a local process).

    On the bench machine (a VM) a round trip cost the client 63-119 us and the backend 33-83 us of CPU on
    2026-12-03, a day when every service's CPU per operation was up to twice the day before's while the Python
    loop above was not slower: the services' cost follows the number of round trips they make as much as their
    Python.

    At least `count` round trips and `at_least_s` of wall time: another process's CPU is read in clock ticks
    (10 ms), and on a fast day 3,000 trips cost the backend about 15 ms, which read as 0 or 3 us per trip.
    """
    conn = await asyncpg.connect(dsn)
    try:
        backend: psutil.Process | None = None
        with contextlib.suppress(psutil.Error):
            backend = psutil.Process(await conn.fetchval("SELECT pg_backend_pid()"))
        for _ in range(200):
            await conn.fetchval("SELECT $1::int", 1)
        own, theirs = time.process_time(), tree_cpu(backend) if backend is not None else 0.0
        started, done = time.monotonic(), 0
        while done < count or time.monotonic() - started < at_least_s:
            for _ in range(500):
                await conn.fetchval("SELECT $1::int", 1)
            done += 500
        client = (time.process_time() - own) / done * 1e6
        server = (tree_cpu(backend) - theirs) / done * 1e6 if backend is not None else None
        return client, server
    finally:
        await conn.close()


def _round_trip_text(rt: tuple[float, float | None]) -> str:
    return f"{rt[0]:.0f}" + (f"+{rt[1]:.0f}" if rt[1] is not None else "")


async def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    plan = QUICK if args.quick else FULL
    phases = (args.only,) if args.only else PHASES
    server = server_url()
    facts = await server_facts(server)
    load_before = os.getloadavg()
    started = time.monotonic()
    async with bench_database(server) as dsn:
        name = urlsplit(dsn).path.lstrip("/")
        report = Report(
            f"make bench ({'quick' if args.quick else 'full'} run): {os.cpu_count()} CPUs, {facts}"
            f" at {describe(server)}, database {name}"
        )
        speeds, before = [], cpu_speed_s()
        trips, trip_before = [], await round_trip_us(dsn)
        for phase in phases:
            print(f"bench: running {phase} ...", file=sys.stderr, flush=True)
            try:
                await RUNNERS[phase](report, dsn, plan)
            except Exception as exc:
                traceback.print_exc()
                report.error(phase, exc)
            after = cpu_speed_s()  # also the next phase's "before"
            speeds.append(f"{phase} {before:.2f} / {after:.2f} s")
            before = after
            trip_after = await round_trip_us(dsn)
            trips.append(f"{phase} {_round_trip_text(trip_before)} / {_round_trip_text(trip_after)} us")
            trip_before = trip_after
    report.notes.append(
        "CPU speed (a fixed Python loop of 10 M additions, before / after each phase; lower is faster, and every"
        f" figure of a phase moves with it): {', '.join(speeds)}"
    )
    report.notes.append(
        "PostgreSQL round trip (CPU per `SELECT $1::int` on one connection, bench process + its backend, before /"
        f" after each phase; every statement the services make costs at least this): {', '.join(trips)}"
    )
    report.notes.append(
        f"load average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f} (other work on this machine"
        f" skews figures); total {time.monotonic() - started:.0f} s"
    )
    print(report.render(), flush=True)
    print(report.verdict(), file=sys.stderr, flush=True)
    return report.exit_code


def cli(argv: list[str] | None = None) -> NoReturn:
    """The process: exit 0 when every target is met, 1 when one is missed, 2 when a phase could not run."""
    sys.exit(asyncio.run(main(argv)))


if __name__ == "__main__":
    cli()
