"""CPU priority of the operator-facing processes (the API, nginx, the dashboard).

On a small machine every service shares the same cores; at equal niceness an operator's
read waits behind the pipeline's batch work (the broker's fetch passes, inference,
writes) for its turn. These processes run at ``settings.operator_nice`` (-5 by default)
so they get a core first; the pipeline keeps 0. Lowering a niceness needs root or
CAP_SYS_NICE: without it the process warns and keeps its niceness.
"""

from __future__ import annotations

import contextlib
import logging
import os

log = logging.getLogger(__name__)


def set_niceness(niceness: int, what: str = "this process") -> bool:
    """Run this process, every thread it has and those it starts from now on, at
    ``niceness``; ``False`` (and a warning) where the system does not allow it."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if niceness == current:
        return True
    # Linux keeps a niceness per thread: set the threads already started too.
    try:
        threads = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]
    try:
        for thread in threads:
            with contextlib.suppress(ProcessLookupError):  # ended since it was listed
                os.setpriority(os.PRIO_PROCESS, thread, niceness)
    except PermissionError:
        log.warning(
            "cannot set niceness %d (needs root or CAP_SYS_NICE): %s runs at %d, and"
            " queues behind the pipeline's work for a core",
            niceness,
            what,
            current,
        )
        return False
    log.info("%s at niceness %d (was %d)", what, niceness, current)
    return True
