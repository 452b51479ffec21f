"""Two independent proofs that a derived gradient is right (../shared/GRADCHECK.md).

* ``brute_force``: at tiny explicit sizes, unroll the forward definition,
  differentiate it element by element with SymPy, and show that the
  index-form gradient equals it exactly (the difference cancels to 0).
* ``finite_differences``: run the generated NumPy code in float64 and
  compare ``backward`` with central differences of ``sum(forward * dout)``.
"""
from __future__ import annotations

import itertools
import types
from dataclasses import dataclass

import mpmath
import numpy as np
import sympy as sp

from derive.define.forms import keywords
from derive.define.functions import written_out
from derive.define.op import Op
from derive.define.symbols import FirstMax, Iverson, as_piecewise
from derive.engine import Mismatch
from derive.engine.backprop import expanded
from derive.engine.budget import attempt
from derive.engine.derivation import Derivation, upstream_of
from derive.engine.rewrite import inline

STEP = 1e-6
RTOL, ATOL = 1e-5, 1e-7


# -- sizes and sample inputs -----------------------------------------------

def example_sizes(op: Op, small: bool = False) -> dict:
    """Concrete sizes for checks: distinct small numbers, so a transposed index shows.

    An op whose sizes must fit together (a kernel no larger than its image)
    gives its own in ``test_sizes`` (and ``small_sizes`` for exact checks).
    """
    values = itertools.cycle((2, 3, 1, 4) if small else (3, 4, 2, 5))
    sizes = {s: next(values) for s in op.sizes}
    given = op.small_sizes if small else op.test_sizes
    sizes.update({s: v for s, v in given.items() if s in sizes})
    return sizes


def certification_sizes(op: Op) -> dict:
    """The sizes every derivation is checked at before it is used: at most 2 per axis (the op's own
    ``small_sizes`` where it gives them), small enough to unroll any layer in a second or two; the
    tests check the built-in ops at larger sizes too."""
    sizes = {s: min(v, 2) for s, v in example_sizes(op, small=True).items()}
    sizes.update({s: v for s, v in op.small_sizes.items() if s in sizes})
    return sizes


def example_shape(op: Op, inp, sizes: dict, leading=(2,)) -> tuple:
    """The array shape of an input at these sizes (leading ops get extra leading axes)."""
    shape = tuple(int(sp.sympify(s).subs(sizes)) for s in inp.shape)
    if op.shape_kind == "flat":
        return (2, shape[0] // 2) if shape[0] % 2 == 0 else shape
    if op.shape_kind == "leading" and inp.shape[0] == op.inputs[0].shape[0]:
        return tuple(leading) + shape
    return shape


def sample(op: Op, sizes: dict, rng: np.random.Generator, dtype=np.float64, leading=(2,), hyper=None) -> dict:
    """Random inputs from each input's domain, away from kinks and poles.

    ``hyper`` (by name; each one's default where not given) fixes the sizes that follow from a
    hyper-parameter: a grouped conv2d's weight has C / groups channels.
    """
    if op.derived_sizes:
        sizes = {**sizes, **with_hyper(op, sizes, {**hyper_values(op), **(hyper or {})})}
    arrays = {}
    for inp in op.inputs:
        shape = example_shape(op, inp, sizes, leading)
        if inp.domain == "index":
            bound = int(sp.sympify(index_bound(op, inp)).subs({s: sp.Integer(v) for s, v in sizes.items()}))
            arrays[inp.name] = rng.integers(0, bound, shape)
        else:
            arrays[inp.name] = _draw(inp.domain, shape, rng).astype(dtype)
    return arrays


def as_dtype(op: Op, arrays: dict, dtype) -> dict:
    """Inputs converted to ``dtype``, integer (index) inputs left as they are."""
    return {k: v if op.input(k).domain == "index" else np.asarray(v).astype(dtype) for k, v in arrays.items()}


def _draw(domain: str, shape, rng) -> np.ndarray:
    if domain == "real":
        return rng.standard_normal(shape)
    if domain == "nonzero":
        return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.1, 2.0, shape)
    if domain == "positive":
        return rng.uniform(0.5, 2.0, shape)
    if domain == "probability":
        return rng.uniform(0.05, 0.95, shape)
    if domain == "simplex":
        p = rng.uniform(0.1, 1.0, shape)
        return p / p.sum(axis=-1, keepdims=True)
    if domain == "mask":
        return rng.integers(0, 2, shape).astype(float)
    if domain == "index":
        raise ValueError("domain: integer inputs are drawn by sample(), which knows their range")
    raise ValueError(f"domain: unknown {domain!r}")


