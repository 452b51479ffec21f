"""Backpropagation through time: a recurrent cell unrolled over ``T`` steps, ``T`` a symbol.

A cell reads per-step inputs (those with the batch axis: ``x``), states (``h``, an LSTM's ``c``:
an input ``s`` whose next value is the output ``sn``) and weights (everything else), and computes
the next states. Unrolled, step ``t`` reads ``x_t`` and ``s_{t-1}`` and computes ``s_t``; the loss
may read every ``s_t`` (``G^{s}_t``: the gradient it sends ``s_t`` directly, 0 where it does not).

Nothing is differentiated afresh: the cell's own derivation (its error terms ``δ^{u}`` from the
gradients ``g^{s'}`` arriving at its outputs, and each input's gradient through them) holds at every
step, and the multivariable chain rule on the unrolled graph composes those steps:

    g^{s}_t = G^{s}_t + (the cell's dE/ds at step t + 1)     for t < T,   g^{s}_T = G^{s}_T
    δ^{u}_t = the cell's error term of u, at step t
    dE/dx_t = the cell's dE/dx at step t,    dE/ds_0 = the cell's dE/ds at step 1
    dE/dW   = sum over t = 1..T of the cell's dE/dW at step t

(``g^{s}_t`` is the gradient arriving at step t's output ``s_t`` from outside the step: from the loss
and from step t + 1). ``check_unrolled`` runs the chain rule element by element on the cell copied
``T`` times at small sizes and compares every value, exactly.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import numpy as np
import sympy as sp

from derive.define.op import Op
from derive.engine.backprop import upstream_of
from derive.engine.derivation import Derivation, derive

STEP = sp.Symbol("t", integer=True)
STEPS = sp.Symbol("T", integer=True, positive=True)


@dataclass(frozen=True)
class State:
    """What the cell carries from one step to the next: read as ``input``, computed as ``output``."""

    input: str
    output: str
    upstream: str  # the cell's name for the gradient arriving at the output (g, g_cn)

    @property
    def direct(self) -> str:
        """The gradient the loss sends the state directly (``G_h``)."""
        return f"G_{self.input}"


@dataclass(frozen=True)
class Unrolled:
    """The cell's derivation composed over the steps, in time-indexed elements (the step first:
    ``h[t - 1, n, k]`` is an element of ``h_{t-1}``)."""

    cell: Derivation
    states: tuple[State, ...]
    #: (element, definition, the cell's node) of the forward pass at step t, in computing order
    forward: tuple
    #: (element, the loss's direct gradient, what step t + 1 sends back): each state's arriving gradient;
    #: at t = T only the first term
    arriving: tuple
    #: (element, the node it is the error term of, rhs, the cell's node): the cell's error terms at step t
    errors: tuple
    #: (input element, rhs, the cell's input, kind): the per-step inputs' gradients at step t ("step"), the
    #: first states' ("first"), the weights' summed over t ("weight")
    gradients: tuple
    #: What showed the recursion right before anything was printed (``certified``).
    certificate: str = ""

    @property
    def op(self) -> Op:
        return self.cell.op


def recurrent_states(op: Op) -> tuple[State, ...]:
    """The states of a cell: each input ``s`` with an output ``sn`` of its shape; a ValueError if none."""
    outputs = {y.name: y for y in op.outputs}
    states = tuple(State(i.name, f"{i.name}n", upstream_of(op, outputs[f"{i.name}n"]).name) for i in op.inputs
                   if f"{i.name}n" in outputs and tuple(outputs[f"{i.name}n"].shape) == tuple(i.shape))
    if not states or len(states) != len(outputs):
        raise ValueError(f"--unroll: {op.name} is no recurrent cell (it needs, for each output sn, an input s "
                         f"of its shape: the state it carries to the next step)")
    return states


def is_recurrent(op: Op) -> bool:
    """Whether ``op`` is a recurrent cell: each output the next value of an input of its shape."""
    try:
        recurrent_states(op)
    except ValueError:
        return False
    return True


class _Steps:
    """Moves the cell's elements to a step: the states it reads to the step before, the rest to the step,
    the weights nowhere."""

    def __init__(self, op: Op, states: tuple[State, ...]):
        batch = op.inputs[0].shape[0]
        self.previous = {s.input for s in states}
        self.renamed = {s.output: s.input for s in states}  # s_t is what step t computes
        self.renamed.update({f"d{s.output}": f"d{s.input}" for s in states})
        self.weights = {i.name for i in op.inputs if i.name not in self.previous and batch not in i.shape}

    def at(self, expr: sp.Expr, step) -> sp.Expr:
        elements = {e for e in sp.preorder_traversal(expr) if isinstance(e, sp.Indexed)}
        return expr.xreplace({e: self.element(e, step) for e in elements})

    def element(self, e: sp.Indexed, step) -> sp.Expr:
        name = str(e.base.label)
        if name in self.weights:
            return e
        if name in self.previous:
            return sp.IndexedBase(name)[(step - 1, *e.indices)]
        return sp.IndexedBase(self.renamed.get(name, name))[(step, *e.indices)]


def cell_steps(u: "Unrolled") -> _Steps:
    """How ``u``'s cell elements move to a step (its weights, the states it reads, the outputs renamed)."""
    return _Steps(u.op, u.states)


