"""Worker processes of the stages: how many there may be, and how they end with their parent.

A stage interrupted by Ctrl-C stops its pool itself; one killed outright (kill -9, the OOM
killer) cannot, and its workers would each print a BrokenPipeError traceback when they next
send a result. Workers therefore ignore Ctrl-C and die with their parent, quietly.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# Printed by multiprocessing's resource tracker when the parent was killed before it could
# release its pool's semaphores: the tracker releases them, so the warning says nothing useful.
_TRACKER_WARNING = "ignore:resource_tracker:UserWarning"


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def quiet_after_kill() -> None:
    """Called in the parent before its pool starts: the resource tracker and the workers it spawns
    inherit the warning filter."""
    filters = os.environ.get("PYTHONWARNINGS", "")
    if _TRACKER_WARNING not in filters:
        os.environ["PYTHONWARNINGS"] = ",".join(f for f in (filters, _TRACKER_WARNING) if f)


def start_worker() -> None:
    """Called first in every worker process (of multiprocessing, which records its parent)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if sys.platform.startswith("linux") and parent is not None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent.pid:  # it died before the request took effect: this one would wait forever
            os._exit(1)
