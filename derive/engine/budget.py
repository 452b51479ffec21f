"""Bounds on every derivation step: time and memory, so that no definition can hang the tool.

SymPy's factoring and solving can run for minutes and take gigabytes on an
ordinary definition (the tanh GELU written inline, ../shared/SYMPY-NOTES.md).
A step runs under ``bounded``: a timer interrupts it when it overruns its
seconds or when the process grows past its memory allowance. A
simplification that is interrupted is abandoned and the expression before
it, which is still right, goes on; a step that must finish (differentiating)
is refused with one line.

The seconds are the process's CPU seconds, not the clock's: a step is given up
at the same point of its work on a busy machine as on a quiet one, so that
what is derived (and ``derive build``'s bytes) does not depend on the load.
The clock still bounds it, at ``WALL_FACTOR`` times the budget.

The interruption is a ``SIGALRM`` timer, so it bounds steps in the main
thread (the command line, tests); in other threads steps run unbounded.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

#: Seconds a single step may take (``--step-budget`` changes it).
STEP_SECONDS = 5.0
#: Bytes the process may grow by during one step.
STEP_MEMORY = 4 * 2 ** 30
#: A step is stopped after this many times its budget on the clock, however little CPU it had.
WALL_FACTOR = 6
_TICK = 0.05

_limits = {"seconds": STEP_SECONDS, "memory": STEP_MEMORY}
_depth = 0


class Overrun(Exception):
    """A step ran out of its time or memory allowance."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


def set_step_seconds(seconds: float) -> None:
    if not seconds > 0:
        raise ValueError(f"step budget: expected a positive number of seconds, got {seconds!r}")
    _limits["seconds"] = float(seconds)


def step_seconds() -> float:
    return _limits["seconds"]


def _resident() -> int:
    """Resident memory of this process in bytes (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@contextlib.contextmanager
def bounded(seconds: float | None = None):
    """Run the block within ``seconds`` (default: the step budget) and the memory allowance.

    Raises ``Overrun`` from inside the block when it overruns. Nested blocks
    run within the outermost one's allowance.
    """
    global _depth
    if _depth or threading.current_thread() is not threading.main_thread():
        yield
        return
    limit = _limits["seconds"] if seconds is None else seconds
    start, clock, base = time.process_time(), time.monotonic(), _resident()

    def tick(signum, frame):
        if time.process_time() - start > limit or time.monotonic() - clock > WALL_FACTOR * limit:
            raise Overrun(f"{limit:g} s")
        if base and _resident() - base > _limits["memory"]:
            raise Overrun(f"{_limits['memory'] // 2 ** 20} MB")

    previous = signal.signal(signal.SIGALRM, tick)
    signal.setitimer(signal.ITIMER_REAL, _TICK, _TICK)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def attempt(step, expr, seconds: float | None = None):
    """``(step(expr), None)``, or ``(expr, why)`` when the step overran: a simplification given up."""
    try:
        with bounded(seconds):
            return step(expr), None
    except Overrun as overrun:
        return expr, overrun.what
