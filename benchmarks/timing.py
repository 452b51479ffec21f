"""Timing that tolerates a busy machine: interleaved repeats, medians, spreads; peak memory.

Each round runs every candidate once, in an order that rotates from round
to round, so that a burst of load from elsewhere hits all of them alike.
A sample starts with one untimed call (what the previous candidate left
behind, such as another library's threads still spinning, is not counted)
and repeats its candidate enough times to last about ``TARGET`` seconds,
with the garbage collector off (as ``timeit`` does).

NumPy's OpenBLAS threads spin for about 0.1 s after each matrix product
before they sleep, holding the cores that PyTorch's threads need next:
``quiet_blas()`` shortens that wait, and must run before NumPy is imported.
"""
from __future__ import annotations

import gc
import os
import statistics
import time
import tracemalloc
from dataclasses import dataclass

TARGET = 0.02  # seconds per sample


@dataclass(frozen=True)
class Timing:
    """Seconds per call, one number per round."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def best(self) -> float:
        """The fastest round: load from elsewhere only ever slows a round down."""
        return min(self.samples)

    @property
    def spread(self) -> float:
        """The interquartile range relative to the median (0.05: the middle half lies within 5 %)."""
        if len(self.samples) < 4:
            return (max(self.samples) - min(self.samples)) / self.median
        q1, _, q3 = statistics.quantiles(self.samples, n=4)
        return (q3 - q1) / self.median


def interleaved(candidates: dict, rounds: int) -> dict[str, Timing]:
    """Time each zero-argument callable ``rounds`` times, interleaved; name -> Timing."""
    names = list(candidates)
    loops = {name: _calibrate(candidates[name]) for name in names}
    samples = {name: [] for name in names}
    for r in range(rounds if names else 0):
        gc.collect()
        for name in names[r % len(names):] + names[:r % len(names)]:
            samples[name].append(_sample(candidates[name], loops[name]))
    return {name: Timing(tuple(s)) for name, s in samples.items()}


def _calibrate(fn) -> int:
    """How many calls make a sample of about TARGET seconds (after one warm-up call)."""
    fn()
    once = _sample(fn, 1)
    return max(1, round(TARGET / max(once, 1e-9)))


def quiet_blas() -> None:
    """Let OpenBLAS threads sleep almost at once when idle (2^4 cycles, not 2^28); thread counts stay the defaults."""
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")


def _sample(fn, loops: int) -> float:
    fn()
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        return (time.perf_counter() - start) / loops
    finally:
        if enabled:
            gc.enable()


def peak_memory(fn) -> int:
    """Bytes allocated at the peak of one call to ``fn``, beyond what existed before (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
