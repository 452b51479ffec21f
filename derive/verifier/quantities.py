"""What a hand-derived formula is checked against: an op's gradients, a chain's error terms and gradients.

Each op or chain gives three things: a symbol table (the names a formula
may use, in the article's notation), the targets (one per gradient or
error term, as the machine derived them) and a world that can put numbers
in: which tensors are independent (drawn at random, as small exact
decimals) and which are defined from them (computed in order), and the
same definitions symbolically, for exact proofs at small sizes.
"""
from __future__ import annotations

import dataclasses
import itertools
import zlib
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from derive.engine import check
from derive.engine.chain import BATCH_SIZE, ChainDerivation, display_name
from derive.engine.derivation import Derivation, derive
from derive.verifier.meaning import BATCH_INDEX, Entry, Table, name_key
from derive.define.op import Op
from derive.define.symbols import FirstMax

PRECISION = 50  # digits of the values drawn and computed: a difference of 1e-16 stands far above their rounding
ETA = sp.Symbol("eta")  # the learning rate, as the chain's update rules write it


@dataclass(frozen=True)
class Target:
    """One quantity: ``dE/dw_{kj}`` of an op, or a chain's ``\\delta_j``, as the machine derived it."""

    entry: Entry  # the tensor it is the gradient of, or the error term itself
    index: tuple  # its element's indices (batch form)
    expr: sp.Expr  # in terms of the named quantities (the upstream of a loss is 1)
    expanded: sp.Expr  # every error term written out (equal to expr for one op)
    is_gradient: bool = True  # False for an error term, which names itself

    def letters(self, sample: bool) -> tuple:
        return tuple(str(i) for i in self.index if not (sample and i == BATCH_INDEX))

    def axes(self, sample: bool) -> tuple:
        """(index symbol, size) for each axis the formula must produce."""
        return tuple((i, s) for p, (i, s) in enumerate(zip(self.index, self.entry.shape))
                     if not (sample and p == self.entry.batch_axis))

    def name(self, sample: bool) -> str:
        element = self.entry.tex(sample)
        return rf"\frac{{\partial E}}{{\partial {element}}}" if self.is_gradient else element

    def short(self, sample: bool) -> str:
        element = self.entry.tex(sample)
        return f"dE/d{element}" if self.is_gradient else element


@dataclass
class World:
    """An op or a chain, ready for numbers: the table, the targets, what is drawn and what is computed."""

    title: str
    table: Table
    targets: list
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
            out.append({**{s: sp.Integer(v) for s, v in values.items()}, **hyper})
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

    def draw(self, sizes: dict, rng: np.random.Generator, kinks: bool = False, digits: int = PRECISION) -> dict:
        """Random inputs, as exact two-decimal numbers, and every defined value computed from them to ``digits``.

        ``kinks`` puts every input drawn away from a kink (ReLU's 0) onto it:
        a formula that is right except at the kink is still wrong there.
        """
        values = {**self.constants, **{k: v for k, v in sizes.items() if k not in self.sizes}}
        for base, domain in self.independent:
            shape = [int(sp.sympify(s).xreplace(sizes)) for s in base.shape]
            sample = check._draw(domain, shape, rng)
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
            self._points[key] = self.draw(sizes, rng, kinks, digits)
        return self._points[key]

    def expected(self, target: Target, sizes: dict, elements: list, values: dict, evaluate) -> list:
        """The target's value at each element at the point ``values`` (from ``point``): kept, as every
        formula checked against the same target needs the same numbers."""
        at_key = tuple(tuple(sorted((str(k), int(v)) for k, v in element.items())) for element in elements)
        forms_key = (id(target), size_key(sizes), at_key)
        if forms_key not in self._forms:
            whole = unroll(target.expr, sizes)
            self._forms[forms_key] = [at(whole, element) for element in elements]
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

    def target(self, entry: Entry) -> Target:
        for t in self.targets:
            if t.entry is entry:
                return t
        raise ValueError(f"wrt: {entry.tex()} is not a quantity of {self.title}; "
                         f"its quantities are {', '.join(t.short(self.table.default_sample) for t in self.targets)}")


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


def at(expr: sp.Expr, where: dict) -> sp.Expr:
    return expr.xreplace({k: sp.Integer(v) for k, v in where.items()})


# -- one op ----------------------------------------------------------------------

