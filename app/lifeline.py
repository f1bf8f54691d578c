"""Children that die with their parent: Linux's parent-death signal, set between fork and exec."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A `preexec_fn` that makes the child receive `sig` when the process that spawned it dies.

    The setting survives exec (not setuid exec) and comes after Popen's user switch, so it holds for a
    server run as another user too. A parent that died before the call is caught by the getppid check.
    """
    parent = os.getpid()

    def hook() -> None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
                os._exit(70)  # no safety net: refuse to run rather than risk an orphan
        if os.getppid() != parent:
            os._exit(70)  # orphaned already: the signal was sent before we asked for it

    return hook
