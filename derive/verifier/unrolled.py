"""``derive verify CELL --unroll T``: a hand-derived step of backpropagation through time against the
certified unrolled derivation (``derive.engine.unroll``).

The names are the cell's with a time index first (``h_{t-1,nj}``, ``\\delta^{a}_{t+1,nk}``, the arriving
gradient ``g^{h}_{t,nj}``, the loss's direct one ``G^{h}_{t,nj}``), known without deriving. A formula is
compared with the derivation at T = 2 and 3 steps (``unroll.CHECKED_STEPS``), at every element of every
step, at exact rational inputs, every value computed to 50 digits; an element read beyond the last step
(``\\delta_{T+1}``, ``f_{T+1}``) is 0, as nothing comes back from after it. A wrong formula is
tried against the mistakes of a hand derivation, each a change to the derivation: the next step's term or
the loss's own gradient left out, an element read at the wrong step (``\\delta_t`` for ``\\delta_{t+1}``,
``h_t`` for ``h_{t-1}``), the weights' gradient of one step only, a sign, a term missing.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import sympy as sp

from derive.define.op import Op
from derive.engine.backprop import adjoint_nodes, adjoint_tensor
from derive.engine.derivation import display_index, upstream_of
from derive.engine.prepare import prepare
from derive.engine.unroll import CHECKED_STEPS, STEP, STEPS, Unrolled, _Steps, recurrent_states, step_values
from derive.verifier.meaning import BATCH_INDEX, Entry, Table
from derive.verifier.names import Names, Target, op_table

TIME = STEP.name  # the letter a formula writes the step with
TRIED = ("the next step's term or the loss's own gradient left out, an element at the wrong step, the weights' "
         "gradient of one step only or over too few steps, sign, one term or factor missing")


@dataclass(frozen=True)
class StepTarget(Target):
    """A quantity of the unrolled cell, named with its own step: ``\\delta^{a}_{t,nk}``, ``dE/dh_{0,nj}``."""

    steps: bool = True

    def name(self, sample: bool) -> str:
        return rf"\frac{{\partial E}}{{\partial {self._element(sample)}}}" if self.is_gradient else self._element(sample)

    def short(self, sample: bool) -> str:
        return f"dE/d{self._element(sample)}" if self.is_gradient else self._element(sample)

    def _element(self, sample: bool) -> str:
        letters = [str(i) for p, i in enumerate(self.index) if not (sample and i == BATCH_INDEX)]
        if self.entry.letters[:1] != (TIME,):  # a weight: no step
            return f"{self.entry.head()}_{{{''.join(letters)}}}"
        return f"{self.entry.head()}_{{{letters[0]},{''.join(letters[1:])}}}"


# -- the names, without deriving ----------------------------------------------------------------------

def unrolled_names(cell: Op) -> Names:
    """The unrolled cell's names and quantities (the arriving gradients, the error terms, the gradients), from
    its definition alone; a ValueError for an op that is no recurrent cell."""
    from codegen.latex.unroll import state_names
    from codegen.latex.notation import name_tex
    from derive.verifier.meaning import name_key
    states = recurrent_states(cell)
    op = prepare(cell)
    steps = _Steps(op, states)
    cell_table = op_table(op, upstream_of(op))
    printed = state_names(states)
    outputs = {s.output for s in states}
    entries, by_name = [], {}

    def timed(entry: Entry, name: str, words: tuple, meaning: str, kind: str, written: str = "") -> Entry:
        new = Entry(sp.IndexedBase(name), tuple(dict.fromkeys(w for w in words if w)), (STEPS, *entry.shape),
                    (TIME, *entry.letters), meaning, kind, None if entry.batch_axis is None else entry.batch_axis + 1,
                    written=written or entry.written)
        by_name[name] = new
        return new

    for e in cell_table.entries:
        name = str(getattr(e.value, "label", e.value))
        if e.kind == "upstream" or name in outputs:  # the arriving gradients below; h' is h_t
            continue
        if e.rank == 0 or name in steps.weights:
            entries.append(e)
        elif name.startswith("d") and name[1:] in outputs:  # an LSTM's \delta^{c'}: the error term of c_t
            state = steps.renamed[name[1:]]
            tex = printed[f"d{state}"]
            entries.append(timed(e, f"d{state}", (name_key(tex), f"d{state}"), f"error term dE/d{name_tex(state)}_t",
                                 "error term", tex))
        else:
            entries.append(timed(e, name, e.names, f"{e.meaning}, at step t", e.kind))
    for s in states:
        shape_of = next(e for e in cell_table.entries if e.value == op.input(s.input).tensor)
        tex, direct = printed[s.upstream], printed[s.direct]
        entries.append(timed(shape_of, s.upstream, (name_key(tex), f"g_{s.input}"),
                             f"the gradient arriving at {name_tex(s.input)}_t, from the loss and from step t + 1",
                             "error term", tex))
        entries.append(timed(shape_of, s.direct, (name_key(direct), s.direct),
                             f"the gradient the loss sends {name_tex(s.input)}_t directly", "upstream", direct))
    entries.append(Entry(STEPS, ("T",), meaning="the number of steps", kind="size"))
    table = Table(f"{cell.name} unrolled", entries, None, False, cell_table.batch_size, (), cell_table.sum_ranges,
                  (), time=(TIME, sp.S.One, STEPS))
    t = STEP
    targets = [StepTarget(by_name[s.upstream], (t, *display_index(op, op.input(s.input))), is_gradient=False)
               for s in states]
    for node in reversed(adjoint_nodes(op)):
        name = adjoint_tensor(node).name
        name = f"d{steps.renamed[node.name]}" if node.name in outputs else name
        targets.append(StepTarget(by_name[name], (t, *node.index), is_gradient=False))
    for inp in op.differentiable:
        idx = tuple(display_index(op, inp))
        if inp.name in steps.weights:
            targets.append(StepTarget(next(e for e in entries if e.value == inp.tensor), idx))
        else:
            targets.append(StepTarget(by_name[inp.name], (sp.S.Zero if inp.name in steps.previous else t, *idx)))
    return Names(table.title, table, targets)


@lru_cache(maxsize=8)
def names_of_unrolled(cell: Op) -> Names:
    return unrolled_names(cell)


@lru_cache(maxsize=8)
def certified_unrolled(cell: Op) -> Unrolled:
    """The cell unrolled, its recursion checked at T = 2 and 3 (a Mismatch otherwise)."""
    from derive.engine.unroll import unroll
    return unroll(cell)


# -- the derivation of each quantity --------------------------------------------------------------------

@dataclass(frozen=True)
class _Derived:
    """One quantity as the unrolled derivation gives it, in the target's letters, and where its values are."""

    expr: sp.Expr
    name: str  # the key's name in ``StepValues.derived`` or ``.gradients``
    gradient: bool  # in ``.gradients``


