"""What a hand-derived formula is checked against: an op's gradients, a chain's error terms and gradients.

On the op's or chain's names (``derive.verifier.names``), once derived: a
world that can put numbers in: the targets as the machine derived them,
which tensors are independent (drawn at random, as small exact decimals)
and which are defined from them (computed in order), and the same
definitions symbolically, for exact proofs at small sizes.
"""
from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from derive.engine import check
from derive.engine.chain import ChainDerivation
from derive.engine.backprop import expanded, upstream_of
from derive.engine.derivation import derive
from derive.verifier.names import ETA, Names, Target, chain_names, op_names
from derive.define.functions import KnownFunction
from derive.define.op import Op
from derive.define.symbols import FirstMax, substitute_indices

PRECISION = 50  # digits of the values drawn and computed: a difference of 1e-16 stands far above their rounding


@dataclass
class World(Names):
    """An op or a chain, ready for numbers: the names, the targets derived, what is drawn and what is computed."""

    independent: list  # (IndexedBase, domain)
    dependent: list  # (IndexedBase, index, definition): each defined from what comes before
    named: set  # bases of the dependents that are named results (error terms), expanded first
    sizes: tuple  # size symbols, in the order size sets fill them
    printer: object  # ArticleLatex for the machine's formulas
    simplex: tuple = ()  # tensors whose rows sum to 1
    constants: dict = field(default_factory=dict)  # hyper-parameters at their defaults, the learning rate
    #: Local derivatives of the activations, (expression by element, its TeX): for the hint
    #: "a missing activation-derivative factor".
    activations: list = field(default_factory=list)
    #: Sizes the op says fit together (a kernel no larger than its image), one dict per size set.
    given_sizes: list = field(default_factory=list)
    #: The hyper-parameters' test values, one dict per case (stride 1 and 2, padding 0 and 1).
    hyper_cases: list = field(default_factory=list)
    #: Integer inputs (token ids) and how many values each takes (the size of the axis it indexes).
    index_bounds: dict = field(default_factory=dict)
    #: Sizes that follow from a size and a hyper-parameter (group norm's K = C / groups), by symbol.
    derived_sizes: dict = field(default_factory=dict)
    _definitions: dict = field(default_factory=dict)
    _unrolled: dict = field(default_factory=dict)
    _points: dict = field(default_factory=dict)
    _forms: dict = field(default_factory=dict)
    _expected: dict = field(default_factory=dict)

    # -- sizes --

    def size_sets(self, tied: list, sample: bool, patterns=((2, 3, 4, 5, 3), (3, 2, 5, 4, 2), (4, 5, 2, 3, 4))):
        """Small explicit sizes, distinct where possible (a transposed index shows), tied sizes equal, or
        those the op gives; each set with the next test values of the hyper-parameters."""
        out = []
        for case, pattern in enumerate(patterns):
            values = dict(zip(self.sizes, itertools.cycle(pattern)))
            if self.given_sizes:
                values.update({s: v for s, v in self.given_sizes[case % len(self.given_sizes)].items()
                               if s in values})
            if sample and self.table.batch_size in values:
                values[self.table.batch_size] = 1
            for group in tied:  # sizes a formula equates; a derived size (H + 2 P) cannot be set, only read
                fixed = [s for s in group if s == 1]
                free = [s for s in group if s in values]
                if not free:
                    continue
                first = 1 if fixed else values[min(free, key=self.sizes.index)]
                for s in free:
                    values[s] = first
            hyper = self.hyper_cases[case % len(self.hyper_cases)] if self.hyper_cases else {}
            found = {**{s: sp.Integer(v) for s, v in values.items()}, **hyper}
            found.update({s: sp.sympify(rule).xreplace(found) for s, rule in self.derived_sizes.items()})
            out.append(found)
        unique = []
        for sizes in out:
            if sizes not in unique:
                unique.append(sizes)
        return unique

    def describe(self, sizes: dict, sample: bool = False) -> str:
        """``N=2, C=3, S=4``, and the hyper-parameters' values if the op has any (``s=2, P=1``), by
        the names the derivation prints."""
        shown = ", ".join(f"{self.label(k)}={v}" for k, v in sizes.items()
                          if k in self.sizes and not (sample and k == self.table.batch_size))
        hyper = ", ".join(f"{self.label(k)}={float(v):g}" for k, v in sizes.items() if k not in self.sizes)
        return f"{shown} ({hyper})" if hyper else shown

    def label(self, symbol) -> str:
        """A size or constant as the derivation prints it (``H`` for the image height ``IH``)."""
        return next((e.head() for e in self.table.entries if e.value == symbol), str(symbol))

    # -- numbers --

    @property
    def has_kinks(self) -> bool:
        return any(domain == "nonzero" for _, domain in self.independent)

    def draw(self, sizes: dict, rng: np.random.Generator, kinks: bool = False, digits: int = PRECISION,
             number: int = 0) -> dict:
        """Random inputs, as exact two-decimal numbers, and every defined value computed from them to ``digits``.

        ``kinks`` puts every input drawn away from a kink (ReLU's 0) onto it:
        a formula that is right except at the kink is still wrong there. An input
        with a kink has both signs at every point, and each element takes the other
        sign at the next point (``number``): every branch is compared at every size
        set, with its hyper-parameters (ELU's ``alpha`` only shows where ``x <= 0``).
        """
        values = {**self.constants, **{k: v for k, v in sizes.items() if k not in self.sizes}}
        for base, domain in self.independent:
            shape = [int(sp.sympify(s).xreplace(sizes)) for s in base.shape]
            if domain == "index":
                bound = int(sp.sympify(self.index_bounds[base]).xreplace(sizes))
                values.update({base[idx]: sp.Integer(int(v)) for idx, v in np.ndenumerate(rng.integers(0, bound, shape))})
                continue
            sample = check._draw(domain, shape, rng)
            if domain == "nonzero":
                sample = np.abs(sample) * _alternating_signs(shape, number)
            if kinks and domain == "nonzero":
                sample = np.zeros(shape)
            for idx in np.ndindex(*shape):
                values[base[idx] if idx else base] = sp.Rational(round(float(sample[idx]) * 100), 100)
            if domain == "simplex":  # keep each row summing to 1 exactly
                *lead, last = shape
                for idx in itertools.product(*(range(n) for n in lead)):
                    rest = sum(values[base[(*idx, p)]] for p in range(last - 1))
                    values[base[(*idx, last - 1)]] = 1 - rest
        for base, idx_symbols, definition in self.dependent:
            primitive = definition.has(FirstMax)  # max pooling's argmax mask takes its window's numbers
            for idx, expr in self._elements(base, idx_symbols, definition, sizes):
                values[base[idx]] = sp.N(check.at_numbers(expr, values) if primitive else expr.xreplace(values),
                                         digits)
        return values

    def point(self, sizes: dict, seed: int, number: int, kinks: bool = False, digits: int = PRECISION) -> dict:
        """The ``number``-th random point at these sizes: the same for every formula checked (kept); with more
        ``digits``, the same inputs and the values computed from them more precisely."""
        key = (size_key(sizes), seed, number, kinks, digits)
        if key not in self._points:
            rng = np.random.default_rng([seed, size_key(sizes), number, int(kinks)])
            self._points[key] = self.draw(sizes, rng, kinks, digits, number)
        return self._points[key]

    def expected(self, target: Target, sizes: dict, elements: list, values: dict, evaluate) -> list:
        """The target's value at each element at the point ``values`` (from ``point``): kept, as every
        formula checked against the same target needs the same numbers."""
        at_key = tuple(tuple(sorted((str(k), int(v)) for k, v in element.items())) for element in elements)
        forms_key = (id(target), size_key(sizes), at_key)
        if forms_key not in self._forms:
            self._forms[forms_key] = forms(target.expr, sizes, elements)
        key = (*forms_key, id(values))
        if key not in self._expected:
            self._expected[key] = [evaluate(form) for form in self._forms[forms_key]]
        return self._expected[key]

    def _elements(self, base, idx_symbols, definition, sizes) -> list:
        """Each element's index and its definition written out at these sizes (kept: every draw needs them).

        Definitions refer to the dependents before them by element, as they are computed in that order.
        """
        key = (base, size_key(sizes))
        if key not in self._unrolled:
            shape = [int(sp.sympify(s).xreplace(sizes)) for s in base.shape]
            definition = unroll(definition, sizes)
            self._unrolled[key] = [(idx, definition.xreplace({i: sp.Integer(v) for i, v in zip(idx_symbols, idx)}))
                                   for idx in itertools.product(*(range(n) for n in shape))]
        return self._unrolled[key]

    # -- symbols --

    def definitions(self, sizes: dict, level: str) -> dict:
        """Element -> definition at these sizes: ``named`` writes out the error terms only, ``full`` everything."""
        key = (size_key(sizes), level)
        if key not in self._definitions:
            found = {}
            for base, idx_symbols, definition in self.dependent:
                if level == "named" and base not in self.named:
                    continue
                for idx, expr in self._elements(base, idx_symbols, definition, sizes):
                    found[base[idx]] = expr.xreplace(found) if level == "full" else expr
            self._definitions[key] = found
        return self._definitions[key]

    def constraint(self, sizes: dict) -> dict:
        """Each simplex row's last entry as 1 minus the others: the assumption, made explicit."""
        rule = {}
        for base in self.simplex:
            *lead, last = [int(sp.sympify(s).xreplace(sizes)) for s in base.shape]
            for idx in itertools.product(*(range(n) for n in lead)):
                rule[base[(*idx, last - 1)]] = 1 - sum(base[(*idx, p)] for p in range(last - 1))
        return rule

