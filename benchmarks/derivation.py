"""How long ``derive build`` takes, cold (empty cache) and warm (every derivation cached).

Each measurement runs in a fresh interpreter, as a user's would: the
whole ``derive build`` command for the totals, and ``python -m
benchmarks.derivation CACHE`` for the split per op, which does the build's
work op by op (derive or load, print code and LaTeX, check against finite
differences) and prints the seconds as JSON.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class BuildTimes:
    """Wall-clock seconds of ``derive build`` and the per-op split, cold and warm."""

    cold: float
    warm: float
    per_op: dict  # op -> {"cold": {...stage: s}, "warm": {...}}


def measure() -> BuildTimes:
    """Run ``derive build`` cold then warm against a new, empty cache directory."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DERIVE_CACHE_DIR": str(Path(tmp) / "cache"),
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        totals = []
        for _ in ("cold", "warm"):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "derive", "build", "--out", str(Path(tmp) / "out")],
                           cwd=ROOT, env=env, check=True, capture_output=True)
            totals.append(time.perf_counter() - start)
        split = {}
        env["DERIVE_CACHE_DIR"] = str(Path(tmp) / "split")
        for kind in ("cold", "warm"):
            result = subprocess.run([sys.executable, "-m", "benchmarks.derivation"], cwd=ROOT, env=env,
                                    check=True, capture_output=True, text=True)
            for op, stages in json.loads(result.stdout).items():
                split.setdefault(op, {})[kind] = stages
    return BuildTimes(totals[0], totals[1], split)


def per_op_stages() -> dict:
    """Seconds per op for each stage of the build, with the cache in ``$DERIVE_CACHE_DIR``."""
    import numpy as np

    from codegen.document.article import article_files
    from codegen.render import module_source, op_latex
    from derive.engine import check
    from derive.engine.cache import DerivationCache, using
    from derive.engine.derivation import derive
    from derive.define.registry import registry

    stages = {}
    with using(DerivationCache()):
        for name, op in registry().items():
            start = time.perf_counter()
            d = derive(op)
            derived = time.perf_counter()
            source = module_source(d)
            for lang in ("en", "zh"):
                op_latex(d, lang)
            printed = time.perf_counter()
            inputs = check.sample(op, check.example_sizes(op), np.random.default_rng(0))
            check.finite_differences(op, check.load(name, source), inputs, check.hyper_values(op))
            stages[name] = {"derive": derived - start, "print": printed - derived,
                            "check": time.perf_counter() - printed}
        start = time.perf_counter()
        article_files()
        stages["(article network)"] = {"print": time.perf_counter() - start}  # its chain rule, and its LaTeX
    return stages


if __name__ == "__main__":
    json.dump(per_op_stages(), sys.stdout)