def _derived(u: Unrolled, target: Target) -> _Derived:
    name = str(target.entry.value.label)

    def renamed(element, expr):
        return expr.xreplace({a: b for a, b in zip(element.indices, target.index) if isinstance(a, sp.Symbol)})

    for (element, direct, later), s in zip(u.arriving, u.states):
        if s.upstream == name:
            return _Derived(renamed(element, direct + later), name, False)
    if not target.is_gradient:
        for element, _, rhs, _ in u.errors:
            if str(element.base.label) == name:
                return _Derived(renamed(element, rhs), name, False)
    for element, rhs, inp, _ in u.gradients:
        if inp.name == name:
            return _Derived(renamed(element, rhs), name, True)
    raise AssertionError(f"{name}: no such quantity in the unrolled derivation")  # names and derivation agree


# -- the comparison ------------------------------------------------------------------------------------

_VALUES = {}  # (unrolled cell, steps, one sample, seed) -> StepValues: every formula checked needs the same


class _Run:
    """The derivation's values at ``steps`` steps, the elements of one target, and what a formula gives there."""

    def __init__(self, u: Unrolled, target: Target, steps: int, sample: bool, seed: int):
        from derive.engine.check import example_sizes
        sizes = dict(example_sizes(u.op))
        if sample:
            sizes = {s: (1 if s.name == "N" else v) for s, v in sizes.items()}
        self.steps, self.u, self.sample = steps, u, sample
        key = (id(u), steps, sample, seed)  # u is kept by certified_unrolled: its id names it
        if key not in _VALUES:
            _VALUES[key] = step_values(u, steps, sizes, seed)
        self.at = _VALUES[key]
        self.known = dict(self.at.derived)
        beyond = [s.upstream for s in u.states] + [s.direct for s in u.states] + \
            [str(element.base.label) for element, *_ in u.errors]
        shapes = {**{s.upstream: u.op.input(s.input).shape for s in u.states},
                  **{s.direct: u.op.input(s.input).shape for s in u.states},
                  **{str(element.base.label): node.shape for element, _, _, node in u.errors}}
        shapes.update({str(element.base.label): node.shape for element, _, node in u.forward})
        from derive.engine.unroll import cells
        for name, shape in shapes.items():  # nothing after the last step (and no gradient into step 0)
            for step in (0, steps + 1) if name in beyond else (steps + 1,):
                for idx in cells(shape, self.at.sizes):
                    self.known[(name, (step, *idx))] = sp.S.Zero
        ranges = []
        for i, size in zip(target.index, target.entry.shape):
            if not isinstance(i, sp.Symbol):
                ranges.append((i, [int(i)]))
            elif i == STEP:
                ranges.append((i, list(range(1, steps + 1))))
            elif sample and i == BATCH_INDEX:
                ranges.append((i, [0]))
            else:
                ranges.append((i, list(range(int(sp.sympify(size).xreplace(self.at.sizes))))))
        self.elements = [dict(zip((i for i, _ in ranges), combo))
                         for combo in itertools.product(*(r for _, r in ranges))]

    def values(self, expr) -> list:
        """``expr`` at every element (nan where it reads an element no step has)."""
        one = {BATCH_INDEX: 0} if self.sample else {}  # one sample: n = 0, also where the quantity has no n
        letters = [one | {k: v for k, v in at.items() if isinstance(k, sp.Symbol)} for at in self.elements]
        return [self.at.value(expr, self.known, at) for at in letters]

    def expected(self, derived: _Derived) -> list:
        store = self.at.gradients if derived.gradient else self.at.derived
        return [store[(derived.name, tuple(int(v) for v in at.values()))] for at in self.elements]