def op_world(op: Op) -> World:
    from codegen.latex.notation import ArticleLatex
    from codegen.latex.blocks import display, notation
    d = derive(op)
    table = op_table(op, d)
    by_value = {e.value: e for e in table.entries}
    targets = []
    for grad in d.gradients:
        expr = display(d, grad.expr)
        targets.append(Target(by_value[grad.input.tensor], tuple(grad.index), expr, expr))
    independent = [(inp.tensor, inp.domain) for inp in op.inputs]
    if not op.is_loss:
        independent.append((d.upstream, "real"))
    dependent = [(node, tuple(node.index), node.definition) for node in op.intermediates if node.index]
    simplex = tuple(inp.tensor for inp in op.inputs if inp.domain == "simplex")
    cases = max((len(h.cases) for h in op.hyper), default=0)
    hyper_cases = [{h.symbol: sp.nsimplify(values[h.name]) for h in op.hyper}
                   for values in (check.hyper_values(op, case, resolve=True) for case in range(cases))]
    defaults = check.hyper_values(op, resolve=True)
    constants = {h.symbol: sp.nsimplify(defaults[h.name]) for h in op.hyper}
    activations = []
    if op.shape_kind == "flat" and not op.is_loss:
        local = d.gradients[0].expr.xreplace({d.upstream[d.gradients[0].index]: sp.S.One})
        activations.append((local, ArticleLatex(notation(op)).doprint(local)))
    return World(op.name, table, targets, independent, dependent, set(), tuple(table.sizes),
                 ArticleLatex(notation(op)), simplex, constants, activations,
                 [given for given in (op.small_sizes, op.test_sizes) if given], hyper_cases)


def op_table(op: Op, d: Derivation) -> Table:
    """The names a formula about ``op`` may use: as the derivation prints them (``\\hat{x}``,
    ``\\sigma^{2}``, ``\\epsilon``), by their labels (``xhat``, ``var``, ``eps``), upper case for a whole array."""
    from codegen.latex.notation import name_tex
    from codegen.latex.blocks import notation, vector_indices
    printed = notation(op)
    entries = []
    batch = next((s for s in op.sizes if s.name == "N"), None)

    def batch_axis(shape):
        if batch is None or op.shape_kind == "flat":
            return None
        return next((p for p, s in enumerate(shape) if s == batch), None)

    def names(tex, *words):
        out = []
        for w in (*words, name_key(tex)):
            for v in (w, w.upper() if w and len(w) == 1 else w):
                if v and v not in out:
                    out.append(v)
        return tuple(out)

    from derive.engine.derivation import display_index
    for inp in op.inputs:
        letters = tuple(str(i) for i in display_index(op, inp))
        role = "input" if inp.differentiable else "input, no gradient"
        tex = printed.element(inp.name)
        entries.append(Entry(inp.tensor, names(tex, name_key(tex) if inp.element else inp.name.lower(), inp.name),
                             tuple(inp.shape), letters, f"{role} {inp.name} ({inp.domain})", "input",
                             batch_axis(inp.shape), written=tex))
    out = op.output
    if not op.is_loss:
        word = "delta" if op.upstream == r"\delta" else "g"
        entries.append(Entry(d.upstream, names(op.upstream, word, "dout") if word == "g" else ("delta", "dout"),
                             tuple(out.shape), tuple(str(i) for i in out.index),
                             f"upstream gradient dE/d{name_tex(out.name)}", "upstream", batch_axis(out.shape)))
    for node in op.intermediates:
        if node.index:
            entries.append(Entry(node, names(name_tex(node.name), node.name), tuple(node.shape),
                                 tuple(str(i) for i in node.index), "output" if node is out else "intermediate",
                                 "intermediate", batch_axis(node.shape)))
    for size in op.sizes:
        words = tuple(dict.fromkeys(w for w in (size.name, name_key(name_tex(size.name))) if w))
        entries.append(Entry(size, words, meaning=_size_meaning(size, entries), kind="size"))
    for h in op.hyper:
        words = tuple(dict.fromkeys(w for w in (h.name, name_key(name_tex(h.name))) if w))
        entries.append(Entry(h.symbol, words, meaning=f"{h.doc} (default {h.default})", kind="constant"))
    entries.append(Entry(sp.Symbol("E"), ("E",), meaning="the objective", kind="objective"))
    entries = _printed_names_first(entries)
    _check_unique(entries)
    vector = tuple(str(i) for i in op.output.index if i in vector_indices(op))
    return Table(op.name, entries, None, False, batch, vector, _sum_ranges(op),
                 (op.name,) if op.couples_samples else ())


def _sum_ranges(op: Op) -> dict:
    """Each letter the op's definitions sum over from 0, with its range, where that range is one."""
    found = {}
    for node in op.intermediates:
        for sub in sp.preorder_traversal(node.definition):
            if isinstance(sub, sp.Sum):
                for v, lo, hi in sub.limits:
                    found.setdefault(v.name, set()).add(hi + 1 if lo == 0 else None)
    return {letter: sizes.pop() for letter, sizes in found.items() if len(sizes) == 1 and None not in sizes}