def unroll(cell: Op) -> Unrolled:
    """The cell unrolled over ``T`` steps (see the module's docstring)."""
    states = recurrent_states(cell)
    d = derive(cell)
    if not d.adjoints:
        raise ValueError(f"--unroll: {cell.name}'s derivation names no error terms to recur on")
    steps, t = _Steps(d.op, states), STEP
    forward = tuple((steps.at(node[node.index], t), steps.at(node.definition, t), node) for node in d.op.intermediates)
    through = {g.input.name: g for g in d.backprop}
    arriving = tuple((sp.IndexedBase(s.upstream)[(t, *through[s.input].index)],
                      sp.IndexedBase(s.direct)[(t, *through[s.input].index)],
                      steps.at(through[s.input].expr, t + 1)) for s in states)
    errors = tuple((steps.at(a.tensor[a.index], t), steps.at(a.node[a.index], t), steps.at(a.expr, t), a.node)
                   for a in d.adjoints)
    gradients = []
    for g in d.backprop:
        if g.input.name in steps.weights:
            gradients.append((g.input.tensor[g.index], sp.Sum(steps.at(g.expr, t), (t, 1, STEPS)), g.input, "weight"))
        elif g.input.name in steps.previous:
            gradients.append((sp.IndexedBase(g.input.name)[(0, *g.index)], steps.at(g.expr, 1), g.input, "first"))
        else:
            gradients.append((sp.IndexedBase(g.input.name)[(t, *g.index)], steps.at(g.expr, t), g.input, "step"))
    return certified(Unrolled(d, states, forward, arriving, errors, tuple(gradients)))


#: The step counts the recursion is checked at before it is printed: every step of T = 3 covers the last
#: step (no later one) and steps that pass their gradient on through one and two later ones; a second T
#: shows a formula that reads T where it should not. ``derive check --unroll`` checks T = 1 to 4.
CHECKED_STEPS = (2, 3)


def certified(u: Unrolled) -> Unrolled:
    """``u`` with its certificate, or a Mismatch: nothing is printed from a recursion that fails its check."""
    from derive.engine import Mismatch
    from derive.engine.check import example_sizes
    from derive.engine.network import _sizes_text
    sizes = example_sizes(u.op)
    for steps in CHECKED_STEPS:
        wrong = check_unrolled(u, steps, sizes)
        if wrong:
            raise Mismatch(f"{u.op.name} unrolled: {wrong[0]}; nothing is printed from a recursion that fails its check")
    return replace(u, certificate=f"every error term, arriving gradient and gradient equal the chain rule run element "
                                  f"by element on the cell copied T = {', '.join(map(str, CHECKED_STEPS))} times at "
                                  f"{_sizes_text(sizes)} (SymPy's derivative of each element's definition; exact "
                                  f"rational inputs, 60 digits)")


# -- the check against the cell copied T times ----------------------------------------------------

@dataclass
class StepValues:
    """The unrolled cell at explicit sizes and ``steps``, at exact rational inputs: every input and forward
    element (``values``), the same with the derivation's arriving gradients and error terms (``derived``),
    and the gradients (``gradients``, by the input's element: ``(W_hh, (k, j))``, ``(x, (t, n, d))``,
    ``(h, (0, n, j))``), all keyed ``(name, indices)`` with the step first."""

    sizes: dict
    values: dict
    derived: dict
    gradients: dict
    local: list  # (key, the element's definition in the elements it reads), in computing order

    def value(self, expr, known: dict, at: dict | None = None) -> sp.Expr:
        """``expr`` (time-indexed elements, every sum written out at ``sizes``) at the index values ``at``,
        from the elements ``known``; nan where it reads an element no step computes."""
        from derive.engine.network import _key, _number
        found = self.concrete(expr, at or {})
        leaves = {e for e in sp.preorder_traversal(found) if isinstance(e, sp.Indexed)}
        if any(_key(e) not in known for e in leaves):
            return sp.nan
        return _number(found.xreplace({e: known[_key(e)] for e in leaves}), {})

    def concrete(self, expr, at: dict) -> sp.Expr:
        """``expr`` written out and at the sizes once (kept, for all its elements and steps), at ``at``."""
        from derive.define.functions import written_out
        from derive.engine.check import exact_constants, expand_sums
        prepared = self.__dict__.setdefault("_prepared", {})
        if expr not in prepared:
            prepared[expr] = written_out(exact_constants(expr)).xreplace(self.sizes)
        return expand_sums(prepared[expr].xreplace({k: sp.Integer(v) for k, v in at.items()}))


