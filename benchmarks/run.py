"""``derive bench``: generated code against its peers, ``derive build`` cold and warm, a size sweep.

Everything runs in this one process (``derive build`` in fresh ones), with
interleaved repeats; tables are Markdown, so that they paste into the README.
"""
from __future__ import annotations

import os
import platform
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from derive.engine.derivation import derive_afresh
from derive.define.registry import registry

from . import blas, references
from .cases import VARIANTS, Case, NotBenchmarked, bench_forms, bench_sizes
from .derivation import measure
from .svg import sweep_svg
from .timing import interleaved, peak_memory

DTYPES = {"float64": np.float64, "float32": np.float32}
#: (op, peer, largest allowed generated/peer time ratio in float64, in float32); every op must also beat autograd.
FLOORS = (("linear", "bare", 1.05, 1.05), ("conv2d", "torch", 1.2, 2.0), ("conv2d dilation=2", "torch", 1.5, 2.0),
          ("conv2d dilation=2 groups=4", "torch", 1.5, 2.0),
          ("max_pool2d", "torch", 1.5, 1.5),
          ("batch_norm", "torch", 1.5, 2.0), ("batch_norm_eval", "torch", 1.5, 2.0), ("layer_norm", "torch", 1.5, 2.0),
          ("softmax", "torch", 1.5, 2.0), ("softmax_cross_entropy", "torch", 1.5, 2.0),
          ("softmax_cross_entropy[target=labels]", "torch", 1.5, 2.0),
          ("rms_norm", "torch", 2.0, 2.0), ("group_norm", "torch", 2.0, 2.0), ("attention", "torch", 1.5, 1.5),
          ("lstm_cell", "torch", 2.0, 2.0), ("gru_cell", "torch", 2.0, 2.0))
#: The same for two of examples/, measured when given (``derive bench --ops examples/causal_attention.py``).
EXAMPLE_FLOORS = (("causal_attention", "torch", 2.0, 2.0), ("residual_block", "torch", 1.5, 1.5))
#: (peer, largest allowed ratio) for every elementwise op (flat, not a loss), both dtypes.
ELEMENTWISE_FLOORS = (("torch", 3.0), ("limit", 2.0))
BUILD_FLOORS = {"cold": 30.0, "warm": 2.0}
SWEEP = (1 / 8, 1 / 4, 1 / 2, 1, 2)  # batch scales
#: Largest relative difference from a peer that still counts as agreeing.
AGREE = {np.float64: 1e-8, np.float32: 1e-3}


@dataclass
class Result:
    """One op at one dtype: timings by peer, agreement with each reference, peak memory."""

    case: Case
    times: dict
    differences: dict
    memory: dict

    def ratio(self, peer: str, statistic: str = "median"):
        """Generated time over the peer's: of the medians, or of the best rounds (``"best"``)."""
        if peer not in self.times:
            return None
        return getattr(self.times["generated"], statistic) / getattr(self.times[peer], statistic)