def hyper_values(op: Op, case: int = 0, resolve: bool = False) -> dict:
    """The ``case``-th test value of each hyper-parameter (its default for case 0).

    With ``resolve``, a None that stands for another hyper-parameter (pooling's
    stride) is replaced by that one's value, as the generated code does.
    """
    values = {h.name: (h.cases[case % len(h.cases)] if h.cases else h.default) for h in op.hyper}
    values.update(keywords(op, case))  # the form's options (the generated forward runs that form), its axes
    if resolve:
        for h in op.hyper:
            if values[h.name] is None and h.default_to:
                values[h.name] = values[h.default_to]
    return values


def with_hyper(op: Op, sizes: dict, values: dict) -> dict:
    """The sizes with the whole-number hyper-parameters (stride, causal) that shape the sums, and the
    sizes that follow from them (group norm's K = C / groups), as SymPy integers."""
    found = {s: sp.Integer(v) for s, v in sizes.items()}
    found.update({s: sp.Integer(int(v)) for h in op.hyper if h.whole for s, v in h.bind(values[h.name]).items()})
    for size, rule in op.derived_sizes.items():
        value = sp.sympify(rule).subs(found)
        if not value.is_integer:
            raise ValueError(f"sizes: {op.name}'s {size} = {rule} is {value} at {_sizes_text(found)}, not a whole number")
        found[size] = value
    return found


# -- the generated module ---------------------------------------------------

def load(name: str, source: str) -> types.ModuleType:
    """Run generated source (our own, never user text) as a module."""
    module = types.ModuleType(f"generated.{name}")
    exec(compile(source, f"<generated {name}>", "exec"), module.__dict__)
    return module


@dataclass
class FiniteDifference:
    """Per input: the largest relative error, and whether every element is within tolerance."""

    errors: dict
    passed: bool

    @property
    def max_error(self) -> float:
        return max(self.errors.values(), default=0.0)


def as_outputs(op: Op, value) -> tuple:
    """A forward's result (or a backward's upstream gradient) as one array per output: an op with
    several outputs (an LSTM's h' and c') takes and gives a tuple."""
    return tuple(value) if op.also_outputs else (value,)


def upstream_like(op: Op, out, draw):
    """An upstream gradient for ``out`` as backward takes it, each output's drawn by ``draw(shape)``."""
    grads = tuple(draw(np.shape(v)) for v in as_outputs(op, out))
    return grads if op.also_outputs else grads[0]


def finite_differences(op: Op, module, inputs: dict, hyper: dict, seed: int = 0) -> FiniteDifference:
    """Central differences of ``L = sum(forward(...) * dout)`` against ``backward``, in float64."""
    rng = np.random.default_rng([seed, 1])  # not the stream the inputs came from: dout = x hides errors
    out, cache = module.forward(**inputs, **hyper)
    dout = 1.0 if op.is_loss else upstream_like(op, out, rng.standard_normal)
    grads = module.backward(dout, cache)

    def objective(arrays):
        value, _ = module.forward(**arrays, **hyper)
        return sum(float(np.sum(np.asarray(v) * g)) for v, g in zip(as_outputs(op, value), as_outputs(op, dout)))

    errors, passed = {}, True
    for inp in op.differentiable:
        base = inputs[inp.name]
        numeric = np.zeros_like(base)
        for idx in np.ndindex(base.shape):
            h = STEP * max(1.0, abs(base[idx]))
            plus, minus = dict(inputs), dict(inputs)
            plus[inp.name], minus[inp.name] = base.copy(), base.copy()
            plus[inp.name][idx] += h
            minus[inp.name][idx] -= h
            numeric[idx] = (objective(plus) - objective(minus)) / (2 * h)
        analytic = grads[inp.name]
        # Relative to each element, but never to less than 1e-4 of the array's largest entry:
        # batch norm's input gradient sums to 0, and its near-zero entries would read as noise.
        floor = 1e-4 * float(np.max(np.abs(numeric), initial=0.0))
        scale = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), floor)
        rel = np.where(scale > 0, np.abs(analytic - numeric) / np.where(scale > 0, scale, 1), 0.0)
        finite = np.isfinite(analytic).all() and np.isfinite(numeric).all()
        errors[inp.name] = (float(rel.max()) if rel.size else 0.0) if finite else float("nan")
        passed &= bool(np.all(np.abs(analytic - numeric) <= ATOL + RTOL * np.abs(numeric)))
    return FiniteDifference(errors, passed)


