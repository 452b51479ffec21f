"""From a forward definition to its backward pass: one vector-Jacobian product per input.

For an op with output ``y`` and an upstream gradient ``g = dE/dy`` we form
``L = sum g * y`` and differentiate it by one generic element of each
input (the notes' recipe); the chain rule across layers is ``chain.py``'s
job. Every result passes the same fixed pipeline, recorded step by step
so that LaTeX can show the derivation and tests can check each step.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache

import sympy as sp

from derive.define.op import Input, Op
from derive.define.symbols import (Intermediate, avoid_capture, fresh_scope, index_symbols, is_index,
                                   iverson_form, rebuild)
from derive.engine import budget, cache, rewrite
from derive.engine.backprop import backward_pass, expanded, output_objective, upstream_of
from derive.engine.budget import attempt
from derive.engine.deltas import drop_implied_brackets, eliminate_deltas
from derive.engine.prepare import prepare


@dataclass(frozen=True)
class Step:
    """One stage of a derivation: what was done, and the expression after it."""

    name: str
    expr: sp.Expr


@dataclass(frozen=True)
class Gradient:
    """``dE/d input[index]`` for one input, with the steps that led to it."""

    input: Input
    index: tuple
    steps: tuple[Step, ...]
    #: Simplifications given up within their budget (the result before them stands, and is right).
    abandoned: tuple[str, ...] = ()

    @property
    def expr(self) -> sp.Expr:
        return self.steps[-1].expr

    @property
    def element(self) -> sp.Expr:
        return self.input.tensor[self.index] if self.index else self.input.tensor


@dataclass(frozen=True)
class Derivation:
    """Everything the emitters print: the forward definitions and one gradient per input.

    ``op`` is the working form the engine derived (``derive.engine.prepare``), ``source`` the op
    as it was given: the same values, the working form with its known functions named.
    """

    op: Op
    upstream: sp.Expr
    gradients: tuple[Gradient, ...]
    identities: tuple[tuple[sp.Expr, sp.Expr], ...]
    source: Op | None = None
    #: What showed every gradient right before anything was printed (``derive.engine.check.certify``).
    certificate: str = ""
    #: The backward pass through the intermediates (``derive.engine.backprop``): each intermediate's
    #: gradient from its readers', and each input's gradient in terms of them. Empty for an op whose
    #: output reads its inputs directly.
    adjoints: tuple = ()
    backprop: tuple[Gradient, ...] = ()
    #: False for an op too large for its gradients to read well written out in full (a GRU's run to
    #: 200 terms): each gradient is then its form through the intermediates expanded, for the checks
    #: and the verifier, and is shown and generated only through the intermediates.
    written_out: bool = True

    @property
    def forward(self) -> tuple[Intermediate, ...]:
        return self.op.intermediates

    def gradient(self, name: str) -> Gradient:
        for g in self.gradients:
            if g.input.name == name:
                return g
        raise ValueError(f"wrt: {self.op.name} has no gradient for {name!r}; "
                         f"it has {[g.input.name for g in self.gradients]}")

    def upstream_at(self, index) -> sp.Expr:
        return self.upstream[index] if index else self.upstream


#: Ops derived another way: a network composed into one op is derived node by node and checked against
#: the unrolled network (``derive.engine.network``), which puts its derivation here for every reader.
COMPOSED: dict = {}


@lru_cache(maxsize=None)
def derive(op: Op) -> Derivation:
    """Derive every differentiable input's gradient of ``op`` (or load it from the active cache)."""
    if op in COMPOSED:
        return COMPOSED[op]
    store = cache.active()
    found = store.load(op) if store else None
    if found is None:
        found = derive_afresh(op)
        if store:
            store.store(op, found)
    return found


def derive_afresh(op: Op) -> Derivation:
    """The derivation itself, without any cache, checked against SymPy's derivative of the unrolled
    forward before it is returned: a wrong gradient is an error, never a result."""
    derivation = derive_unchecked(op)
    from derive.engine.check import certify  # the check needs this module's classes
    return dataclasses.replace(derivation, certificate=certify(derivation))