def _alternating_signs(shape, number: int) -> np.ndarray:
    """+1 and -1 in turn over the elements, in a fixed shuffled order (the same at every point), flipped at
    odd ``number``s: each element changes sign from one point to the next."""
    count = int(np.prod(shape))
    order = np.random.default_rng([count, 11]).permutation(count)
    return np.where((order + number) % 2 == 0, 1.0, -1.0).reshape(shape)


def size_key(sizes: dict) -> int:
    """A number that names a size set (with its hyper-parameters), the same in every process."""
    return zlib.crc32(repr(sorted((str(k), str(v)) for k, v in sizes.items())).encode())


def unroll(expr: sp.Expr, sizes: dict) -> sp.Expr:
    """``expr`` at explicit sizes with every sum written out; its free indices stay symbols.

    Sums go first, indices after: a letter may be free in one place and
    summed over in another (``\\delta_k \\sum_k ...``), and substituting
    it into a sum's own variable would be wrong.
    """
    return check.expand_sums(expr.xreplace(sizes))


def forms(expr: sp.Expr, sizes: dict, elements: list) -> list:
    """``expr`` at each element (index symbol -> number) and at explicit sizes, every sum written out.

    The indices go in first (a bound letter of the same name renamed out of
    the way), so that brackets and index arithmetic are numbers before the
    sums are written out: a term a bracket rules out is never built.
    """
    return [unroll(substitute_indices(expr, {k: sp.Integer(v) for k, v in at.items()}), sizes) for at in elements]