# -- extreme inputs ---------------------------------------------------------------

#: How large the inputs of the extreme check are: every true value is representable there.
EXTREME = {np.float64: 1000.0, np.float32: 80.0}


def extremes(d: Derivation, module, dtype=np.float64, seed: int = 0) -> list[str]:
    """Where the generated code is not finite, or not right, at extreme inputs: one line each.

    Real inputs are set to +-1000 (float64) or +-80 (float32) plus their sampled values, then
    all to 0 (where a naive form divides by zero: SiLU's x/(1 + e^{-x}) folded by inversion); the
    output and every gradient are compared with the derivation evaluated at 50 digits. A true
    value that is not representable in the dtype is not compared.
    """
    op = d.op
    sizes = example_sizes(op, small=True)
    rng = np.random.default_rng([seed, 7])
    base = sample(op, sizes, rng, leading=())
    big = EXTREME[dtype]
    runs = []
    scaled = dict(base)
    for inp in op.differentiable:
        if inp.domain in ("real", "nonzero"):
            scaled[inp.name] = np.sign(base[inp.name] + 1e-9) * big + base[inp.name]
    runs.append(("+-%g" % big, scaled))
    zeros = {k: (np.zeros_like(v) if op.input(k).domain == "real" and op.input(k).differentiable else v)
             for k, v in base.items()}
    if any(zeros[k] is not base[k] for k in base):
        runs.append(("0", zeros))
    problems = []
    for label, inputs in runs:
        inputs = as_dtype(op, inputs, dtype)
        hyper = hyper_values(op)
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            try:
                out, cache = module.forward(**inputs, **hyper)
                dout = 1.0 if op.is_loss else upstream_like(
                    op, out, lambda shape: (rng.choice([-1.0, 1.0], shape) * rng.uniform(0.5, 2, shape)).astype(dtype))
                grads = module.backward(dout, cache)
            except FloatingPointError as error:
                problems.append(f"at inputs {label}: the generated code raised a floating-point warning: {error}")
                continue
        expected = reference(d, sizes, inputs, hyper, dout)
        got = {y.name: np.asarray(v) for y, v in zip(op.outputs, as_outputs(op, out))} \
            | {k: np.asarray(v) for k, v in grads.items()}
        scale = max([float(np.max(np.abs(v), initial=0.0)) for v in inputs.values()]
                    + [float(np.max(np.abs(g))) for g in as_outputs(op, dout)])
        for name, want in expected.items():
            problem = _compare(name, np.reshape(got[name], np.shape(want)), want, dtype, scale)
            if problem:
                problems.append(f"at inputs {label}: {problem}")
    return problems


def _compare(name: str, got: np.ndarray, want: np.ndarray, dtype, scale: float) -> str:
    """``got`` is finite wherever ``want`` is representable, and right to a relative tolerance plus an
    absolute one on the scale of the numbers involved (``scale``: the largest input, upstream
    gradient or true value), which is as close as floating point gets to a value near 0 there."""
    finfo = np.finfo(dtype)
    representable = np.abs(want) < finfo.max
    bad = representable & ~np.isfinite(got)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        return f"{name}{list(idx)} is {got[idx]} where the true value is {want[idx]:.6g}"
    rtol, atol = (1e-9, 1e-12) if dtype == np.float64 else (2e-4, 1e-5)
    scale = max(scale, float(np.max(np.abs(np.where(representable, want, 0)), initial=0.0)))
    wrong = representable & (np.abs(got - want) > rtol * np.abs(want) + atol * scale)
    if wrong.any():
        idx = tuple(int(i) for i in np.argwhere(wrong)[0])
        return f"{name}{list(idx)} is {got[idx]:.9g} where the true value is {want[idx]:.9g}"
    return ""