def run(ops=None, dtypes=("float64", "float32"), rounds=15, sweep=True, build=True, plot=None, out=sys.stdout):
    """Print every table for ``ops`` (default: the registry); write the sweep plot to ``plot`` if given.

    Returns whether every floor that was measured is met.
    """
    ops = list(registry().values()) if ops is None else list(ops)
    say = lambda *lines: print(*lines, sep="\n", file=out, flush=True)  # noqa: E731
    say(*_machine(), "")
    others = OtherLoad()

    notes, cases = [], []
    for op in ops:
        try:
            cases += [Case(form, DTYPES[dtype], *bench_sizes(form), variant=dict(variant)) for form in bench_forms(op)
                      for dtype in dtypes for variant in ({}, *VARIANTS.get(form.name, ()))]
        except NotBenchmarked as why:
            notes.append(f"skipped {why}")
    results = _measure(cases, rounds)
    for library in ("torch", "autograd"):
        if not references.available(library):
            notes.append(f"{library} is not installed (pip install -e '.[bench]'): its column is empty")
    missing = [op.name for op in ops if op.bench_sizes and references.available("torch")
               and not references.torch_reference(op)]
    if missing:
        notes.append(f"no PyTorch reference in benchmarks/references.py for {', '.join(missing)}")

    say("## Forward + backward, generated NumPy against its peers", "", *_results_table(results), "")
    for note in notes:
        say(f"- {note}")
    floor_rows = _floor_rows(results, ops)
    disagreeing = [f"{r.case.name} {np.dtype(r.case.dtype).name} vs {peer}" for r in results
                   for peer, difference in r.differences.items() if not difference <= AGREE[r.case.dtype]]
    if results:
        floor_rows.append(("every peer computes what the generated code does", "",
                           f"disagree: {', '.join(disagreeing)}" if disagreeing else "all agree", "",
                           "1e-8 (float64), 1e-3 (float32)", "NO" if disagreeing else "yes"))
    build_times = None
    if build:
        build_times = measure()
        say("", "## `derive build`, cold (empty cache) and warm (every derivation cached)", "",
            *_build_table(build_times), "")
        for kind, limit in BUILD_FLOORS.items():
            seconds = getattr(build_times, kind)
            floor_rows.append((f"`derive build` {kind}", "", f"{seconds:.1f} s", "", f"< {limit:g} s",
                               "yes" if seconds < limit else "NO"))
    say("", "## Floors", "", *_table(("floor", "dtype", "measured: ratio of medians (of best rounds)",
                                      "bare (least-work NumPy) vs the same peer", "limit", "met"), floor_rows), "")
    met = all(not row[-1].startswith("NO") for row in floor_rows)

    if sweep:
        cold = {op: s["cold"]["derive"] for op, s in build_times.per_op.items() if "derive" in s["cold"]} \
            if build_times else {}
        panels, rows = _sweep(ops, max(3, rounds // 3), cold)
        say("", "## Size sweep (float64): time grows with the batch, the derivation does not", "",
            *_table(("op", "batch", "generated", "torch", "autograd", "bare", "derivation (once)"), rows), "")
        if plot:
            Path(plot).write_text(sweep_svg(panels, "Forward + backward time against batch size (float64), "
                                                   "and the one-off symbolic derivation"), encoding="utf-8")
            say(f"plot written to {plot}")
    say(f"load average at the end: {_load()}; {others.report()}")
    if (others.cores() or 0) > 0.2:
        say("WARNING: other processes were busy during this run. PyTorch's threads wait for each other when "
            "another process holds a core, and its times can grow tenfold: run again when the machine is quiet.")
    return met


def _measure(cases: list, rounds: int) -> list[Result]:
    """Every case's peers and its copy limit timed in the same rounds, agreement and memory checked once each."""
    peers = [case.peers() for case in cases]
    times = _time_together([found | {"limit": case.copies()} for case, found in zip(cases, peers)], rounds)
    results = []
    for case, found, timed in zip(cases, peers, times):
        differences = {p: case.disagreement(found[p]) for p in ("torch", "autograd") if p in found}
        memory = {p: peak_memory(found[p]) for p in ("generated", "autograd") if p in found}
        results.append(Result(case, timed, differences, memory))
    return results


def _time_together(peers: list, rounds: int) -> list[dict]:
    """Time the peers of all cases interleaved in one set of rounds.

    A burst of load from elsewhere, lasting seconds, then spoils a few
    rounds of every case (which the median ignores) rather than every
    round of one case.
    """
    flat = interleaved({(number, name): fn for number, found in enumerate(peers) for name, fn in found.items()},
                       rounds)
    return [{name: flat[number, name] for name in found} for number, found in enumerate(peers)]


# -- tables ---------------------------------------------------------------------

def _results_table(results) -> list[str]:
    peers = ("bare", "torch", "autograd", "limit")
    headers = ("op", "dtype", "inputs", "generated", *peers, *(f"gen/{p}" for p in peers),
               "peak MiB gen (autograd)", "max diff torch, autograd")
    rows = []
    for r in results:
        c = r.case
        tolerance = AGREE[c.dtype]
        diffs = ", ".join(f"{r.differences[p]:.0e}{'' if r.differences[p] <= tolerance else ' DISAGREE'}"
                          if p in r.differences else "—" for p in ("torch", "autograd"))
        memory = _mib(r.memory["generated"]) + (f" ({_mib(r.memory['autograd'])})" if "autograd" in r.memory else "")
        rows.append((c.name, np.dtype(c.dtype).name, c.shapes,
                     *(_time(r.times.get(p)) for p in ("generated", *peers)),
                     *(_ratio(r.ratio(p)) for p in peers), memory, diffs))
    return _table(headers, rows)


def is_elementwise(op) -> bool:
    """One output element from the same element of each input: what ELEMENTWISE_FLOORS hold to."""
    return op.shape_kind == "flat" and not op.is_loss


def _floor_rows(results, ops) -> list:
    """(floor, dtype, measured, least-work NumPy against the same peer, limit, met) for every floor measured."""
    rows = []
    names = {op.name for op in ops}
    wanted = [(op, peer, {"float64": f64, "float32": f32}) for op, peer, f64, f32 in FLOORS]
    wanted += [(op, peer, {"float64": f64, "float32": f32}) for op, peer, f64, f32 in EXAMPLE_FLOORS if op in names]
    wanted += [(op.name, peer, {"float64": limit, "float32": limit})
               for op in ops if is_elementwise(op) for peer, limit in ELEMENTWISE_FLOORS]
    for op, peer, limits in wanted:
        base = op.split()[0].partition("[")[0]  # a variant's op (``conv2d dilation=2``), a form's (``[target=labels]``)
        if base not in registry() and base not in names:
            rows.append((f"{op} vs {peer}", "", "not in the registry yet", "", _limits(limits), "—"))
        if base not in names:
            continue
        found = [r for r in results if r.case.name == op]
        if not found:
            rows.append((f"{op} vs {peer}", "", "not measured (no sizes or module)", "", _limits(limits), "—"))
        for r in found:
            dtype = np.dtype(r.case.dtype).name
            limit = limits[dtype]
            ratio, best = r.ratio(peer), r.ratio(peer, "best")
            met = "—" if ratio is None else _verdict(ratio <= limit, best <= limit)
            bare = "—" if peer == "bare" or "bare" not in r.times or peer not in r.times \
                else _ratio(r.times["bare"].median / r.times[peer].median)
            rows.append((f"{op} vs {peer}", dtype, _ratios(ratio, best), bare, f"<= {limit:g}x", met))
    compared = [r for r in results if r.ratio("autograd") is not None]
    if compared:
        slower = [r for r in compared if r.ratio("autograd") >= 1]
        slower_at_best = [r for r in compared if r.ratio("autograd", "best") >= 1]
        worst = max(compared, key=lambda r: r.ratio("autograd"))
        dtypes = ", ".join(sorted({np.dtype(r.case.dtype).name for r in compared}))
        named = lambda r: (f"{r.case.name} {np.dtype(r.case.dtype).name} "  # noqa: E731
                           f"{_ratios(r.ratio('autograd'), r.ratio('autograd', 'best'))}")
        measured = f"slower: {', '.join(map(named, slower))}" if slower else f"slowest: {named(worst)}"
        rows.append(("every op faster than autograd", dtypes, measured, "", "< 1x",
                     _verdict(not slower, not slower_at_best)))
    return rows


def _limits(limits: dict) -> str:
    values = sorted(set(limits.values()))
    return f"<= {values[0]:g}x" if len(values) == 1 else ", ".join(f"<= {v:g}x ({d})" for d, v in limits.items())


def _verdict(by_median: bool, by_best: bool) -> str:
    """yes / NO from the medians; flagged when the best rounds say otherwise (outside load)."""
    verdict = "yes" if by_median else "NO"
    return verdict if by_median == by_best else f"{verdict} (best rounds: {'yes' if by_best else 'no'}; noisy)"


def _ratios(median, best) -> str:
    return f"{_ratio(median)} (best {_ratio(best)})"


def _build_table(times) -> list[str]:
    lines = _table(("op", "derive (cold)", "load from cache (warm)", "code + LaTeX", "finite differences"),
                   [(op, _ms(s["cold"].get("derive")), _ms(s["warm"].get("derive")), _ms(s["warm"]["print"]),
                     _ms(s["warm"].get("check"))) for op, s in times.per_op.items()])
    return lines + ["", f"Whole `derive build` (fresh interpreter, imports included): "
                        f"cold {times.cold:.1f} s, warm {times.warm:.1f} s."]


def _sweep(ops, rounds, derivation_times):
    """Each op at every batch scale; its derivation time (from a cold build if measured) is one number."""
    swept = []
    for op in ops:
        try:
            swept.append((op, [Case(op, np.float64, *bench_sizes(op, scale)) for scale in SWEEP]))
        except NotBenchmarked:
            continue
    times = iter(_time_together([case.peers() for _, cases in swept for case in cases], rounds))
    panels, rows = [], []
    for op, cases in swept:
        derivation = derivation_times.get(op.name)
        if derivation is None:
            start = time.perf_counter()
            derive_afresh(op)
            derivation = time.perf_counter() - start
        batch = op.sizes[0]
        lines = {}
        for case in cases:
            timed = next(times)
            size = case.sizes[batch]
            for peer, timing in timed.items():
                lines.setdefault(peer, []).append((size, timing.median))
            lines.setdefault("derivation", []).append((size, derivation))
            rows.append((op.name, f"{batch}={size}", *(_time(timed.get(p)) for p in ("generated", "torch", "autograd",
                                                                                       "bare")),
                         _ms(derivation)))
        panels.append((op.name, f"batch {batch}", lines))
    return panels, rows


def _table(headers, rows) -> list[str]:
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows]


def _time(timing) -> str:
    if timing is None:
        return "—"
    return f"{timing.median * 1e3:.3g} ms ±{timing.spread * 100:.0f}%"


def _ratio(ratio) -> str:
    return "—" if ratio is None else f"{ratio:.2f}x"


def _ms(seconds) -> str:
    return "—" if seconds is None else f"{seconds * 1e3:.3g} ms"


def _mib(n: int) -> str:
    return f"{n / 2 ** 20:.1f}"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "unknown"


class OtherLoad:
    """How busy other processes kept the machine since this was made: all CPU time less our own (Linux)."""

    def __init__(self):
        self.start = (time.perf_counter(), _busy_seconds(), _own_seconds())

    def cores(self):
        """How many cores other processes kept busy on average so far (None where unknown)."""
        busy = _busy_seconds()
        if busy is None:
            return None
        wall, busy0, own0 = self.start
        others = (busy - busy0) - (_own_seconds() - own0)
        return max(others, 0.0) / (time.perf_counter() - wall)

    def report(self) -> str:
        cores = self.cores()
        if cores is None:
            return "CPU time of other processes: unknown on this system"
        return f"other processes used {cores:.2f} of {os.cpu_count()} cores on average during this run"


def _busy_seconds():
    """CPU seconds spent not idle, by every process, since boot (None where /proc/stat is missing)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _machine() -> list[str]:
    lines = [f"Machine: {platform.machine()} ({_cpu()}), {os.cpu_count()} cores, Python {platform.python_version()}, "
             f"NumPy {np.__version__}; load average at the start: {_load()}"]
    lines[0] += f", OPENBLAS_THREAD_TIMEOUT={os.environ.get('OPENBLAS_THREAD_TIMEOUT', 'unset')}"
    lines += blas.describe()
    if references.available("torch"):
        import torch
        found = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
        lines.append(f"PyTorch {torch.__version__} (its BLAS: {found.group(1) if found else 'unknown'}), "
                     f"{torch.get_num_threads()} threads (its default)")
    if references.available("autograd"):
        from importlib.metadata import version
        lines.append(f"HIPS autograd {version('autograd')}")
    lines.append("Times are medians of interleaved rounds; ±: interquartile range over the median. "
                 "gen/x: generated time over x's (below 1: generated is faster). limit: every input and output "
                 "(dout and the gradients too) copied once into arrays made beforehand, the bytes an op must move "
                 "and no arithmetic; a copy reads and writes each array, so an op that makes one pass, such as "
                 "relu, can come under it (matrix products and convolutions are bound by arithmetic instead).")
    return lines


def _cpu() -> str:
    """The CPU's model name (Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or "CPU unknown"
