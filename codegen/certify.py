"""Nothing is printed or written before it is checked: the derivation, then the code generated from it.

``derive()`` already refuses a gradient that SymPy's derivative of the
unrolled forward contradicts (``derive.engine.check.certify``). Here the
generated module is checked too: its backward against central finite
differences of its forward (each hyper-parameter case) and, for an op that
is not built in (a built-in op's extremes are checked by the test suite),
its values at +-1000 in float64, +-80 in float32 and 0 against the
derivation at 50 digits. A failure is one line naming what failed.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from codegen.render import module_source
from derive.define.forms import case_count
from derive.define.op import Op
from derive.engine import Mismatch, check
from derive.engine.derivation import Derivation, derive


class CodeCheckFailed(Mismatch):
    """Generated code that does not compute what was derived."""


@dataclass(frozen=True)
class Certified:
    derivation: Derivation
    source: str  # the generated module
    fd_error: float  # the largest relative error of backward against finite differences

    @property
    def summary(self) -> str:
        return (f"symbolic: {self.derivation.certificate}; finite differences: largest relative error "
                f"{self.fd_error:.1e}")


def certified(op: Op, extremes: bool | None = None) -> Certified:
    """``op`` derived and generated, every check passed (``extremes``: default, for ops not built in)."""
    return _certified(op, not op.is_builtin if extremes is None else extremes)


@lru_cache(maxsize=64)
def _certified(op: Op, extremes: bool) -> Certified:
    d = derive(op)
    source = module_source(d)
    module = check.load(op.name, source)
    worst = 0.0
    for form in op.all_forms:  # an op with options: every form derived (and so checked), and its code checked
        found = derive(form)
        where = op.name + (f" ({', '.join(f'{k}={v!r}' for k, v in form.chosen)})" if form.chosen else "")
        cases = case_count(form)
        for case in range(cases):
            hyper = check.hyper_values(form, case)
            inputs = check.sample(form, check.example_sizes(form), np.random.default_rng(case), hyper=hyper)
            fd = check.finite_differences(form, module, inputs, hyper, seed=case)
            if not fd.passed:
                name = max(fd.errors, key=lambda k: (fd.errors[k] != fd.errors[k], fd.errors[k]))  # NaN first
                error = fd.errors[name]
                how = "is not a number at the sample inputs (is the definition defined there?)" if error != error \
                    else f"disagrees with finite differences of its forward (relative error {error:.1e})"
                raise CodeCheckFailed(f"{where}: the generated backward's d{name} {how}; nothing is written")
            worst = max(worst, fd.max_error)
        if extremes:
            for dtype in (np.float64, np.float32):
                problems = check.extremes(found, module, dtype)
                if problems:
                    raise CodeCheckFailed(f"{where} in {np.dtype(dtype).name}: {problems[0]}; the engine has no "
                                          f"stable form for this definition yet (write it with the functions it "
                                          f"names: tanh, sigma, softplus, log-sum-exp)")
    return Certified(d, source, worst)