def reference(d: Derivation, sizes: dict, inputs: dict, hyper: dict, dout) -> dict:
    """The output and every gradient of the derivation at these inputs, evaluated at 50 digits."""
    op = d.op
    values = dict(hyper)
    for h in op.hyper:
        if values.get(h.name) is None and h.default_to:
            values[h.name] = values[h.default_to]
    sizes = with_hyper(op, sizes, values)
    scalars = {h.symbol: sp.Float(values[h.name], 50) for h in op.hyper if h.kind == "float"}
    numbers = dict(scalars)
    for inp in op.inputs:
        array = np.asarray(inputs[inp.name]).reshape([int(sp.sympify(s).subs(sizes)) for s in inp.shape])
        for idx in np.ndindex(array.shape):
            numbers[inp.tensor[idx]] = sp.Integer(int(array[idx])) if inp.domain == "index" \
                else sp.Float(float(array[idx]), 50)
    upstream = {}
    if op.is_loss:
        upstream[d.upstream] = sp.Float(float(dout), 50)
    for y, dy in () if op.is_loss else zip(op.outputs, as_outputs(op, dout)):
        g, tensor = np.asarray(dy).reshape([int(sp.sympify(s).subs(sizes)) for s in y.shape]), upstream_of(op, y)
        upstream.update({tensor[idx]: sp.Float(float(g[idx]), 50) for idx in np.ndindex(g.shape)})

    def evaluate(expr, index, shape, keep=None):
        """Each element at 50 digits, with the intermediates it reads already numbers (computed in
        order, not written out again: attention's gradients read p, not its softmax)."""
        out = np.zeros(shape)
        for idx in np.ndindex(*shape):
            unrolled = _unroll(expr, dict(zip(index, idx)), sizes)
            value = sp.N(at_numbers(unrolled, {**numbers, **upstream}), 50)
            if keep is not None:
                numbers[keep[idx] if idx else keep] = value
            out[idx] = float(value) if value.is_real else np.nan
        return out

    result = {}
    for node in op.intermediates:
        shape = [int(sp.sympify(s).subs(sizes)) for s in node.shape]
        result[node.name] = evaluate(node.definition, node.index, shape, keep=node if node.index else None)
    result = {y.name: result[y.name] for y in op.outputs}
    for g in d.gradients:
        result[g.input.name] = evaluate(g.expr, g.index, [int(sp.sympify(s).subs(sizes)) for s in g.input.shape])
    return result


# -- the brute-force symbolic proof -----------------------------------------

def claims(d: Derivation) -> list[tuple]:
    """What a derivation says, as (input, index, expression) per gradient: the gradients written out,
    and the same gradients through the named intermediates' gradients (expanded)."""
    found = [(g.input, g.index, g.expr) for g in d.gradients] if d.written_out else []
    found += [(g.input, g.index, expanded(g.expr, d.adjoints)) for g in d.backprop]
    return found