def _agree(a, b) -> bool:
    from derive.engine.network import _agree as agree
    return agree(sp.sympify(a), sp.sympify(b))


def judge_unrolled(reading, seed: int = 0):
    """The verdict on a formula read for an unrolled cell (``reading.source == ("unrolled", cell)``)."""
    cell = reading.source[1]
    u = certified_unrolled(cell)
    target = next(t for t in reading.names.targets if t.entry == reading.quantity.entry)
    derived = _derived(u, target)
    from derive.engine.chain import sample_form
    printer = _printer(u)
    sample = reading.sample
    shown = sample_form(derived.expr) if sample else derived.expr
    base = dict(quantity=f"{target.short(sample)} of {cell.name} unrolled over T steps",
                derived=f"{target.name(sample)} = {printer.doprint(shown)}", formula=reading.text,
                form="index form" + (", one sample" if sample else ""))
    steps = reading.steps or _symbolic_steps(reading.meanings)
    verdicts = [_check(u, target, derived, meaning, sample, seed, printer, base, steps) for meaning in reading.meanings]
    return next((v for v in verdicts if not v.equivalent), verdicts[-1])


def _symbolic_steps(meanings) -> tuple:
    """The numbers of steps a formula about T steps is checked at: 2 and 3, and one more than any step it
    names by number (``\\sum_{t=1}^{3}`` is right at T = 2 and 3, where nothing comes after the last step)."""
    from derive.verifier.reading import MAX_STEPS
    named = {0}
    for meaning in meanings:
        expr = getattr(meaning, "expr", sp.S.Zero)
        named |= {int(e.indices[0]) for e in expr.atoms(sp.Indexed) if e.indices and e.indices[0].is_Integer}
        named |= {int(x) for total in expr.atoms(sp.Sum) for v, *limits in total.limits if v == STEP
                  for x in limits if x.is_Integer}
    beyond = max(named) + 1
    if beyond > MAX_STEPS + 1:
        raise ValueError(f"formula: it names step {beyond - 1}; for T steps, write a step as t, t + 1, T or a number up "
                         f"to {MAX_STEPS}")
    return CHECKED_STEPS + ((beyond,) if beyond > max(CHECKED_STEPS) else ())