def _size_meaning(size, entries) -> str:
    uses = [f"{c} in {e.tex()}" for e in entries for c, s in zip(e.letters, e.shape) if s == size]
    if size.name == "N":
        return "batch size; " + ", ".join(uses[:2])
    return "range of " + ", ".join(uses[:2]) if uses else "a size"


def _printed_names_first(entries) -> list:
    """A word the derivation prints for one entry is not another's alias: convolution's width W is
    the size, though the weights are W in the code."""
    printed = {name_key(e.head()): e for e in entries}
    return [dataclasses.replace(e, names=tuple(w for w in e.names if printed.get(w, e) is e)) for e in entries]


def _check_unique(entries):
    seen = {}
    for e in entries:
        for w in e.names:
            if w in seen and (seen[w].layer is None or e.layer is None):
                raise AssertionError(f"two entries are called {w!r}")  # a table bug, not user input
            seen[w] = e


# -- a chain ----------------------------------------------------------------------

def chain_world(c: ChainDerivation) -> World:
    from codegen.latex.chain import chain_notation
    from codegen.latex.notation import ArticleLatex
    table, by_tensor = chain_table(c)
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


def chain_table(c: ChainDerivation):
    """The chain's names: the article's letters (i input, j hidden, k output) tell the layers apart.

    A tensor the printed chain tells apart by a tag (``y^{(3)}``, the ReLU after a
    batch norm's ``y``) is named by that tag only.
    """
    from codegen.latex.chain import chain_notation
    from codegen.latex.notation import name_tex
    printed = chain_notation(c)
    entries, by_tensor = [], {}

    def add(tensor, meaning, kind, layer=None, word=None):
        word = word or display_name(str(tensor.label))
        tex = printed.element(str(tensor.label))
        if tex == name_tex(word):
            words = (word, word.upper()) if len(word) == 1 else (word,)
            words += tuple(k for k in (name_key(tex),) if k and k not in words)
        else:
            words = (name_key(tex) or word,)
        letters = tuple(s.name.lower() for s in tensor.shape)
        entry = Entry(tensor, words, tuple(tensor.shape), letters, meaning, kind, 0 if letters[0] == "n" else None,
                      layer, written=tex)
        entries.append(entry)
        by_tensor[tensor] = entry

    def number(label: str):
        tail = str(label).rsplit("_", 1)[-1]
        return int(tail) if tail.isdigit() else None

    roles = {"hidden": "hidden layer", "output": "output layer"}
    for name, tensor in c.inputs.items():
        add(tensor, "input node" if name == "x" else "true value (target)", "input")
    for layer in c.layers:
        where = roles.get(layer.role, "loss")
        for inp in layer.op.inputs[1:]:
            tensor = layer.tensors[inp.name]
            if inp.differentiable:
                add(tensor, f"{inp.name} of the {where} ({layer.op.name})", "input", number(tensor.label))
        if layer.output is not None:
            add(layer.output, f"output of the {where} {layer.op.name}", "intermediate", number(layer.output.label))
    for lhs, _ in c.forward:  # intermediates an op names inside itself (softmax's y in a loss)
        if isinstance(lhs, sp.Indexed) and lhs.base not in by_tensor:
            add(lhs.base, "intermediate", "intermediate", number(lhs.base.label))
    for q in c.backward:
        if q.kind == "delta":
            delta = q.lhs.base
            layer_number = number(q.layer.output.label)
            add(delta, f"error term dE/dnet of the {roles.get(q.layer.role, '')} node", "error term",
                layer_number, "delta")
    letter_sizes = {}
    for e in entries:
        letter_sizes.update(dict(zip(e.letters, e.shape)))
    for letter, size in sorted(letter_sizes.items()):
        meaning = "batch size" if letter == "n" else f"number of nodes indexed by {letter}"
        entries.append(Entry(size, (size.name,), meaning=meaning, kind="size"))
    entries.append(Entry(ETA, ("eta",), meaning="learning rate", kind="constant"))
    hyper = {h.symbol: h for layer in c.layers for h in layer.op.hyper}
    for symbol, h in sorted(hyper.items(), key=lambda item: item[0].name):
        words = tuple(dict.fromkeys(w for w in (h.name, name_key(name_tex(h.name))) if w))
        entries.append(Entry(symbol, words, meaning=f"{h.doc} (default {h.default})", kind="constant"))
    entries.append(Entry(sp.Symbol("E"), ("E",), meaning="the objective", kind="objective"))
    return Table(",".join(c.names), entries, letter_sizes, not c.coupled_by, BATCH_SIZE,
                 coupled_by=c.coupled_by), by_tensor