def brute_force(d: Derivation, sizes: dict, hyper: dict | None = None, points: int = 6,
                tally: dict | None = None) -> list[str]:
    """Every element where the derived gradient differs from SymPy's unrolled derivative.

    The unrolled forward is the op as it was given (``d.source``), not the
    engine's working form, so the check is independent of every rewrite the
    engine made. Integer hyper-parameters (stride, padding) shape the
    unrolled network and get the values in ``hyper`` (their defaults
    otherwise); the others stay symbols. Integer inputs (token ids) take
    sampled values. A difference with branches is compared where each
    branch is reached: at random points drawn from the inputs' domains
    (``points`` of them), never on conditions no input can meet.
    """
    op = d.source or d.op
    values = dict(hyper_values(op, resolve=True), **(hyper or {}))
    for h in op.hyper:
        if values.get(h.name) is None and h.default_to:
            values[h.name] = values[h.default_to]
    sizes = with_hyper(op, sizes, values)
    sample_points = _points(op, sizes, values, points)
    integers = {k: v for k, v in sample_points[0].items() if k.is_integer}
    if op.is_loss:
        forward = exact_constants(inline(op.output.definition))  # an intermediate's decimals too (GELU's u)
        objective = d.upstream * _unroll(forward, {}, sizes).xreplace(integers)
    else:
        objective = sp.S.Zero
        for y in op.outputs:
            forward, g = exact_constants(inline(y.definition)), upstream_of(op, y)
            for idx in itertools.product(*(range(int(sp.sympify(s).subs(sizes))) for s in y.shape)):
                objective += g[idx] * _unroll(forward, dict(zip(y.index, idx)), sizes).xreplace(integers)
    constraint = _simplex_constraint(op, sizes)
    wrong, pending = [], []  # pending: differences that did not cancel, to evaluate at the points
    expected_by = {}
    for inp, index, expr in claims(d):
        derived = written_out(inline(expr))
        shape = [int(sp.sympify(s).subs(sizes)) for s in inp.shape]
        for idx in itertools.product(*(range(n) for n in shape)):
            element = inp.tensor[idx]
            if element not in expected_by:
                expected_by[element] = sp.diff(objective, element)
            expected = expected_by[element]
            got = _unroll(derived, dict(zip(index, idx)), sizes).xreplace(integers)
            difference = (expected - got).xreplace(constraint)
            if cancels(difference):
                _count(tally, "exact")
            else:
                pending.append((element, got, expected, difference))
    for (element, got, expected, _), zero in zip(pending, vanish([p[-1] for p in pending], sample_points)):
        if zero:
            _count(tally, "points")
        else:
            wrong.append(f"d/d{element}: derived {_short(got)} != brute force {_short(expected)}")
    return wrong


def _count(tally, how):
    if tally is not None:
        tally[how] = tally.get(how, 0) + 1


def certify(d: Derivation) -> str:
    """Check every gradient against the unrolled forward at small sizes, for each test case of the
    hyper-parameters; say what was shown, or raise ``Mismatch`` naming the gradient and element."""
    op = d.source or d.op
    sizes = certification_sizes(op)
    cases = max((len(h.cases) for h in op.hyper), default=1) or 1
    tally: dict = {}
    for case in range(cases):
        wrong = brute_force(d, sizes, hyper_values(op, case), tally=tally)
        if wrong:
            raise Mismatch(f"{op.name}: the derived {wrong[0].split(':')[0]} disagrees with SymPy's derivative of "
                           f"the unrolled forward (sizes {_sizes_text(sizes)}); nothing is printed from a "
                           f"derivation that fails its check")
    how = " and ".join(f"{n} {'exactly' if k == 'exact' else 'at 6 random points to 50 digits'}"
                       for k, n in sorted(tally.items()))
    return f"every element equals SymPy's derivative of the unrolled forward at {_sizes_text(sizes)} ({how})" \
        + (f", {cases} hyper-parameter cases" if cases > 1 else "")


def _sizes_text(sizes: dict) -> str:
    return ", ".join(f"{s}={v}" for s, v in sizes.items())


def exact_constants(expr: sp.Expr) -> sp.Expr:
    """Decimal constants as the rationals they spell (0.044715 is 8943/200000)."""
    return expr.replace(lambda e: isinstance(e, sp.Float), lambda e: sp.nsimplify(e, rational=True))


def cancels(difference: sp.Expr, seconds: float = 1.0) -> bool:
    """The difference cancels to 0 exactly (no branches in it), within ``seconds``."""
    if difference.has(sp.Piecewise, Iverson, sp.sign, sp.Abs, FirstMax):
        return False
    exact, why = attempt(is_zero, difference, seconds)
    return bool(exact) and not why