def _printer(u: Unrolled):
    from codegen.latex.notation import ArticleLatex
    from codegen.latex.unroll import unroll_notation
    return ArticleLatex(unroll_notation(u))


def _check(u, target, derived, meaning, sample, seed, printer, base, checked):
    from derive.verifier.meaning import ShapeMismatch
    from derive.verifier.verification import Counterexample, Verdict
    if isinstance(meaning, ShapeMismatch):
        return Verdict(False, reason=f"{meaning}: the shapes differ", **base)
    own = {str(i) for i in target.index}
    extra = [c for c in meaning.free if c not in own]
    if extra:
        hints = []
        if TIME in extra and TIME not in own:
            hints.append(_one_step(target, printer, sample))
        hints += [f"a missing sum over {c}: {target.short(sample)} is \\sum_{{{c}}} of your formula"
                  for c in extra if c != TIME]
        return Verdict(False, reason=f"free {'index' if len(extra) == 1 else 'indices'} {', '.join(extra)} not in "
                                     f"{target.short(sample)}", hints=tuple(hints), tried=TRIED, **base)
    runs = [_Run(u, target, steps, sample, seed) for steps in checked]
    yours = [run.values(meaning.expr) for run in runs]
    first = None
    for run, got in zip(runs, yours):
        expected = run.expected(derived)
        for at, want, value in zip(run.elements, expected, got):
            if not _agree(value, want):
                first = first or (run, at, want, value)
    count = sum(len(run.elements) for run in runs)
    sizes_text = ", ".join(f"{s}={v}" for s, v in runs[0].at.sizes.items() if s != STEPS)
    if first is None:
        at = ", ".join(map(str, checked))
        return Verdict(True, proof=f"none sought: a formula about the unrolled cell is compared at T = {at} steps, "
                                   "as the derivation itself was certified",
                       numeric=f"equal within 1e-30 (exact two-decimal inputs, every value computed to 50 digits) at "
                               f"every element of every step, T = {at}, {sizes_text} ({count} element values)", **base)
    run, at, want, value = first
    example = Counterexample({**{str(s): int(v) for s, v in run.at.sizes.items()}},
                             {str(k): int(v) for k, v in at.items() if isinstance(k, sp.Symbol)}, _inputs(u, run.at),
                             _mp(want), _mp(value),
                             note="indices count from 0, steps from 1")
    hints = _hints(u, target, derived, runs, yours, printer, sample)
    undefined = sp.sympify(value).has(sp.nan)
    reason = "your formula reads an element no step has (before the first state)" if undefined else ""
    return Verdict(False, counterexample=example, hints=tuple(hints), reason=reason, tried=TRIED, **base)


