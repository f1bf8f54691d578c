"""Children that die with their parent: Linux's parent-death signal, set between fork and exec."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def die_with_parent(sig: int = signal.SIGTERM, hold_stop_signals: bool = False) -> Callable[[], None]:
    """A `preexec_fn` that makes the child receive `sig` when the process that spawned it dies.

    The setting survives exec (not setuid exec) and comes after Popen's user switch, so it holds for a
    server run as another user too. A parent that died before the call is caught by the getppid check.

    `hold_stop_signals` blocks SIGINT/SIGTERM in the child (the mask survives exec): a stop that arrives
    while the interpreter starts stays pending until the entry point has its handlers and calls
    `release_stop_signals`, so even a child stopped the moment it started exits cleanly.
    """
    parent = os.getpid()

    def hook() -> None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
                os._exit(70)  # no safety net: refuse to run rather than risk an orphan
        if os.getppid() != parent:
            os._exit(70)  # orphaned already: the signal was sent before we asked for it
        if hold_stop_signals:
            signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)

    return hook


def release_stop_signals() -> None:
    """Deliver any held SIGINT/SIGTERM; call once the process's own handlers are installed."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
