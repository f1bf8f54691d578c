"""The `commands` phase's load generator: wrk (C, event loop, one thread), found on PATH or installed with apt-get."""

from __future__ import annotations

import json
import re
import resource
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass(frozen=True)
class WrkRun:
    requests: int
    seconds: float
    rate: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    cpu: dict[str, float]  # CPU seconds each watched process used during the run


def find_wrk() -> tuple[str, str]:
    """wrk's path and how it was obtained; installs the Debian package when it is missing."""
    found = shutil.which("wrk")
    if found:
        return found, f"wrk ({found}, found on PATH)"
    for cmd in (["apt-get", "install", "-y", "-q", "wrk"], ["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "wrk"]):
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        if cmd[1] == "install" and result.returncode == 0:
            break
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is not installed and `apt-get install wrk` did not install it")
    return found, f"wrk ({found}, installed now with apt-get)"


def post_script(headers: dict[str, str], bodies: list[bytes]) -> str:
    """A wrk Lua script that POSTs the bodies round-robin (one prebuilt request each: no Lua work per request)."""
    hdr = ", ".join(f"[{json.dumps(k)}] = {json.dumps(v)}" for k, v in {**headers,
                                                                       "Content-Type": "application/json"}.items())
    items = ",\n".join(json.dumps(b.decode()) for b in bodies)
    return (
        f"local bodies = {{\n{items}\n}}\nlocal reqs = {{}}\nlocal i = 0\n"
        f"init = function(args)\n  for k, b in ipairs(bodies) do\n"
        f"    reqs[k] = wrk.format('POST', nil, {{{hdr}}}, b)\n  end\nend\n"
        "request = function()\n  i = i % #reqs + 1\n  return reqs[i]\nend\n"
    )


def _ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", value)
    if not m:
        raise ValueError(f"unexpected wrk latency {value!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse(out: str, cpu: dict[str, float]) -> WrkRun:
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s)", out)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE)
    if not (done and rate and p50 and p99):
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkRun(
        requests=int(done.group(1)), seconds=_ms(done.group(2) + done.group(3)) / 1000, rate=float(rate.group(1)),
        p50_ms=_ms(p50.group(1)), p99_ms=_ms(p99.group(1)), non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0, cpu=cpu,
    )


def tree_cpu(proc: psutil.Process) -> float:
    total = 0.0
    for p in (proc, *proc.children(recursive=True)):
        try:
            total += sum(p.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(wrk: str, url: str, script: str, connections: int, seconds: float,
            watched: dict[str, psutil.Process]) -> WrkRun:
    """One wrk run (1 thread); the CPU each watched process (and its children) used meanwhile, and wrk's own
    (`wrk`: this process's reaped children's CPU; nothing else is reaped during a run)."""
    with tempfile.TemporaryDirectory() as tmp:
        lua = Path(tmp) / "post.lua"
        lua.write_text(script)
        before = {name: tree_cpu(p) for name, p in watched.items()}
        reaped = _children_cpu()
        result = subprocess.run(
            [wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "10s", "-s", str(lua), url],
            capture_output=True, text=True, timeout=seconds + 60, check=False,
        )
        cpu = {name: tree_cpu(p) - before[name] for name, p in watched.items()}
        cpu["wrk"] = _children_cpu() - reaped
    if result.returncode != 0:
        raise RuntimeError(f"wrk exited {result.returncode}: {result.stderr or result.stdout}")
    return parse(result.stdout, cpu)