def derive_unchecked(op: Op) -> Derivation:
    """The derivation before its check: for ``derive check``, which reports what it finds."""
    work = prepare(op)
    identities = tuple(work.assumptions())
    for lhs, rhs in work.theorems:
        proven, why = attempt(lambda _: rewrite.prove(lhs, rhs), None)
        if not proven:
            raise ValueError(f"{op.name}: cannot prove the identity {lhs} = {rhs} from the definitions"
                             + (f" (gave up after {why})" if why else ""))
        identities += ((lhs, rhs),)
    g = upstream_of(work)

    def simplify(op_, objective, element, sizes, restore, readers):
        return vector_jacobian(op_, objective, element, sizes, identities, fold=restore,
                               into=[n for n in op_.intermediates if n in readers])

    adjoints, through = backward_pass(work, g, identities, simplify)
    adjoints = tuple(dataclasses.replace(a, steps=tuple(Step(s.name, readable(s.expr, work, set(a.index)))
                                                        for s in a.steps)) for a in adjoints)
    backprop = tuple(Gradient(inp, through[inp.name][0], tuple(Step(s.name, readable(s.expr, work,
                                                                                     set(through[inp.name][0])))
                                                               for s in through[inp.name][1]))
                     for inp in work.differentiable if inp.name in through)
    written_out = len(backprop) < len(work.differentiable) or sp.count_ops(rewrite.inline(work.output.definition)) <= WRITTEN_OUT_LIMIT
    if written_out:
        gradients = tuple(_gradient(work, inp, g, identities) for inp in work.differentiable)
    else:
        gradients = tuple(dataclasses.replace(b, steps=(Step("through the intermediates",
                                                             expanded(b.expr, adjoints)),))
                          for b in backprop)
    return Derivation(work, g, gradients, identities, source=op, adjoints=adjoints, backprop=backprop,
                      written_out=written_out)


#: Operations in an op's forward with its intermediates written out (a GRU's 61, a grouped conv2d's 50,
#: group norm's 36), beyond which its gradients are derived through the named intermediates only.
WRITTEN_OUT_LIMIT = 56


def _gradient(op: Op, inp: Input, g: sp.Expr, identities) -> Gradient:
    with fresh_scope():
        return _derive_gradient(op, inp, g, identities)


def _derive_gradient(op: Op, inp: Input, g: sp.Expr, identities) -> Gradient:
    index = display_index(op, inp)
    y = op.output
    objective = g * y.definition if op.is_loss else output_objective(op)
    objective = avoid_capture(objective, set(index))
    element = inp.tensor[index]
    if op.is_loss:
        chain = g * sp.Derivative(y.definition, element, evaluate=False)
    else:  # sum over the outputs of (upstream gradient) * (local derivative)
        chain = objective.replace(lambda e: isinstance(e, sp.Indexed) and e.base in op.outputs,
                                  lambda e: sp.Derivative(e, element, evaluate=False))
    steps, abandoned = vector_jacobian(op, objective, element, dict(zip(index, inp.shape)), identities)
    steps = [Step("chain rule", chain)] + steps
    named = tuple(Step(s.name, readable(s.expr, op, set(index))) for s in steps)
    return Gradient(inp, index, named, tuple(abandoned))


def index_ranges(op: Op) -> dict:
    """The values an integer input takes, by its tensor (token ids in 0..V - 1 for a vocabulary of V):
    the range an index read through a bracket keeps is no condition at all. The forward checks them."""
    from derive.engine.check import index_bound
    return {i.tensor: (0, index_bound(op, i) - 1) for i in op.inputs if i.domain == "index" and not i.outside}


def guarded_ranges(op: Op) -> dict:
    """The integer inputs that may also hold one value out of range (labels, ``ignore_index``), as
    ``{tensor: (lo, hi, value)}``: in range wherever they do not hold it, as the forward checks."""
    from derive.engine.check import index_bound
    value = {h.name: h.symbol for h in op.hyper}
    return {i.tensor: (0, index_bound(op, i) - 1, value[i.outside]) for i in op.inputs
            if i.domain == "index" and i.outside}


def vector_jacobian(op: Op, objective: sp.Expr, element: sp.Indexed, sizes: dict, identities,
                    fold=None, into=None) -> tuple[list[Step], list[str]]:
    """``d objective / d element``, differentiated and brought to textbook form: the steps, and the
    simplifications given up. ``sizes``: the element's indices and their ranges; ``fold``: what to do
    to each delta-free result before folding (the backward pass through intermediates restores them);
    ``into``: the intermediates to fold into, if not all of the op's (that pass differentiates only
    the definitions of what reads the node, so only they can fold back)."""
    ranges = {i: (0, s - 1) for i, s in sizes.items()}
    ranges.update(index_ranges(op))
    try:
        with budget.bounded():
            raw = iverson_form(rewrite.drop_empty_sums(sp.diff(iverson_form(objective), element)))
            eliminated = [drop_implied_brackets(_eliminate(raw, ranges, keep_shape), ranges, guarded_ranges(op))
                          for keep_shape in (False, True)]
    except budget.Overrun as overrun:
        raise ValueError(f"{op.name}: differentiating by {element} took over {overrun.what}; "
                         f"'--step-budget SECONDS' allows more") from None
    if fold is not None:
        raw, eliminated = fold(raw), [fold(e) for e in eliminated]
    # Deltas eliminated two ways (terms expanded, or the chain rule's shape kept): the simpler result wins.
    into = op.intermediates if into is None else into
    steps, abandoned = min((_simplified(e, into, identities) for e in dict.fromkeys(eliminated)),
                           key=lambda found: rewrite.cost(found[0][-1].expr))
    return [Step("differentiate", raw)] + steps, abandoned