def _inputs(u: Unrolled, at) -> dict:
    """The inputs drawn, as nested lists: the weights, and each step's ``x_1``, ``h_0``, ``G_h_1``..."""
    import numpy as np
    moved = _Steps(u.op, u.states)
    weights = moved.weights
    arrays = {}
    for (name, idx), value in at.values.items():
        drawn = name in {i.name for i in u.op.inputs} | {s.direct for s in u.states}
        if drawn and not (name in moved.previous and idx[0] != 0):  # h_1, h_2... are computed
            label, idx = (name, idx) if name in weights else (f"{name}_{idx[0]}", idx[1:])
            arrays.setdefault(label, {})[idx] = float(value)
    out = {}
    for label, cells in arrays.items():
        shape = tuple(max(i[p] for i in cells) + 1 for p in range(len(next(iter(cells)))))
        array = np.zeros(shape)
        for idx, value in cells.items():
            array[idx] = value
        out[label] = array.tolist()
    return out


def _mp(value):
    from derive.verifier.verification import MP
    value = sp.sympify(value)
    if value.has(sp.nan):
        return None
    return MP.mpf(str(sp.N(value, 60)))


# -- the typical mistakes -------------------------------------------------------------------------------

def _hints(u, target, derived, runs, yours, printer, sample) -> list[str]:
    """The derivation changed the way a hand derivation goes wrong; each change that gives your values."""
    found = []
    for message, changed in _mistakes(u, target, derived.expr, printer, sample):
        if all(_agree(a, b) for run, got in zip(runs, yours) for a, b in zip(run.values(changed), got)):
            found.append(message)
            break
    return found


def _mistakes(u, target, expr, printer, sample):
    """(what went wrong, the derivation with that mistake), the likeliest first."""
    tex = printer.doprint
    name = target.short(sample)
    directs = {sp.IndexedBase(s.direct) for s in u.states}
    weights = {sp.IndexedBase(w) for w in _Steps(u.op, u.states).weights}
    terms = sp.Add.make_args(expr)
    if len(terms) > 1:
        for term in terms:
            rest = expr - term
            if any(e.base in directs for e in term.atoms(sp.Indexed)):
                yield f"the loss's own gradient left out: {name} also has {tex(term)}", rest
            elif _reads_next_step(term):
                yield (f"the next step's term left out: {name} also gets what step t + 1 sends back, {tex(term)}",
                       rest)
            else:
                yield f"a term missing: {tex(term)}", rest
    for element in sorted({e for e in expr.atoms(sp.Indexed) if e.base not in weights}, key=sp.default_sort_key):
        for shift in (-1, 1):
            moved = element.base[(element.indices[0] + shift, *element.indices[1:])]
            yield (f"the wrong step: the derivation reads {tex(element)} where your formula reads {tex(moved)}",
                   expr.xreplace({element: moved}))
    for total in expr.atoms(sp.Sum):
        over = [lim for lim in total.limits if lim[0] == STEP]
        if over:
            rest = [lim for lim in total.limits if lim[0] != STEP]
            (_, first, last), = over
            for step in (last, first):
                body = total.function.xreplace({STEP: step})
                yield _one_step(target, printer, sample), expr.xreplace({total: sp.Sum(body, *rest) if rest else body})
            for limits, left in (((first + 1, last), first), ((first, last - 1), last)):
                fewer = sp.Sum(total.function, *rest, (STEP, *limits))
                yield (f"a step left out: {target.short(sample)} sums over every step, t = {tex(first)} to {tex(last)}; "
                       f"your formula leaves out t = {tex(left)}", expr.xreplace({total: fewer}))
    yield f"sign flipped: your formula is -1 times {name}", -expr
    for factor in sp.Mul.make_args(expr):
        if not factor.is_number and len(sp.Mul.make_args(expr)) > 1:
            yield f"missing the factor {tex(factor)}: {name} is your formula times it", expr / factor


def _reads_next_step(expr) -> bool:
    return any(e.indices[0] == STEP + 1 for e in expr.atoms(sp.Indexed) if e.indices)


def _one_step(target, printer, sample) -> str:
    return (f"the weights' gradient of one step only: the same weights act at every step, so {target.short(sample)} "
            f"is the sum over the steps, \\sum_{{t=1}}^{{T}}")