def cells(shape, sizes: dict):
    """Every index of an array of ``shape`` at ``sizes``."""
    return itertools.product(*(range(int(sp.sympify(n).xreplace(sizes))) for n in shape))


def step_values(u: Unrolled, steps: int, sizes: dict | None = None, seed: int = 1) -> StepValues:
    """The forward pass and the derivation's recursion run at ``steps`` steps, at exact rational inputs drawn
    with ``seed`` (two decimals, in [-1.5, 1.5)); the loss's direct gradients ``G`` drawn the same way."""
    from derive.engine.check import example_sizes
    op = u.op
    sizes = {s: sp.Integer(v) for s, v in (sizes or example_sizes(op)).items()}  # distinct, none 1: W^T shows
    sizes[STEPS] = sp.Integer(steps)
    rng = np.random.default_rng(seed)
    values = {}  # (name, index) -> value: inputs, the forward, then the derived gradients
    at = StepValues(sizes, values, {}, {}, [])

    def draw(name, shape, lead=()):
        for idx in cells(shape, sizes):
            values[(name, (*lead, *idx))] = sp.Rational(int(rng.integers(-150, 150)), 100)

    def letters(index, idx, step=None):
        return dict(zip(index, idx)) | ({} if step is None else {STEP: step})  # a weight's sum runs over t itself

    kinds = {inp.name: kind for _, _, inp, kind in u.gradients}
    for inp in op.inputs:
        kind = kinds.get(inp.name, "step")
        draw(inp.name, inp.shape, (0,)) if kind == "first" else draw(inp.name, inp.shape) if kind == "weight" else \
            [draw(inp.name, inp.shape, (step,)) for step in range(1, steps + 1)]
    for s in u.states:
        for step in range(1, steps + 1):
            draw(s.direct, op.input(s.input).shape, (step,))
    for step in range(1, steps + 1):
        for element, definition, node in u.forward:
            for idx in cells(node.shape, sizes):
                key = (str(element.base.label), (step, *idx))
                at.local.append((key, at.concrete(definition, letters(node.index, idx, step))))
                values[key] = at.value(definition, values, letters(node.index, idx, step))
    derived = at.derived
    derived.update(values)
    for step in range(steps, 0, -1):
        for (element, direct, later), s in zip(u.arriving, u.states):
            for idx in cells(op.input(s.input).shape, sizes):
                where = letters(element.indices[1:], idx, step)
                got = at.value(direct, derived, where)
                if step < steps:
                    got += at.value(later, derived, where)
                derived[(s.upstream, (step, *idx))] = got
        for element, node, rhs, cell_node in u.errors:
            for idx in cells(cell_node.shape, sizes):
                derived[(str(element.base.label), (step, *idx))] = at.value(rhs, derived,
                                                                            letters(cell_node.index, idx, step))
    for element, rhs, inp, kind in u.gradients:
        index = element.indices[1:] if kind != "weight" else element.indices
        for step in range(1, steps + 1) if kind == "step" else [None]:
            for idx in cells(inp.shape, sizes):
                lead = {"step": (step,), "first": (0,), "weight": ()}[kind]
                at.gradients[(inp.name, (*lead, *idx))] = at.value(rhs, derived, letters(index, idx, step))
    return at


def check_unrolled(u: Unrolled, steps: int, sizes: dict | None = None, seed: int = 1) -> list[str]:
    """Every element where the recursion disagrees with the chain rule run element by element on the cell
    copied ``steps`` times (SymPy's derivative of each element's own definition in the elements it reads,
    accumulated from the loss back), at exact rational inputs; empty when all agree."""
    from derive.engine.network import _agree, _Unrolled
    at = step_values(u, steps, sizes, seed)
    graph = _Unrolled(at.local)
    brute = graph.accumulate({graph.symbol(key): v for key, v in at.values.items()},
                             {(s.input, (step, *idx)): at.values[(s.direct, (step, *idx))]
                              for s in u.states for step in range(1, steps + 1)
                              for idx in cells(u.op.input(s.input).shape, at.sizes)})
    wrong = []

    def compare(key, got):
        want = brute.get(key, sp.S.Zero)
        if not _agree(got, want):
            wrong.append(f"{key[0]}[{', '.join(map(str, key[1]))}]: derived {sp.N(got, 8)} != unrolled "
                         f"{sp.N(want, 8)} (T = {steps})")

    read_inside = {str(node.base.label) for _, node, _, _ in u.errors}
    for step in range(steps, 0, -1):
        for s in u.states:
            if s.input not in read_inside:  # no error term of s_t inside the cell: this is all of dE/ds_t
                for idx in cells(u.op.input(s.input).shape, at.sizes):
                    compare((s.input, (step, *idx)), at.derived[(s.upstream, (step, *idx))])
        for element, node, _, cell_node in u.errors:
            for idx in cells(cell_node.shape, at.sizes):
                compare((str(node.base.label), (step, *idx)), at.derived[(str(element.base.label), (step, *idx))])
    for key, got in at.gradients.items():
        compare(key, got)
    return wrong