def _simplified(expr: sp.Expr, intermediates, identities) -> tuple[list[Step], list[str]]:
    """The simplification steps after delta elimination, each within its budget; the steps that
    changed something, and those given up (their input stands, and is right)."""
    steps, abandoned = [Step("eliminate deltas", expr)], []

    def simplify(name, step):
        nonlocal expr
        result, why = attempt(step, expr)
        if why:
            abandoned.append(f"{name} (over {why})")
        elif result != expr:
            steps.append(Step(name, result))
            expr = result

    simplify("fold intermediates", lambda e: rewrite.fold(e, intermediates))
    if identities:
        simplify("apply identities", lambda e: rewrite.normalize(rewrite.apply_identities(e, identities)))
    simplify("textbook form", rewrite.textbook)
    return steps, abandoned


def _eliminate(expr: sp.Expr, ranges, keep_shape: bool) -> sp.Expr:
    """Normalise and eliminate deltas until nothing changes.

    A delta nested in a sum it does not depend on is pulled out by
    normalising, and only then meets the sum that can absorb it.
    """
    for _ in range(8):
        reduced = rewrite.normalize(eliminate_deltas(rewrite.normalize(expr), ranges, keep_shape))
        if reduced == expr:
            break
        expr = reduced
    return expr


def display_index(op: Op, inp: Input) -> tuple:
    """The indices the forward definition writes this input with (``w[k, j]``), else fresh ones.

    An input read at shifted positions (``x[n, c, h - P, w - P]``) is named
    by the index each position shifts (``n, c, h, w``).
    """
    used = {str(v) for node in op.intermediates for v in node.index} \
        | {str(v) for node in op.intermediates for sub in sp.preorder_traversal(node.definition)
           if isinstance(sub, sp.Indexed) for v in index_symbols(sub)}
    spare = iter(c for c in "hwuvrt" if c not in used)

    def main_index(i):
        """The index a position shifts (``h`` of ``h - P``); a window position (``i s + p``) gets a
        letter of its own (``h``), since neither i nor p names the pixel."""
        if len(index_symbols(i)) == 2:
            return sp.Symbol(next(spare, "z"), integer=True)
        own = [v for v in sp.Add.make_args(i) if is_index(v)]
        return own[0] if len(own) == 1 else None

    found = []
    for node in op.intermediates:
        for sub in sp.preorder_traversal(node.definition):
            if isinstance(sub, sp.Indexed) and sub.base == inp.tensor:
                idx = tuple(main_index(i) for i in sub.indices)
                if None not in idx and len(set(idx)) == len(idx):
                    found.append(idx)
    free = {i for node in op.intermediates for i in node.index}
    found.sort(key=lambda idx: not set(idx) <= free)  # prefer the output's own letters
    if found:
        return tuple(found[0])
    letters = [sp.Symbol(c, integer=True) for c in "pqrsuv"]
    return tuple(letters[: inp.tensor.rank])


def readable(expr: sp.Expr, op: Op, free: set) -> sp.Expr:
    """Rename bound indices to letters a reader expects.

    A renamed index (``k_1``) becomes a letter the op's definition sums
    over if one is free, else ``k'``; an original one keeps its name
    unless it is taken.
    """
    letters = {}  # the op's own letters, by the size they run over
    for node in op.intermediates:
        letters.update({i: s for i, s in zip(node.index, node.shape)})
        for sub in sp.preorder_traversal(node.definition):
            if isinstance(sub, sp.Sum):
                letters.update({v: hi + 1 for v, lo, hi in sub.limits})

    def choose(v, size, taken):
        base = v.name.split("_")[0]
        options = [] if "_" in v.name else [v]
        options += [i for i, s in letters.items() if s == size and i != v]
        options += [sp.Symbol(base + "'" * m, integer=True) for m in range(1, 6)]
        return next(p for p in options if p not in taken and "_" not in p.name)

    def visit(node, taken, mapping):
        """Rename sum by sum: a name is chosen where the sum is, among the names free there."""
        if isinstance(node, sp.Indexed):
            return node.xreplace(mapping) if mapping else node
        if isinstance(node, sp.Sum):
            taken, mapping = set(taken), dict(mapping)
            limits = []
            for v, lo, hi in reversed(node.limits):
                new = choose(v, hi - lo + 1, taken)
                taken.add(new)
                mapping[v] = new
                limits.append((new, lo.xreplace(mapping), hi.xreplace(mapping)))
            return sp.Sum(visit(node.function, taken, mapping), *reversed(limits))
        if not node.args:
            return mapping.get(node, node)
        return rebuild(node, (visit(a, taken, mapping) for a in node.args))

    return visit(expr, set(free) | {s for s in expr.free_symbols if s.is_integer}, {})
