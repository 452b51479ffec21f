"""What a formula about an op or a chain may name, known before anything is derived.

A symbol table lists the names in the article's notation (``x_{nj}``,
``w_{kj}``, the upstream ``\\delta_{nk}``, the sizes; for a chain the article's
letters tell the layers apart), and the quantities a formula may be about
(one per gradient or error term, in the order the derivation gives them).
Both come from an op's definition or a chain's layout alone, so that a
formula is read, and a wrong one refused, before the slow part begins.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import sympy as sp

from derive.define.op import Op
from derive.engine.backprop import adjoint_nodes, adjoint_tensor
from derive.engine.prepare import prepare
from derive.define.symbols import Tensor
from derive.engine.chain import BATCH_SIZE, ChainDerivation, display_name
from derive.engine.derivation import display_index, upstream_of
from derive.verifier.meaning import BATCH_INDEX, Entry, Table, name_key

ETA = sp.Symbol("eta")  # the learning rate, as the chain's update rules write it


@dataclass(frozen=True)
class Target:
    """One quantity: ``dE/dw_{kj}`` of an op, or a chain's ``\\delta_j``, as the machine derived it
    (without ``expr`` before deriving)."""

    entry: Entry  # the tensor it is the gradient of, or the error term itself
    index: tuple  # its element's indices (batch form)
    expr: sp.Expr | None = None  # in terms of the named quantities (the upstream of a loss is 1)
    expanded: sp.Expr | None = None  # every error term written out (equal to expr for one op)
    is_gradient: bool = True  # False for an error term, which names itself
    steps: bool = False  # a quantity of a cell unrolled over the steps (``derive.verifier.unrolled``)

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
class Names:
    """What a formula about an op or a chain may name, and the quantities it may be about (``--wrt``),
    known without deriving: a formula is read, and a wrong one refused, before anything is derived."""

    title: str
    table: Table
    targets: list  # Target, in the order the derivation gives them

    def target(self, entry: Entry) -> Target:
        for t in self.targets:
            if t.entry == entry:  # equal, not the same object: the caches of names and worlds evict apart
                return t
        raise ValueError(f"wrt: {entry.tex()} is not a quantity of {self.title}; "
                         f"its quantities are {', '.join(t.short(self.table.default_sample) for t in self.targets)}")


# -- one op ----------------------------------------------------------------------

def op_names(op: Op) -> Names:
    """The op's names and its gradients (one per differentiable input), without deriving: read on
    the op's working form (cheap to make), whose intermediates the derivation will print."""
    op = prepare(op)
    table = op_table(op, upstream_of(op))
    by_value = {e.value: e for e in table.entries}
    errors = [Target(by_value[adjoint_tensor(node)], tuple(node.index), is_gradient=False)
              for node in reversed(adjoint_nodes(op))]
    return Names(op.name, table, errors + [Target(by_value[inp.tensor], tuple(display_index(op, inp)))
                                           for inp in op.differentiable])


def op_table(op: Op, upstream: sp.Expr) -> Table:
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
            for v in (w, w.upper() if w and len(w.rstrip("'")) == 1 else w):  # h', H' as a whole
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
        word = "delta" if op.upstream == r"\delta" else op.upstream_label
        entries.append(Entry(upstream, names(op.upstream if word == "g" else r"\bar{g}", word, "dout")
                             if word != "delta" else ("delta", "dout"),
                             tuple(out.shape), tuple(str(i) for i in out.index),
                             f"upstream gradient dE/d{name_tex(out.name)}", "upstream", batch_axis(out.shape)))
        for y in op.also_outputs:  # the gradient arriving at another output: g^{c'}
            g = upstream_of(op, y)
            tex = printed.element(g.name)
            entries.append(Entry(g, names(tex, g.name), tuple(y.shape), tuple(str(i) for i in y.index),
                                 f"upstream gradient dE/d{name_tex(y.name)}", "upstream", batch_axis(y.shape),
                                 written=tex))
    for node in op.intermediates:
        if node.index:
            entries.append(Entry(node, names(name_tex(node.name), node.name), tuple(node.shape),
                                 tuple(str(i) for i in node.index), "output" if node is out else "intermediate",
                                 "intermediate", batch_axis(node.shape)))
    entries += _adjoint_entries(op, printed, batch_axis, entries)
    for size in op.sizes:
        words = tuple(dict.fromkeys(w for w in (size.name, name_key(name_tex(size.name))) if w))
        entries.append(Entry(size, words, meaning=_size_meaning(size, entries), kind="size"))
    for h in op.hyper:
        for symbol in h.symbols:
            words = tuple(dict.fromkeys(w for w in (symbol.name, name_key(name_tex(symbol.name))) if w))
            entries.append(Entry(symbol, words, meaning=f"{h.doc} (default {h.default})", kind="constant"))
    for size, rule in op.derived_sizes.items():  # a number once the sizes and hyper-parameters are
        entries.append(Entry(size, (size.name,), meaning=f"{size} = {rule}", kind="constant",
                             written=sp.latex(size)))  # as the derivation prints it: C_{g}
    entries.append(Entry(sp.Symbol("E"), (op.objective,), meaning="the objective", kind="objective"))
    entries = _printed_names_first(entries)
    _check_unique(entries)
    vector = tuple(str(i) for i in op.output.index if i in vector_indices(op))
    return Table(op.name, entries, None, False, batch, vector, _sum_ranges(op),
                 (op.name,) if op.couples_samples else ())


