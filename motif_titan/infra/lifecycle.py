"""Training workers die with their launcher.

torchrun forwards SIGTERM / SIGINT to its workers, but a launcher killed with SIGKILL (``kill -9``, the OOM killer,
a scheduler's hard stop, a lost node's supervisor) forwards nothing: its workers were reparented and went on
training and writing checkpoints with no one left to collect them. ``exit_with_launcher`` makes a worker that
torchrun started follow its launcher:

- on Linux, ``prctl(PR_SET_PDEATHSIG, SIGKILL)``: the kernel kills the worker the moment its parent exits. The
  parent may already have died between the worker's start and the call, so the parent pid is compared with the one
  read before the call right after it, and a parent that is init (pid 1, which adopts orphans) counts as gone
  unless init is torchrun itself (a container's first process);
- elsewhere (no prctl), a daemon thread polls ``os.getppid()`` once a second and kills the process when it changes.

SIGKILL, not SIGTERM: a worker blocked in a collective on a peer that is already gone would not run a Python
signal handler, and a half-finished cleanup is no better than none (checkpoints are written atomically by DCP).
"""

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1
POLL_SECONDS = 1.0
# set by torchrun's elastic agent in each worker's environment (LOCAL_RANK alone is also set for plain runs)
TORCHRUN_ENV = ("TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT")


def started_by_torchrun(environ=os.environ) -> bool:
    return "LOCAL_RANK" in environ and any(name in environ for name in TORCHRUN_ENV)


def _kill_self() -> None:
    sig = getattr(signal, "SIGKILL", None)
    if sig is None:  # Windows
        os._exit(1)
    os.kill(os.getpid(), sig)


def _set_parent_death_signal(sig: int) -> bool:
    """``prctl(PR_SET_PDEATHSIG, sig)``; False where prctl is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return False
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0


def _watch_parent(parent: int, poll_seconds: float) -> None:
    while True:
        time.sleep(poll_seconds)
        if os.getppid() != parent:
            _kill_self()


def exit_with_parent(poll_seconds: float = POLL_SECONDS) -> str:
    """Make this process exit when its parent does; returns the mechanism used ("prctl" or "watchdog")."""
    parent = os.getppid()
    if _set_parent_death_signal(int(getattr(signal, "SIGKILL", 9))):
        mechanism = "prctl"
    else:
        threading.Thread(target=_watch_parent, args=(parent, poll_seconds), name="motif-parent-watchdog",
                         daemon=True).start()
        mechanism = "watchdog"
    if _launcher_gone(parent):  # the launcher died before the death signal was armed
        _kill_self()
    return mechanism


def _launcher_gone(parent: int) -> bool:
    """Whether the parent read before arming is already gone: it changed since, or it is init (pid 1), which
    adopts orphans, unless init is the launcher itself (torchrun as a container's first process)."""
    if os.getppid() != parent:
        return True
    if parent != 1:
        return False
    try:
        return b"torch" not in Path("/proc/1/cmdline").read_bytes()
    except OSError:
        return True


def exit_with_launcher() -> str | None:
    """In a worker started by torchrun, :func:`exit_with_parent`; elsewhere nothing (returns None)."""
    if not started_by_torchrun():
        return None
    return exit_with_parent()