def vanish(exprs: list, points: list) -> list[bool]:
    """Whether each expression is 0 at every point, evaluated at 50 digits: exact rationals for the
    inputs, functions by mpmath, all the expressions compiled in one go. A difference that is not 0
    shows at random points, and branches are evaluated where the points reach them."""
    plain = [k for k, e in enumerate(exprs) if not e.has(FirstMax)]
    result = [all(_vanishes_at(e, point) for point in points) if e.has(FirstMax) else None for e in exprs]
    if not plain:
        return result
    bodies = [as_piecewise(written_out(exprs[k])) for k in plain]
    elements = sorted({e for b in bodies for e in sp.preorder_traversal(b) if isinstance(e, sp.Indexed)},
                      key=sp.default_sort_key)
    held = {e: sp.Dummy() for e in elements}
    bodies = [b.xreplace(held) for b in bodies]
    scalars = sorted(set().union(*(b.free_symbols for b in bodies)) - set(held.values()), key=str)
    leaves = elements + scalars
    stand_ins = [held[e] for e in elements] + scalars
    function = sp.lambdify(stand_ins, bodies, modules="mpmath")
    zero = [True] * len(plain)
    with mpmath.workdps(50):
        for point in points:
            if any(leaf not in point for leaf in leaves):
                zero = [False] * len(plain)
                break
            values = function(*(mpmath.mpf(point[leaf].p) / point[leaf].q for leaf in leaves))
            scale = max([1.0] + [abs(float(v)) for v in point.values()])
            zero = [z and bool(abs(v) <= mpmath.mpf(10) ** -35 * scale) for z, v in zip(zero, values)]
    for k, z in zip(plain, zero):
        result[k] = z
    return result


def _vanishes_at(expr: sp.Expr, point: dict) -> bool:
    value = at_numbers(expr, point)
    if value.free_symbols:
        return False
    if value.is_Rational:
        return value == 0
    number = sp.N(value, 50)
    scale = max([1.0] + [abs(float(v)) for v in point.values()])
    return bool(abs(number) <= sp.Float(10) ** -35 * scale)


def _points(op: Op, sizes: dict, hyper: dict, count: int) -> list[dict]:
    """Random values for every input element, the upstream gradient and the scalar hyper-parameters,
    as exact two-decimal rationals drawn from each input's domain."""
    rng = np.random.default_rng(1)
    scalars = {h.symbol: sp.nsimplify(hyper[h.name], rational=True) for h in op.hyper if h.kind == "float"}
    out = []
    for _ in range(count):
        point = dict(scalars)
        for inp in op.inputs:
            shape = tuple(int(sp.sympify(s).subs(sizes)) for s in inp.shape)
            if inp.domain == "index":
                draws = rng.integers(0, int(sp.sympify(index_bound(op, inp)).subs(sizes)), shape)
                point.update({inp.tensor[idx]: sp.Integer(int(draws[idx])) for idx in np.ndindex(shape)})
                continue
            draws = _draw(inp.domain, shape, rng)
            point.update({inp.tensor[idx]: sp.Rational(round(float(draws[idx]) * 100), 100)
                          for idx in np.ndindex(shape)})
        if op.is_loss:
            point[upstream_of(op)] = sp.Rational(int(rng.integers(50, 300)), 100)
        for y in () if op.is_loss else op.outputs:
            g = upstream_of(op, y)
            out_shape = tuple(int(sp.sympify(s).subs(sizes)) for s in y.shape)
            point.update({g[idx]: sp.Rational(int(rng.integers(-300, 300)), 100) for idx in np.ndindex(out_shape)})
        out.append(point)
    return out