# -- one op ----------------------------------------------------------------------

def _exact(value) -> sp.Expr:
    """A hyper-parameter's value as an exact number; a flag (attention's ``causal``) is 0 or 1."""
    return sp.Integer(int(value)) if isinstance(value, bool) else sp.nsimplify(value)


def op_world(op: Op, names: Names | None = None) -> World:
    """The op derived, on its ``names`` (the same entries, so that a formula read on them fits)."""
    from codegen.latex.notation import ArticleLatex
    from codegen.latex.blocks import display, notation
    names = names or op_names(op)
    d = derive(op)
    op = d.op  # the working form: the derivation's own intermediates, which the names were read on
    table = names.table
    by_value = {e.value: e for e in table.entries}
    targets = []
    for a in d.adjoints:  # each named gradient of an intermediate, in terms of the others (and written out)
        targets.append(Target(by_value[a.tensor], a.index, display(d, a.expr),
                              display(d, expanded(a.expr, d.adjoints)), is_gradient=False))
    for grad in d.gradients:
        expr = display(d, grad.expr)
        targets.append(Target(by_value[grad.input.tensor], tuple(grad.index), expr, expr))
    independent = [(inp.tensor, inp.domain) for inp in op.inputs]
    if not op.is_loss:
        independent += [(upstream_of(op, y), "real") for y in op.outputs]
    dependent = [(node, tuple(node.index), node.definition) for node in op.intermediates if node.index]
    dependent += [(a.tensor, a.index, expanded(a.expr, d.adjoints)) for a in d.adjoints]
    simplex = tuple(inp.tensor for inp in op.inputs if inp.domain == "simplex")
    cases = max((len(h.cases) for h in op.hyper), default=0)
    hyper_cases = [{h.symbol: _exact(values[h.name]) for h in op.hyper}
                   for values in (check.hyper_values(op, case, resolve=True) for case in range(cases))]
    defaults = check.hyper_values(op, resolve=True)
    constants = {h.symbol: _exact(defaults[h.name]) for h in op.hyper}
    activations = []
    if op.shape_kind == "flat" and not op.is_loss:
        local = d.gradients[0].expr.xreplace({d.upstream[d.gradients[0].index]: sp.S.One})
        activations.append((local, ArticleLatex(notation(op)).doprint(local)))
    for local in function_derivatives([t.expr for t in targets]):
        activations.append((local, ArticleLatex(notation(op)).doprint(local)))
    return World(op.name, table, targets, independent, dependent, {a.tensor for a in d.adjoints}, tuple(table.sizes),
                 ArticleLatex(notation(op)), simplex, constants, activations,
                 [given for given in (op.small_sizes, op.test_sizes) if given], hyper_cases,
                 {inp.tensor: check.index_bound(op, inp) for inp in op.inputs if inp.domain == "index"},
                 dict(op.derived_sizes))