def _adjoint_entries(op: Op, printed, batch_axis, entries) -> list:
    """The gradient arriving at each intermediate the backward pass names (``derive.engine.backprop``):
    ``\\delta^{a}_{nk}`` (or ``da[n, k]``), and plain ``\\delta`` where there is one and nothing else
    is called so (an RNN cell's error term, as the literature writes it)."""
    from codegen.latex.notation import name_tex
    nodes = adjoint_nodes(op)
    taken = {w for e in entries for w in e.names}
    alone = len(nodes) == 1 and "delta" not in taken
    found = []
    for node in nodes:
        tensor = adjoint_tensor(node)
        tex = printed.element(tensor.name)
        words = tuple(w for w in (name_key(tex), tensor.name, "delta" if alone else None) if w and w not in taken)
        found.append(Entry(tensor, words, tuple(node.shape), tuple(str(i) for i in node.index),
                           f"error term dE/d{name_tex(node.name)}", "error term", batch_axis(node.shape),
                           written=tex))
    return found


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

def chain_names(layout: ChainDerivation) -> Names:
    """A chain's names and quantities from its ``layout`` (``chain(..., backward=False)``), in the order the
    backward pass derives them: from the last layer back, each layer's error term, then its parameters'
    gradients; last the input's."""
    table, by_tensor = chain_table(layout)
    targets = []
    for layer in reversed(_before_loss(layout)):
        if _has_error_term(layer):
            targets.append(_quantity(by_tensor[_error_term(layer)], is_gradient=False))
        targets += [_quantity(by_tensor[layer.tensors[inp.name]]) for inp in layer.op.inputs[1:] if inp.differentiable]
    targets.append(_quantity(by_tensor[layout.inputs["x"]]))
    return Names(",".join(layout.names), table, targets)


def _quantity(entry: Entry, is_gradient: bool = True) -> Target:
    return Target(entry, tuple(sp.Symbol(c, integer=True) for c in entry.letters), is_gradient=is_gradient)


def _before_loss(c: ChainDerivation) -> list:
    return c.layers[:-1] if c.layers[-1].op.is_loss else c.layers


def _has_error_term(layer) -> bool:
    """At the output of a layer whose op calls its upstream gradient \\delta, the chain names it (as
    ``derive.engine.chain`` does)."""
    return layer.op.upstream == r"\delta"


def _error_term(layer):
    return Tensor(f"delta_{layer.position + 1}", *layer.output.shape)


def chain_table(c: ChainDerivation):
    """The chain's names, from its layout: the article's letters (i input, j hidden, k output) tell the
    layers apart.

    A tensor the printed chain tells apart by a tag (``y^{(3)}``, the ReLU after a
    batch norm's ``y``) is named by that tag only; an error term is never tagged.
    """
    from codegen.latex.chain import chain_notation
    from codegen.latex.notation import name_tex
    printed = chain_notation(c)
    entries, by_tensor = [], {}

    def add(tensor, meaning, kind, layer=None, word=None):
        word = word or display_name(str(tensor.label))
        tex = printed.element(str(tensor.label)) if kind != "error term" else name_tex(word)
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
    for layer in reversed(_before_loss(c)):
        if _has_error_term(layer):
            add(_error_term(layer), f"error term dE/dnet of the {roles.get(layer.role, '')} node", "error term",
                number(layer.output.label), "delta")
    letter_sizes = {}
    for e in entries:
        letter_sizes.update(dict(zip(e.letters, e.shape)))
    for letter, size in sorted(letter_sizes.items()):
        meaning = "batch size" if letter == "n" else f"number of nodes indexed by {letter}"
        entries.append(Entry(size, (size.name,), meaning=meaning, kind="size"))
    entries.append(Entry(ETA, ("eta",), meaning="learning rate", kind="constant"))
    hyper = {s: h for layer in c.layers for h in layer.op.hyper for s in h.symbols}
    for symbol, h in sorted(hyper.items(), key=lambda item: item[0].name):
        words = tuple(dict.fromkeys(w for w in (symbol.name, name_key(name_tex(symbol.name))) if w))
        entries.append(Entry(symbol, words, meaning=f"{h.doc} (default {h.default})", kind="constant"))
    entries.append(Entry(sp.Symbol("E"), ("E",), meaning="the objective", kind="objective"))
    return Table(",".join(c.names), entries, letter_sizes, not c.coupled_by, BATCH_SIZE,
                 coupled_by=c.coupled_by), by_tensor