def index_bound(op: Op, inp) -> sp.Expr:
    """How many values an integer input may take: the size of the axis it indexes (a vocabulary).

    The op may read it as written (``W[idx[n], e]``), in working form (``sum_v [v = idx_n] W[v, e]``), or as
    the one-hot row of an intermediate (``q[n, k] = [k = t_n]``).
    """
    for node in op.intermediates:
        for delta in node.definition.atoms(sp.KroneckerDelta):  # a one-hot row of its own: q[n, k] = [k = t_n]
            for v, other in (delta.args, reversed(delta.args)):
                if v in node.index and isinstance(other, sp.Indexed) and other.base == inp.tensor:
                    return node.shape[node.index.index(v)]
        for sub in sp.preorder_traversal(node.definition):
            if isinstance(sub, sp.Indexed):
                for pos, i in enumerate(sub.indices):
                    if isinstance(i, sp.Indexed) and i.base == inp.tensor:
                        return sub.base.shape[pos]
            if isinstance(sub, sp.Sum):
                for v, lo, hi in sub.limits:
                    if any(isinstance(d, sp.KroneckerDelta) and v in d.args
                           and any(isinstance(a, sp.Indexed) and a.base == inp.tensor for a in d.args)
                           for d in sub.function.atoms(sp.KroneckerDelta)):
                        return hi - lo + 1
    raise ValueError(f"{op.name}: the integer input {inp.name} indexes no tensor")


def at_numbers(expr: sp.Expr, values: dict) -> sp.Expr:
    """``expr`` with input values put in, primitives included (max pooling's mask takes its
    window's values: 1 at the first maximum in row-major order, else 0; a mask whose window is not
    all numbers yet, as when integer inputs go in first, stays)."""
    def first_max(mask):
        (u, v), (k, m), (a, b) = mask.bound, mask.kernel, mask.at
        offsets = [{u: p, v: q} for p in range(int(k)) for q in range(int(m))]
        window = [mask.window.xreplace(at).xreplace(values) for at in offsets]
        allowed = [mask.candidates.xreplace(at).xreplace(numbers) for at in offsets]
        if not all(sp.S(w).is_number for w in window) or not all(c in (sp.true, sp.false) for c in allowed):
            return mask
        among = [k for k, c in enumerate(allowed) if c]
        first = among[int(np.argmax([float(window[k]) for k in among]))]
        return sp.S.One if first == int(a) * int(m) + int(b) else sp.S.Zero
    numbers = {k: sp.sympify(v) for k, v in values.items()}
    found = expr.replace(lambda e: isinstance(e, FirstMax), first_max).xreplace(numbers)
    # an element selected by an integer input (a class's weight[t[n]]) is known once t[n] is a number
    return found.xreplace(numbers) if found.has(sp.Indexed) else found


def _simplex_constraint(op: Op, sizes: dict) -> dict:
    """Each simplex row's last entry as 1 minus the others: the assumption, made explicit."""
    rule = {}
    for inp in op.inputs:
        if inp.domain == "simplex":
            *lead, last = [int(sp.sympify(s).subs(sizes)) for s in inp.shape]
            for idx in itertools.product(*(range(n) for n in lead)):
                rest = sum(inp.tensor[(*idx, k)] for k in range(last - 1))
                rule[inp.tensor[(*idx, last - 1)]] = 1 - rest
    return rule


def _unroll(expr: sp.Expr, at: dict, sizes: dict) -> sp.Expr:
    """``expr`` at explicit indices and sizes, every sum written out."""
    return expand_sums(expr.xreplace({**sizes, **{k: sp.Integer(v) for k, v in at.items()}}))


def expand_sums(expr: sp.Expr) -> sp.Expr:
    """Write out every sum with numeric bounds, term by term.

    ``Sum.doit`` would also do it, but it rewrites a piecewise summand
    whose condition mentions the summation index into nested ``ITE``
    conditions; substituting each value keeps every term as it is.
    """
    def visit(node):
        if isinstance(node, sp.Sum):
            body = visit(node.function)
            for v, lo, hi in node.limits:
                body = sp.Add(*(body.xreplace({v: sp.Integer(i)}) for i in range(int(lo), int(hi) + 1)))
            return body
        if not node.args or isinstance(node, sp.Indexed):
            return node
        return node.func(*(visit(a) for a in node.args))
    return visit(expr)