def function_derivatives(exprs) -> list:
    """The derivative of each σ, softplus, Φ, φ and tanh the results apply, by its argument (``σ(1 - σ)``):
    a factor often left out, or put in twice (binary cross-entropy on logits times ``σ'(z)`` again)."""
    calls = sorted({e for expr in exprs for e in sp.preorder_traversal(expr)
                    if isinstance(e, (KnownFunction, sp.tanh))}, key=sp.default_sort_key)
    return [call.fdiff() if isinstance(call, KnownFunction) else 1 - call ** 2 for call in calls]


# -- a chain ----------------------------------------------------------------------

def chain_world(c: ChainDerivation, names: Names | None = None) -> World:
    """The chain derived, on its ``names`` (from its layout: the same entries)."""
    from codegen.latex.chain import chain_notation
    from codegen.latex.notation import ArticleLatex
    names = names or chain_names(c)
    table = names.table
    by_tensor = {e.value: e for e in table.entries if e.rank}
    targets = []
    for q in c.backward:
        if q.kind == "delta":
            entry, idx = by_tensor[q.lhs.base], tuple(q.lhs.indices)
        else:
            element = q.lhs.variables[0]
            entry, idx = by_tensor[element.base], tuple(element.indices)
        targets.append(Target(entry, idx, q.expr, q.expanded, is_gradient=q.kind != "delta"))
    independent = []
    for name, tensor in c.inputs.items():
        domain = next((inp.domain for layer in c.layers for inp in layer.op.inputs
                       if layer.tensors.get(inp.name) is tensor), "real")
        independent.append((tensor, domain))
    for layer in c.layers:
        for inp in layer.op.inputs[1:]:
            tensor = layer.tensors[inp.name]
            if inp.differentiable:
                independent.append((tensor, inp.domain))
    dependent = []
    for lhs, rhs in c.forward:
        if isinstance(lhs, sp.Indexed):
            dependent.append((lhs.base, tuple(lhs.indices), rhs))
    for delta, (idx, expanded) in c.deltas.items():
        dependent.append((delta, tuple(idx), expanded))
    simplex = tuple(layer.tensors[inp.name] for layer in c.layers for inp in layer.op.inputs
                    if inp.domain == "simplex")
    sizes = tuple(sorted({s for e in table.entries for s in e.shape}, key=lambda s: "NIJKHFEDC".find(s.name)))
    printer = ArticleLatex(chain_notation(c))
    return World(",".join(c.names), table, targets, independent, dependent, set(c.deltas), sizes,
                 printer, simplex, {ETA: sp.Rational(1, 10), **{h.symbol: sp.nsimplify(h.default)
                                                               for layer in c.layers for h in layer.op.hyper}},
                 _chain_activations(c, printer))


def _chain_activations(c: ChainDerivation, printer) -> list:
    """Each elementwise layer's local derivative at its own output index (``y_j (1 - y_j)``)."""
    from derive.engine.chain import _instantiate, sample_form
    found = []
    for layer in c.layers:
        if layer.op.shape_kind == "flat" and not layer.op.is_loss:
            grad = derive(layer.op).gradients[0]
            local = _instantiate(grad.expr, layer, lambda idx: sp.S.One)
            found.append((local, printer.doprint(sample_form(local))))
    return found

