"""`python -m ops.bench --quick --only PHASE` runs end to end on the test server and prints that phase's rows; the
process exits non-zero exactly when a target is missed.

Rates depend on the machine, so only the shape of each report is checked, plus the rows whose value does not
depend on it (every heartbeat answered 200; each due lease expired once and no renewed one did; catch-up applied
every event in order), and that the exit code agrees with the table. Whether a missed target really makes the
process fail is tested directly below, with a phase forced to miss one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT

PHASES = {
    "catchup": ((
        "distinct streams per batch of 500",
        "catch_up no-op projection (runner floor, baseline)",
        "catch_up machines from zero",
        "ratio machines / runner floor",
        "catch_up audit from zero",
        "ratio audit / runner floor",
    ), r"machines [\d.]+ s \(10,000 events, 2,000 of 2,000 expected rows\); audit [\d.]+ s \(10,000 events,"
       r" 10,000 of 10,000 expected rows\)"),
    "store": ((
        "raw asyncpg INSERT, 16 writers (baseline)",
        "ratio append/raw",
    ), None),
    "heartbeats": ((
        "GET /health (harness ceiling), 32 clients",
        "POST /v1/machine-agents/heartbeat, 32 clients",
        "latency p50 / p99",
        "heartbeats/s vs required 333/s (10,000 agents / 30 s)",
        "ratio heartbeats/s / GET /health ceiling (same run)",
        "events an agent load replays (worst of 100 streams)",
        "events an endpoint load replays (worst of 100 streams)",
        "note: heartbeats streams after the run: hottest agent stream",
    ), r"heartbeat responses other than 200\s+\|\s+0 \|\s+<= 0 \| PASS"),
    "timers": ((
        "broker.enqueue of the same timers, 1 thread (baseline)",
        "RelayProjection.apply_many -> PostgreSQL broker",
        "relay msg/s vs required 333/s",
        "ratio relay / broker.enqueue (same run)",
        "worker (8 threads): renewed-lease timers",
        "worker (8 threads): timers that expire a lease",
        "timer messages retried or dead-lettered",
        "note: timers worker: one dramatiq.Worker",
    ), r"Expired events: due leases / renewed leases\s+\|\s+50 / 0 \|\s+50 / 0 \| PASS"),
    "timetravel": ((
        "GET /health, 1 client: latency p50 / p99 (harness floor)",
        "GET agent ?version= / ?asOf= of a 1,000-event stream, 1 client",
        "latency p99, 1 client",
        "note: timetravel setup",
    ), r"responses other than 200\s+\|\s+0 \|\s+<= 0 \| PASS"),
    "commands": ((
        "bare Litestar + 1 asyncpg INSERT (baseline), 32 conns",
        "POST /v1/machines, 32 conns",
        "POST /v1/machine-agents/heartbeat, 32 conns",
        "ratio POST /v1/machines / bare (same run)",
        "POST /v1/machines p99 at 32 connections",
        "projector CPU per event, live follow",
        "projector CPU per event, catch-up (same traffic)",
        "ratio projector CPU live / catch-up",
        "projection lag p99 under load (all projections)",
    ), r"note: commands: load generator wrk \(/\S+, (found on PATH|installed now with apt-get)\)"),
    "tasks": ((
        "direct POST to the stub seller, 32 at once (baseline)",
        "auto tasks end to end (POST -> outcome visible), 32 at once",
        "p50 added over the direct call (same run)",
        "1 client: p50 added over the direct call (10 tasks)",
        "POST .../discover over 500 listings, 1 client: p50",
        "note: tasks: `mm api` + `mm projector` + `mm worker --threads 32`",
        "CPU per auto task: api",
    ), r"outcomes succeeded\s+\|\s+100 / 100 \|\s+100 \| PASS"),
    "market": ((
        "orders end to end (create -> pay -> hold -> execute -> confirm -> release), 32 buyers at once",
        "latency p50 / p99",
        "1 buyer at a time: p50",
        "note: market: `mm api` + `mm projector` + `mm worker --threads 32`",
        "CPU per order: api",
    ), r"orders released\s+\|\s+100 / 100 \|\s+100 \| PASS"),
}


@pytest.mark.parametrize("phase", list(PHASES))
def test_bench_quick_phase_prints_its_rows(server_url: str, phase: str) -> None:
    labels, exact = PHASES[phase]
    env = {**os.environ, "MM_DATABASE_URL": server_url}
    result = subprocess.run(
        [sys.executable, "-m", "ops.bench", "--quick", "--only", phase],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    out = result.stdout
    # A loaded box may miss a rate target; then, and only then, the process must fail (1), naming it on stderr.
    missed = re.findall(r"^\| \S+ +\| (.+?) +\|.*\| FAIL +\|$", out, re.MULTILINE)
    assert result.returncode == (1 if missed else 0), out + result.stderr
    for label in missed:
        assert label in result.stderr.split("bench: FAILED:")[-1], result.stderr
    missing = [label for label in (*labels, "SUMMARY:") if label not in out]
    assert not missing, f"missing {missing} in:\n{out}"
    if exact is not None:
        assert re.search(exact, out), out


_FORCED = textwrap.dedent("""
    import sys
    from ops.bench import __main__ as bench

    async def forced(report, dsn, plan):
        report.check("store", "forced figure", float(sys.argv[1]), 1.0, ".2f")

    bench.RUNNERS["store"] = forced
    bench.cli(["--only", "store"])
""")


@pytest.mark.parametrize(("value", "code", "verdict"), [
    ("0.50", 1, "bench: FAILED: store: forced figure = 0.50 (target >= 1.00)"),
    ("1.50", 0, "bench: every target met"),
])
def test_bench_process_fails_when_a_target_is_missed(server_url: str, value: str, code: int, verdict: str) -> None:
    """The real entry point (`cli`, what `python -m ops.bench` runs) with its store phase replaced by one figure."""
    env = {**os.environ, "MM_DATABASE_URL": server_url}
    result = subprocess.run([sys.executable, "-c", _FORCED, value], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == code, result.stdout + result.stderr
    assert verdict in result.stderr, result.stderr
    assert re.search(rf"forced figure\s+\|\s+{value} \|\s+>= 1.00 \| {'FAIL' if code else 'PASS'}", result.stdout)
    # The machine's speed around the phase, so a slow run can be told from a slow change.
    assert re.search(r"CPU speed \(.*\): store \d+\.\d\d / \d+\.\d\d s", result.stdout), result.stdout
    # And the cost of one PostgreSQL round trip around it (client + local backend CPU, in microseconds).
    trips = re.search(r"PostgreSQL round trip \(.*\): store (\d+)\+(\d+) / (\d+)\+(\d+) us", result.stdout)
    assert trips and all(0 < int(us) < 10_000 for us in trips.groups()), result.stdout