def is_zero(expr: sp.Expr) -> bool:
    """Exact zero test: piecewise branches one by one; first with every function call held as a symbol
    of its own (a gated cell's difference is then a polynomial in its σ's and tanh's), then with
    exponentials as a rational function. Each is 0 where its numerator expands to 0; an identity both
    miss is left to the points."""
    expr = sp.piecewise_fold(as_piecewise(expr))
    if isinstance(expr, sp.Piecewise):
        return all(is_zero(branch) for branch, _ in expr.args)
    return _numerator_vanishes(_calls_held(written_out(expr))) or _numerator_vanishes(expr.rewrite(sp.exp))


def _calls_held(expr: sp.Expr) -> sp.Expr:
    """Each function call (the outermost, with its argument) as a symbol: a rational function of
    these symbols that is 0 is 0 whatever values the calls take, so also for the values they do.
    (σ written out first, as the derived side is: both then hold the same exponentials.)"""
    calls = sorted(expr.atoms(sp.Function), key=sp.default_sort_key)
    return expr.xreplace({call: sp.Dummy() for call in calls})


def _numerator_vanishes(expr: sp.Expr) -> bool:
    numerator, _ = sp.fraction(sp.together(expr))
    return sp.expand(numerator) == 0  # no gcd needed, unlike cancel


def chain_brute_force(c, sizes: dict, exact: bool = True) -> list[str]:
    """Every parameter (and input) gradient of a chain, against SymPy's derivative of the unrolled network.

    ``sizes`` gives each chain size symbol (N, I, J, K...) a number. Each layer
    output is written out in terms of the inputs and parameters, so the
    check covers the chain rule across layers, not just each op.
    """
    sizes = {s: sp.Integer(v) for s, v in sizes.items()}
    values = {}  # chain tensor element -> unrolled expression

    def unroll(expr):
        return expand_sums(expr.xreplace(sizes)).xreplace(values)

    for lhs, rhs in c.forward:
        if isinstance(lhs, sp.Indexed):
            base, index = lhs.base, lhs.indices
            shape = [int(sp.sympify(s).xreplace(sizes)) for s in base.shape]
            for idx in itertools.product(*(range(n) for n in shape)):
                values[base[idx]] = unroll(rhs.xreplace(dict(zip(index, idx))))
        else:
            objective = unroll(rhs)
    constraint = {}
    for layer in c.layers:
        for inp in layer.op.inputs:
            if inp.domain == "simplex":
                tensor = layer.tensors[inp.name]
                *lead, last = [int(sp.sympify(s).xreplace(sizes)) for s in tensor.shape]
                for idx in itertools.product(*(range(n) for n in lead)):
                    rest = sum(tensor[(*idx, k)] for k in range(last - 1))
                    constraint[tensor[(*idx, last - 1)]] = 1 - rest
    wrong = []
    for q in c.backward:
        if q.kind == "delta":
            continue
        element = q.lhs.variables[0]
        base, index = element.base, element.indices
        shape = [int(sp.sympify(s).xreplace(sizes)) for s in base.shape]
        for idx in itertools.product(*(range(n) for n in shape)):
            at = base[idx]
            expected = sp.diff(objective, at)
            got = unroll(q.expanded.xreplace(dict(zip(index, idx))))
            difference = (expected - got).xreplace(constraint)
            if not (is_zero(difference) if exact else _vanishes(difference)):
                wrong.append(f"dE/d{at}: chain {_short(got)} != brute force {_short(expected)}")
    return wrong


def _vanishes(expr: sp.Expr, points: int = 3, digits: int = 60) -> bool:
    """``expr`` is 0 at random points evaluated to 60 digits: for expressions too big to cancel."""
    rng = np.random.default_rng(0)
    symbols = sorted(expr.free_symbols, key=str)
    for _ in range(points):
        at = {s: sp.Rational(int(rng.integers(-900, 900)), 317) for s in symbols}
        at = {s: abs(v) + sp.Rational(1, 317) if s.is_positive else v for s, v in at.items()}  # batch norm's eps
        if abs(sp.N(expr.xreplace(at), digits)) > sp.Float(10) ** (10 - digits):
            return False
    return True


def _short(expr, limit: int = 160) -> str:
    text = str(expr)
    return text if len(text) <= limit else text[:limit] + "..."
