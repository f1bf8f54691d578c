"""Supervised child processes: start with a parent-death signal, restart with backoff, stop and report."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from app.lifeline import die_with_parent

FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0
# A child that stayed up this long is healthy again: its next crash restarts after the first delay.
STABLE_AFTER_S = 60.0


def say(message: str) -> None:
    print(f"mm up: {message}", file=sys.stderr, flush=True)


class Backoff:
    """Restart delays that double per crash, up to a bound, and reset once the child has run stably."""

    def __init__(self, first: float = FIRST_DELAY_S, most: float = MAX_DELAY_S, stable: float = STABLE_AFTER_S) -> None:
        self.first, self.most, self.stable = first, most, stable
        self.next = first

    def after_crash(self, uptime: float) -> float:
        if uptime >= self.stable:
            self.next = self.first
        delay, self.next = self.next, min(self.next * 2, self.most)
        return delay


class Child:
    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None, *,
                 stop_signal: int = signal.SIGTERM, grace_s: float = 20.0, say: Callable[[str], None] = say,
                 ours: bool = True, **popen: Any) -> None:
        """`ours`: an `mm` entry point that calls release_stop_signals() once its handlers are in place."""
        self.name, self.argv, self.env, self.popen = name, list(argv), env, popen
        self.stop_signal, self.grace_s, self.say, self.ours = stop_signal, grace_s, say, ours
        self.proc: subprocess.Popen[bytes] | None = None
        self.backoff = Backoff()
        self.started_at = self.restart_at = self.stopped_at = 0.0
        self.signalled = False

    def start(self) -> None:
        # A group of its own: a terminal's Ctrl-C reaches only the supervisor, which stops children in order.
        # The parent-death signal covers the supervisor being killed outright.
        self.proc = subprocess.Popen(self.argv, env=self.env, process_group=0,
                                     preexec_fn=die_with_parent(self.stop_signal, self.ours), **self.popen)
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check(self, now: float) -> None:
        """Restart a child that died, after a delay that grows with repeated crashes."""
        if self.proc is None or self.proc.poll() is None:
            return
        if self.restart_at == 0.0:
            delay = self.backoff.after_crash(now - self.started_at)
            self.say(f"{self.name} exited with {_how(self.proc.returncode)}; restarting in {delay:.0f}s")
            self.restart_at = now + delay
        elif now >= self.restart_at:
            try:
                self.start()
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                delay = self.backoff.after_crash(0.0)
                self.say(f"{self.name} could not start ({exc}); retrying in {delay:.0f}s")
                self.restart_at = now + delay
                return
            self.restart_at = 0.0
            self.say(f"{self.name} restarted (pid {self.pid})")

    def stop(self) -> None:
        self.stopped_at, self.signalled = time.monotonic(), self.running()
        if self.signalled:
            assert self.proc is not None
            self.proc.send_signal(self.stop_signal)

    def wait(self) -> bool:
        """Wait out the grace period after stop(); kill a straggler. True if the child ended by itself."""
        if self.proc is None:
            return True
        if not self.signalled:
            self.say(f"{self.name} had already exited with {_how(self.proc.poll() or 0)}")
            return True
        sig = signal.Signals(self.stop_signal).name
        try:
            code = self.proc.wait(timeout=max(0.0, self.stopped_at + self.grace_s - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.say(f"{self.name} killed after {self.grace_s:.0f}s grace ({sig} did not stop it)")
            return False
        how = f"by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        self.say(f"{self.name} exited by itself {time.monotonic() - self.stopped_at:.1f}s after {sig} ({how})")
        return True


def _how(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else str(code)


def stop_together(children: Sequence[Child]) -> bool:
    """Signal every child at once, then wait for each; True if every one stopped by itself in its grace."""
    for child in children:
        child.stop()
    return all([child.wait() for child in children])
