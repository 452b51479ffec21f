"""A network composed into one op: each layer's definition instantiated with the network's names.

Every node of the network (a layer's output, a sum, a concatenation) becomes an intermediate of
one ``Op``, whose inputs are the network's input, every layer's parameters and the loss's targets.
The engine then derives it like any op: ``backprop`` names the gradient arriving at each node
(``d<node>``, printed ``δ^{node}``) as the sum over the nodes that read it, and the checks expand
those again against SymPy's derivative of the unrolled network.

A layer is instantiated by mapping its op's sizes onto the sizes of the nodes it reads (a
convolution's ``IH`` onto the image height, a fully connected layer's ``D`` onto what a flatten
made), giving its other sizes names of their own (``O_1``, ``M_5``), putting in its whole-number
hyper-parameters (stride, padding, kernel: they shape the network), and reading an elementwise
op's one index (or a row op's leading, a channel op's trailing index) as the several indices of
the node it reads.
"""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, replace

import sympy as sp

from derive.define.network import Add, Concat, Layer, Net
from derive.define.op import Hyper, Input, Op
from derive.define.registry import get
from derive.define.symbols import FirstMax, Intermediate, Iverson, Tensor, rebuild
from derive.engine.deltas import drop_implied_brackets

BATCH = sp.Symbol("N", integer=True, positive=True)


@dataclass(frozen=True)
class Node:
    """What a layer reads: a network input (a Tensor) or a node (an Intermediate), with its letters."""

    base: object
    index: tuple
    shape: tuple


@dataclass(frozen=True)
class Composed:
    """The network as one op, and what the printers need to know about its layers."""

    op: Op
    net: Net
    #: node name -> (layer, the op it instantiates or None for Add/Concat, the node's Intermediate)
    nodes: dict
    #: parameter tensor name -> (the layer that owns it, the tensor)
    parameters: dict
    #: a size computed from others, named (a convolution's output height I_1) -> its value
    relations: dict

    def sizes_at(self, base: dict) -> dict:
        """Every size of the network, the computed ones from ``base`` (values of the other sizes)."""
        out = {s: sp.Integer(v) for s, v in base.items() if s not in self.relations}
        for name, value in self.relations.items():  # each computed from sizes named before it
            out[name] = value.xreplace(out)
        return out


def compose(net: Net) -> Composed:
    """The network ``net`` as one op (see the module's docstring); a ValueError names what does not fit."""
    if not net.layers:
        raise ValueError(f"net: {net.name} has no layers")
    first = next(layer for layer in net.layers if isinstance(layer, Layer))
    op0 = _op(first)
    x_inp = op0.inputs[0]
    x = Tensor(net.input, *x_inp.shape)
    from derive.engine.derivation import display_index
    nodes = {net.input: Node(x, display_index(op0, x_inp), tuple(x_inp.shape))}
    inputs = [Input(x, domain=x_inp.domain)]
    hypers, parameters, owners, described, relations, extras = [], {}, {}, {}, {}, ()
    known_sizes = {str(v) for size in x_inp.shape for v in sp.sympify(size).free_symbols}
    names_used = {net.input} | known_sizes
    for position, layer in enumerate(net.layers, 1):
        if layer.name in names_used:
            raise ValueError(f"net: the node {layer.name!r} is defined twice")
        for read in layer.reads:
            if read not in nodes:
                raise ValueError(f"net: {layer.name} reads {read!r}, which no earlier layer computes "
                                 f"(nodes so far: {', '.join(nodes)})")
        if isinstance(layer, (Add, Concat)):
            node = _join(layer, [nodes[r] for r in layer.reads])
            described[layer.name] = (layer, None, node.base)
        else:
            node, extra_inputs, extra_hypers, extra_nodes = _instantiate(layer, _op(layer), [nodes[r] for r in layer.reads],
                                                            owners, hypers, relations, names_used, position,
                                                            known_sizes)
            for inp in extra_inputs:
                if inp.name in names_used:
                    raise ValueError(f"net: {layer.name}'s {inp.name} has the name of another node or input")
                names_used.add(inp.name)
                inputs.append(inp)
                parameters[inp.name] = (layer.name, inp.tensor)
            hypers += extra_hypers
            extras += extra_nodes
            described[layer.name] = (layer, _op(layer), node.base)
        names_used.add(layer.name)
        names_used |= {str(v) for size in node.shape for v in sp.sympify(size).free_symbols}
        known_sizes |= {str(v) for shape in [node.shape] + [i.shape for i in inputs]
                        for size in shape for v in sp.sympify(size).free_symbols}
        nodes[layer.name] = node
    output = nodes[net.layers[-1].name].base
    sizes = "; ".join(f"{s} = {v}" for s, v in relations.items())
    op = Op(name=net.name, doc=f"The network {net.name}, composed into one op." + (f" Sizes: {sizes}." if sizes else ""),
            inputs=tuple(inputs), output=output, extra=extras, hyper=tuple(hypers), origin=net.origin or f"--chain {net.name}",
            upstream=r"\delta")
    op = replace(op, small_sizes=_fitting_sizes(op, relations, small=True),
                 test_sizes=_fitting_sizes(op, relations, small=False))
    return Composed(op, net, described, parameters, relations)


def _op(layer: Layer) -> Op:
    op = layer.op if isinstance(layer.op, Op) else get(layer.op)
    return op


# -- one layer ------------------------------------------------------------------------

def _instantiate(layer: Layer, op: Op, reads: list, owners: dict, taken_hypers: list, relations: dict, taken: set,
                 position: int, known_sizes: set):
    """The layer's output node, its new inputs (parameters, targets), hyper-parameters and sizes."""
    if len(reads) > len(op.inputs):
        raise ValueError(f"net: {layer.name} reads {len(reads)} nodes but {op.name} takes {len(op.inputs)} inputs")
    for name in layer.hyper:
        if name not in {h.name for h in op.hyper}:
            have = ", ".join(h.name for h in op.hyper) or "none"
            raise ValueError(f"hyper: {layer.name} ({op.name}) has no hyper-parameter {name!r}; its are: {have}")
    values, subs, hypers = {}, {}, []
    for h in op.hyper:
        value = layer.hyper.get(h.name, h.default)
        if value is None and h.default_to:
            value = values[h.default_to]
        values[h.name] = value
        if h.whole:
            bound = h.bind(value)  # a pair's two symbols (stride_h, stride_w), or the one
            if not all(isinstance(v, int) and (not isinstance(v, bool) or h.kind == "bool") for v in bound.values()):
                raise ValueError(f"hyper: {layer.name}.{h.name} must be a whole number (or a pair), got {value!r}")
            subs.update({symbol: sp.Integer(int(v)) for symbol, v in bound.items()})
        else:
            name = h.name if h.name not in {t.name for t in taken_hypers} else f"{h.name}_{layer.tag}"
            symbol = sp.Symbol(name, **h.symbol.assumptions0)
            subs[h.symbol] = symbol
            hypers.append(Hyper(symbol, value, cases=(value,), doc=h.doc, valid=h.valid.replace(h.name, name)))
    _check_valid(layer, op, values)
    seeds = {}  # a shared parameter's sizes are its owner's
    for inp in op.inputs[len(reads):]:
        owned = owners.get((layer.share.get(inp.name), inp.name)) if inp.name in layer.share else None
        if owned is not None and len(owned.shape) == len(inp.shape):
            seeds.update({s: v for s, v in zip(inp.shape, owned.shape) if isinstance(s, sp.Symbol)})
    sizes, groups = _map_sizes(layer, op, reads, subs, position, known_sizes, seeds)
    mapping = _Mapping(layer, op, reads, sizes, groups, subs, relations, taken)
    new_inputs = []
    for inp in op.inputs[len(reads):]:
        tensor = inp.tensor
        if inp.differentiable and inp.name in layer.share:
            owner = layer.share[inp.name]
            key = (owner, inp.name)
            if key not in owners:
                raise ValueError(f"net: {layer.name} shares {inp.name} of {owner!r}, which has no {inp.name} "
                                 f"(a layer before it must own it)")
            shared = owners[key]
            wanted = mapping.shape_of(inp.tensor)
            if tuple(shared.shape) != tuple(wanted) and not _same_shape(shared.shape, wanted):
                raise ValueError(f"net: {layer.name} shares {owner}'s {inp.name} of shape {tuple(shared.shape)}, "
                                 f"but needs shape {tuple(wanted)}")
            mapping.tensors[tensor] = shared
            continue
        name = f"{inp.name}_{layer.tag}" if inp.differentiable else inp.name
        new = Tensor(name, *mapping.shape_of(tensor), integer=tensor.is_integer)
        mapping.tensors[tensor] = new
        owners[(layer.name, inp.name)] = new
        new_inputs.append(replace(inp, tensor=new, **_printed(inp, layer)))
    if layer.share:
        unknown = set(layer.share) - {i.name for i in op.inputs[len(reads):] if i.differentiable}
        if unknown:
            raise ValueError(f"net: {layer.name} shares {sorted(unknown)}, not parameters of {op.name}")
    for node in op.intermediates:  # inner values tagged with the layer's number (a loss's probabilities y_7)
        label = layer.name if node is op.output else f"{node.name}_{layer.tag if layer.tag.isdigit() else position}"
        mapping.intermediate(node, label)
    out = mapping.nodes[op.output]
    extras = tuple(mapping.nodes[n] for n in op.extra)  # what the results fold onto (a loss's probabilities)
    return Node(out, tuple(out.index), tuple(out.shape)), new_inputs, hypers, extras


def _printed(inp: Input, layer: Layer) -> dict:
    """How a parameter prints: the op's name for it tagged with the layer (``w^{(1)}``, ``W^{(1)}``)."""
    if not inp.differentiable:
        return {}
    tag = f"^{{({layer.tag})}}"
    element = inp.element or inp.name
    return {"element": element + tag if len(element) == 1 else None,
            "matrix": (inp.matrix or inp.name) + tag if len(inp.matrix or inp.name) == 1 else None}


def _check_valid(layer, op, values):
    for h in op.hyper:
        if h.valid and values[h.name] is not None:
            others = [(o, list(o.bind(values[o.name]).values())) for o in h.named_in_valid(op.hyper)]
            held = all(_holds(h.valid, h.name, v, {o.name: both[axis] if o.is_pair else both[0] for o, both in others})
                       for axis, v in enumerate(h.bind(values[h.name]).values()))
            if not held:
                raise ValueError(f"hyper: {layer.name}.{h.name} must satisfy {h.valid}, got {values[h.name]!r}")


def _holds(condition: str, name: str, value, others=None) -> bool:
    """``condition`` (``"stride >= 1"``, ``"0 <= p < 1"``, ``"0 <= 2 * padding <= kernel"``) at ``value`` and the
    values ``others`` gives the other names, read without evaluating any text: each side a product of numbers
    and names."""
    known = {**(others or {}), name: value}
    parts = [p.strip() for p in re.split(r"(<=|>=|<|>)", condition)]
    compare = {"<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, ">": lambda a, b: a > b}
    terms = [math.prod(known[f] if f in known else float(f) for f in (f.strip() for f in p.split("*")))
             for p in parts[::2]]
    return all(compare[o](a, b) for a, o, b in zip(terms, parts[1::2], terms[1:]))


def _same_shape(a, b) -> bool:
    return len(a) == len(b) and all(sp.simplify(sp.sympify(p) - sp.sympify(q)) == 0 for p, q in zip(a, b))


def _map_sizes(layer, op, reads, subs, position, known, seeds):
    """Each of the op's sizes as the network's: given (``Layer.sizes``), from the shapes of the nodes read,
    else a name of its own.

    Returns the mapping and, per input read, how the op's axes cover the node's (a tuple of node
    axes per op axis: an elementwise op's one axis covers all of them)."""
    sizes, groups = {**seeds, **_given_sizes(layer, op, known)}, []
    for inp, node in zip(op.inputs, reads):
        shape = [sp.sympify(s).xreplace(subs) for s in inp.shape]
        rank, have = len(shape), len(node.shape)
        if op.shape_kind == "flat":
            cover = [tuple(range(have))]
        elif op.shape_kind == "leading" and have >= rank:
            cover = [tuple(range(have - rank + 1))] + [(p,) for p in range(have - rank + 1, have)]
        elif op.shape_kind == "channels" and have >= rank - 1 and have >= 2:
            cover = [(p,) for p in range(rank - 1)] + [tuple(range(rank - 1, have))]
        elif have == rank:
            cover = [(p,) for p in range(rank)]
        else:
            raise ValueError(f"shapes: {layer.name} ({op.name}) takes {inp.name} of shape "
                             f"({', '.join(map(str, shape))}), but {_node_name(node)} has shape "
                             f"({', '.join(map(str, node.shape))}): the shapes do not chain")
        groups.append(cover)
        for size, axes in zip(shape, cover):
            value = sp.Mul(*[node.shape[a] for a in axes])
            if isinstance(size, sp.Symbol) and size not in sizes:
                sizes[size] = value
            elif sp.simplify(size.xreplace(sizes) - value) != 0:
                raise ValueError(f"shapes: {layer.name} ({op.name}) needs {inp.name}'s axis of size {size} "
                                 f"to be {value}: the shapes do not chain")
    for s in op.sizes:
        if s not in sizes:
            sizes[s] = s if s == BATCH and BATCH not in sizes.values() else \
                sp.Symbol(f"{s.name}_{position}", integer=True, positive=True)  # M_3: printed M^{(3)}
    for size, rule in op.derived_sizes.items():  # after every size it follows from (a conv's O_g = O / groups)
        sizes[size] = rule.xreplace(sizes).xreplace(subs)
    return sizes, groups


def _given_sizes(layer, op, known: set) -> dict:
    """The layer's ``sizes={"M": "D"}``: op sizes that are network sizes already."""
    found = {}
    for name, target in layer.sizes.items():
        size = next((s for s in op.sizes if s.name == name), None)
        if size is None:
            raise ValueError(f"net: {layer.name}: {op.name} has no size {name!r}; its sizes are "
                             f"{', '.join(s.name for s in op.sizes)}")
        if target not in known:
            raise ValueError(f"net: {layer.name}: {target!r} is no size of the network so far; they are "
                             f"{', '.join(sorted(known))}")
        found[size] = sp.Symbol(target, integer=True, positive=True)
    return found


def _node_name(node: Node) -> str:
    return str(getattr(node.base, "label", node.base))


class _Mapping:
    """The op's names to the network's, for one layer: tensors, intermediates, letters, sizes."""

    def __init__(self, layer, op, reads, sizes, groups, subs, relations, taken):
        self.layer, self.op, self.sizes, self.subs = layer, op, sizes, subs
        self.relations, self.taken = relations, taken
        self.tensors = {}
        self.nodes = {}
        self.reads = {op.inputs[k].tensor: (node, groups[k]) for k, node in enumerate(reads)}
        # Op letters that stand for several of the node's (an elementwise op's i for n, c, h, w).
        self.covered = {}  # op size symbol -> the node axes' sizes and letters
        for k, node in enumerate(reads):
            for axis, axes in enumerate(groups[k]):
                if len(axes) != 1:
                    size = op.inputs[k].shape[axis]
                    self.covered[size] = (tuple(node.shape[a] for a in axes), tuple(node.index[a] for a in axes))
        self.letters = {}  # op letter -> tuple of network letters
        self.letter_sizes = {}  # a covered letter -> the sizes of the node axes it stands for
        self._fresh = itertools.count(1)

    def shape_of(self, tensor, index=None) -> tuple:
        """A tensor's or an intermediate's shape in the network's sizes (a covered axis as several)."""
        out = []
        for pos, s in enumerate(tensor.shape):
            s = sp.sympify(s)
            if s in self.covered:
                out.extend(self.covered[s][0])
            else:
                out.append(self._size(s, index[pos] if index else None))
        return tuple(out)

    def _size(self, s, letter=None):
        """A size in the network's sizes; one computed from others that is not plainly positive (a
        convolution's output height ``IH - KH_1 + 1``) gets a name of its own, after the letter that
        runs over it (``I_1``), and its value is kept in ``relations``."""
        value = sp.sympify(s).xreplace(self.subs).xreplace(self.sizes)
        if isinstance(value, sp.Symbol) or value.is_positive:
            return value
        if value not in self.relations.values():
            base = letter.name.rstrip("'").upper() if letter is not None else "S"
            # I, then I', I'': a name a formula can use inside an index (I' J' c + J' i + j)
            name = next(base + "'" * m for m in itertools.count() if base + "'" * m not in self.taken)
            self.taken.add(name)
            self.relations[sp.Symbol(name, integer=True, positive=True)] = value
        return next(k for k, v in self.relations.items() if v == value)

    def letter(self, v, size):
        """The network letters for an op letter (a tuple: several for a covered letter, else one)."""
        if v in self.letters:
            return self.letters[v]
        size = sp.sympify(size)
        if size in self.covered:
            self.letter_sizes[v] = self.covered[size][0]
            own = self.covered[size][1]
            taken = {l for ls in self.letters.values() for l in ls}
            if set(own) & taken:
                primes = next(m for m in itertools.count(1)
                              if not {sp.Symbol(o.name + "'" * m, integer=True) for o in own} & taken)
                own = tuple(sp.Symbol(o.name + "'" * primes, integer=True) for o in own)
            self.letters[v] = own
        else:
            self.letters[v] = (v,)
        return self.letters[v]

    def intermediate(self, node: Intermediate, label: str) -> Intermediate:
        index = tuple(l for i, s in zip(node.index, node.shape) for l in self.letter(i, s))
        shape = self.shape_of(node, node.index)
        # a bracket the node's own index ranges guarantee ([0 <= o <= O_1 - 1] of one group) says nothing
        definition = drop_implied_brackets(self.expr(node.definition),
                                           {v: (0, s - 1) for v, s in zip(index, shape)})
        new = Intermediate(sp.Symbol(label, **node.label.assumptions0), index, shape, definition)
        self.nodes[node] = new
        return new

    def expr(self, expr):
        expr = sp.sympify(expr)
        if isinstance(expr, sp.Sum):
            body = expr.function
            limits, single = [], {}
            for v, lo, hi in expr.limits:
                size = sp.sympify(hi - lo + 1)
                for letter, s in zip(self.letter(v, size), self._sizes_for(v, size)):
                    if self.expr(s) == 1:  # over one value (a convolution's groups put in as 1): that term
                        single[letter] = sp.S.Zero
                    else:
                        limits.append((letter, 0, s - 1))
            body = self.expr(body).xreplace(single)
            return sp.Sum(body, *limits) if limits else body  # a letter for no axes: one term
        if isinstance(expr, sp.Indexed):
            return self.element(expr)
        if isinstance(expr, sp.Symbol):
            if expr in self.letters:
                return self._linear(expr)
            if expr in self.subs:
                return self.subs[expr]
            if expr in self.sizes:
                return self._size(expr)
            return expr
        if not expr.args:
            return expr
        return rebuild(expr, (self.expr(a) for a in expr.args))

    def _sizes_for(self, v, size):
        size = sp.sympify(size)
        if size in self.covered:
            return self.covered[size][0]
        return (self._size(size),)

    def _linear(self, v):
        """A letter where a number is meant; a covered one as the row-major position of the node's indices."""
        if v not in self.letter_sizes:
            return self.letters[v][0]
        total = sp.S.Zero
        for letter, size in zip(self.letters[v], self.letter_sizes[v]):
            total = total * size + letter
        return total

    def element(self, e: sp.Indexed):
        base = e.base
        axes_sizes = list(base.shape)
        if base in self.reads:
            node, cover = self.reads[base]
            target = node.base
        elif isinstance(base, Intermediate):
            target = self.nodes[base]
        elif base in self.tensors:
            target = self.tensors[base]
        else:
            raise ValueError(f"net: {self.layer.name}: {self.op.name} reads {base}, which is not one of its inputs")
        index, sums = [], []
        for i, size in zip(e.indices, axes_sizes):
            size = sp.sympify(size)
            if size in self.covered and not isinstance(i, sp.Symbol):
                # read at a position computed from others (flatten's f - c S): each of the node's positions,
                # where it is that one
                sizes, own = self.covered[size]
                used = {str(v) for v in sp.preorder_traversal(self.op.output.definition) if isinstance(v, sp.Symbol)}
                fresh = own if not {o.name for o in own} & used else \
                    tuple(sp.Symbol(f"{o.name}_{next(self._fresh)}", integer=True) for o in own)
                position = sp.S.Zero
                for letter, s in zip(fresh, sizes):
                    position = position * s + letter
                sums.append((sp.KroneckerDelta(self.expr(i), position), [(f, 0, s - 1) for f, s in zip(fresh, sizes)]))
                index.extend(fresh)
            elif size in self.covered:
                index.extend(self.letter(i, size))
            else:
                index.append(self.expr(i))
        value = target[tuple(index)]
        for delta, limits in sums:
            value = sp.Sum(delta * value, *reversed(limits))
        return value


# -- additions and concatenations -----------------------------------------------------------

def _join(layer, reads: list) -> Node:
    if len(reads) < 2:
        raise ValueError(f"net: {layer.name} joins {len(reads)} node; give two or more")
    first = reads[0]
    index = tuple(first.index)
    if isinstance(layer, Add):
        for node in reads[1:]:
            if len(node.shape) != len(first.shape) or not _same_shape(node.shape, first.shape):
                raise ValueError(f"shapes: {layer.name} adds {_node_name(first)} of shape {tuple(first.shape)} "
                                 f"and {_node_name(node)} of shape {tuple(node.shape)}: they must be alike "
                                 f"(a layer's sizes={{...}} makes a size one the network has)")
        definition = sp.Add(*[n.base[index] for n in reads])
        shape = tuple(first.shape)
    else:
        for node in reads[1:]:
            if len(node.shape) != len(first.shape) or not _same_shape(node.shape[:-1], first.shape[:-1]):
                raise ValueError(f"shapes: {layer.name} joins {_node_name(first)} of shape {tuple(first.shape)} "
                                 f"and {_node_name(node)} of shape {tuple(node.shape)} along the last axis: "
                                 f"the others must be alike")
        last = index[-1]
        terms, offset = [], sp.S.Zero
        for node in reads:
            width = node.shape[-1]
            inside = Iverson(sp.And(last - offset >= 0, last - offset <= width - 1))
            terms.append(inside * node.base[index[:-1] + (last - offset,)])
            offset += width
        definition = sp.Add(*terms)
        shape = tuple(first.shape[:-1]) + (offset,)
    node = Intermediate(layer.name, index, shape, definition)
    return Node(node, index, shape)


# -- sizes the checks can unroll ----------------------------------------------------------

def _fitting_sizes(op: Op, relations: dict, small: bool) -> dict:
    """Sizes at which every shape of the network is at least 1 (an image no smaller than its kernels),
    starting from 1 (``small``: the batch) or 2 for every size and growing the sizes that help."""
    free = [s for s in op.sizes if s not in relations]
    base = {s: (1 if small and s == BATCH else 2) for s in free}

    def resolved(values):
        out = {s: sp.Integer(v) for s, v in values.items()}
        for name, value in relations.items():
            out[name] = value.xreplace(out)
        return out

    shapes = [sp.sympify(s) for node in op.intermediates for s in node.shape] + \
             [sp.sympify(s) for inp in op.inputs for s in inp.shape]
    least = 1 if small else 2  # the test sizes: two of everything (a flatten's order shows)
    for _ in range(64):
        at = resolved(base)
        short = [s for s in shapes if not s.is_number and s.xreplace(at) < least]
        if not short:
            return {s: int(v) for s, v in at.items()} if small else _distinct_axes(op, base, resolved, least, relations)
        target = short[0]
        now = target.xreplace(at)
        trials = ({**base, s: base[s] + step} for step in range(1, 9) for s in free)  # (strides skip some)
        base = next((t for t in trials if target.xreplace(resolved(t)) > now), None)
        if base is None:
            break
    raise ValueError(f"sizes: no small sizes make every shape of {op.name} positive")


def _distinct_axes(op: Op, base: dict, resolved, least: int, relations: dict) -> dict:
    """``base`` grown until no array has two spatial axes of one size (an image's height and width, a
    convolution's or a pooling's output's): an index written in the wrong order (the height's letter for
    the width's, a flatten's position) then reads another element."""
    arrays = [tuple(inp.shape) for inp in op.inputs] + [tuple(node.shape) for node in op.intermediates]
    spatial = set(relations) | {sp.sympify(s) for s in op.inputs[0].shape[2:]}
    for _ in range(32):
        at = resolved(base)
        pairs = [(sp.sympify(a), sp.sympify(b)) for shape in arrays for a, b in itertools.combinations(
            [s for s in shape if sp.sympify(s) in spatial], 2)]
        pairs += [tuple(sp.sympify(s) for s in inp.shape) for inp in op.inputs  # a weight matrix's two axes
                  if len(inp.shape) == 2 and BATCH not in inp.shape]
        clash = next(((a, b) for a, b in pairs if a.xreplace(at) == b.xreplace(at)), None)
        if clash is None:
            break
        a, b = clash
        for s, step in ((s, step) for step in (1, 2, 3) for s in base if s != BATCH):
            trial = resolved({**base, s: base[s] + step})
            if a.xreplace(trial) != b.xreplace(trial) and all(
                    sp.sympify(x).is_number or sp.sympify(x).xreplace(trial) >= least for shape in arrays for x in shape):
                base = {**base, s: base[s] + step}
                break
        else:
            break
    return {s: int(v) for s, v in resolved(base).items()}


# -- the derivation and its check ----------------------------------------------------------

def derive_network(composed: Composed, use_cache: bool = True):
    """The network's backward pass: the gradient arriving at every node (each from the nodes that read
    it) and each parameter's gradient through them, checked against SymPy's derivative of the unrolled
    network before it is returned. ``derive()`` of the network's op returns it from then on."""
    from derive.engine import cache
    from derive.engine.derivation import COMPOSED
    op = composed.op
    store = cache.active() if use_cache else None
    found = store.load(op) if store else None
    if found is None:
        found = _derive(composed)
        if store:
            store.store(op, found)
    COMPOSED[op] = found
    return found


def _derive(composed: Composed):
    from derive.engine.backprop import backward_pass
    from derive.engine.derivation import Derivation, Gradient, Step, readable, upstream_of, vector_jacobian
    from derive.engine.prepare import prepare
    op = composed.op
    work = prepare(op)
    identities = tuple(work.assumptions())
    g = upstream_of(work)

    def simplify(op_, objective, element, sizes, restore, readers):
        # folded into what reads the node, and into what the layers compute to fold onto (a loss's probabilities)
        into = [n for n in op_.intermediates if n in readers or n in op_.extra]
        return vector_jacobian(op_, objective, element, sizes, identities, fold=restore, into=into)

    adjoints, through = backward_pass(work, g, identities, simplify)
    adjoints = tuple(replace(a, steps=tuple(Step(s.name, readable(s.expr, work, set(a.index))) for s in a.steps))
                     for a in adjoints)
    gradients = tuple(Gradient(inp, through[inp.name][0],
                               tuple(Step(s.name, readable(s.expr, work, set(through[inp.name][0])))
                                     for s in through[inp.name][1]))
                      for inp in work.differentiable)
    if work.is_loss:  # the network's output is the objective itself: dE/dE = 1 (as every printer shows it)
        adjoints, gradients = _at_one(adjoints, g), _at_one(gradients, g)
    d = Derivation(work, g, gradients, identities, source=op, adjoints=adjoints)
    sizes = composed.sizes_at(op.small_sizes)
    wrong = check_network(composed, d, sizes)
    if wrong:
        from derive.engine import Mismatch
        raise Mismatch(f"{op.name}: the derived {wrong[0].split(':')[0]} disagrees with the chain rule on the "
                       f"unrolled network (sizes {_sizes_text(sizes)}); nothing is printed from a derivation "
                       f"that fails its check")
    return replace(d, certificate=f"the gradient named at every node and every input's gradient equal the chain "
                                  f"rule run element by element on the network unrolled at {_sizes_text(sizes)} "
                                  f"(SymPy's derivative of each element's definition; 3 random points, 60 digits)")


def _at_one(results, g):
    return tuple(replace(r, steps=tuple(replace(s, expr=s.expr.xreplace({g: sp.S.One})) for s in r.steps))
                 for r in results)


def _sizes_text(sizes: dict) -> str:
    return ", ".join(f"{s}={v}" for s, v in sizes.items())


def check_network(composed: Composed, d, sizes: dict, points: int = 3) -> list[str]:
    """Every element where ``d`` disagrees with the network unrolled at ``sizes`` (every size, computed
    ones included): the gradient named at each node and each input's gradient, evaluated from the
    derived formulas at random points, against the chain rule run element by element on the unrolled
    network (SymPy's derivative of each element's own definition, in terms of the elements it reads,
    accumulated from the loss back), all at 60 digits. Empty when everything agrees."""
    from derive.engine.check import _points, hyper_values
    op = composed.op
    sizes = {s: sp.Integer(v) for s, v in sizes.items()}
    unrolled = _Unrolled.of_op(op, sizes)
    wrong = []
    for point in _points(op, sizes, hyper_values(op, resolve=True), points):
        if op.is_loss:
            point = {k: (sp.S.One if k == d.upstream else v) for k, v in point.items()}
        values = unrolled.forward(point)
        brute = unrolled.backward(values, lambda idx: point[d.upstream[idx] if idx else d.upstream])
        derived = _derived_values(d, sizes, values, point)
        for key, got in derived.items():
            want = brute.get(key, sp.S.Zero)
            if not _agree(got, want):
                name, idx = key
                wrong.append(f"{name}[{', '.join(map(str, idx))}]: derived {sp.N(got, 8)} != unrolled {sp.N(want, 8)}")
        if wrong:
            break
    return wrong


DIGITS = 60


def _agree(a, b) -> bool:
    if a.has(sp.nan) or b.has(sp.nan):
        return False
    a, b = sp.N(a, DIGITS), sp.N(b, DIGITS)
    return abs(a - b) <= sp.Float(10, DIGITS) ** -30 * max(1, abs(a), abs(b))


def _key(element) -> tuple:
    return str(element.base.label), tuple(int(i) for i in element.indices)


class _Unrolled:
    """A computation at explicit sizes, one expression per element in the elements it reads (each
    element a symbol of its own, so that nothing is differentiated through another): a network's
    nodes (``of_op``), or a recurrent cell's steps (``derive.engine.unroll``)."""

    def __init__(self, local):
        """``local``: (key, the element's expression in the elements it reads), in computing order."""
        self.symbols = {}
        self.local = [(key, self._opaque(expr)) for key, expr in local]

    @classmethod
    def of_op(cls, op: Op, sizes: dict) -> "_Unrolled":
        """Every element of every intermediate of ``op`` at ``sizes``."""
        from derive.define.functions import written_out
        from derive.engine.check import _unroll, exact_constants
        local = []
        for node in op.intermediates:
            shape = [int(sp.sympify(s).xreplace(sizes)) for s in node.shape]
            for idx in itertools.product(*(range(n) for n in shape)):
                local.append(((node.name, idx), _unroll(written_out(exact_constants(node.definition)),
                                                        dict(zip(node.index, idx)), sizes)))
        return cls(local)

    def _opaque(self, expr):
        expr = expr.replace(lambda e: isinstance(e, FirstMax), _window_written_out)
        leaves = {e for e in sp.preorder_traversal(expr) if isinstance(e, sp.Indexed)}
        return expr.xreplace({e: self.symbol(_key(e)) for e in leaves})

    def symbol(self, key):
        if key not in self.symbols:
            self.symbols[key] = sp.Symbol(f"{key[0]}[{','.join(map(str, key[1]))}]")
        return self.symbols[key]

    def forward(self, point: dict) -> dict:
        """Every element's value (inputs from ``point``), by symbol."""
        values = {}
        for element, value in point.items():
            if isinstance(element, sp.Indexed):
                values[self.symbol(_key(element))] = value
            else:
                values[element] = value  # the upstream gradient, a scalar hyper-parameter
        for key, expr in self.local:
            values[self.symbol(key)] = _number(expr, values)
        return values

    def backward(self, values: dict, upstream) -> dict:
        """dE/d(element) for every element, from the output back, by key; ``upstream`` gives the output's
        elements theirs (a loss's is 1)."""
        output = self.local[-1][0][0]
        return self.accumulate(values, {key: upstream(key[1]) for key, _ in self.local if key[0] == output})

    def accumulate(self, values: dict, seeds: dict) -> dict:
        """dE/d(element) for every element, by key: each element's definition differentiated by the elements
        it reads, accumulated from the last back; ``seeds``: what the loss sends elements directly, by key;
        ``values``: every element's value, by symbol."""
        adjoint = dict(seeds)
        keys = {v: k for k, v in self.symbols.items()}
        for key, expr in reversed(self.local):
            a = adjoint.get(key)
            if a is None or a == 0:
                continue
            for leaf in sorted(expr.free_symbols & set(keys), key=str):
                partial = _number(sp.diff(expr, leaf), values)
                if partial != 0:
                    adjoint[keys[leaf]] = adjoint.get(keys[leaf], sp.S.Zero) + a * partial
        return adjoint


class _FirstOfWindow(sp.Function):
    """``_FirstOfWindow(k, w_0, w_1, ...)``: 1 where w_k is the window's first maximum, else 0 (max pooling's
    mask with its window's elements written out); piecewise constant, derivative 0."""

    @classmethod
    def eval(cls, position, *window):
        if all(w.is_number for w in window) and position.is_number:
            values = [float(w) for w in window]
            return sp.S.One if values.index(max(values)) == int(position) else sp.S.Zero
        return None

    def _eval_derivative(self, s):
        return sp.S.Zero


def _window_written_out(mask: FirstMax):
    (u, v), (k, m), (a, b) = mask.bound, mask.kernel, mask.at
    offsets = [{u: p, v: q} for p in range(int(k)) for q in range(int(m))]
    window = [sp.Piecewise((mask.window.xreplace(at), mask.candidates.xreplace(at)), (-sp.oo, True)) for at in offsets]
    return _FirstOfWindow(a * m + b, *window)


def _number(expr, values):
    from derive.engine.check import at_numbers
    value = at_numbers(expr, values)
    return sp.N(value, DIGITS) if not value.is_Rational else value


def _derived_values(d, sizes, values, point) -> dict:
    """The derivation's values at the point: each node's named gradient (by the node's key) and each
    input's gradient (by the input's key), computed from its formulas, last node first."""
    from derive.define.functions import written_out
    from derive.engine.check import _unroll
    known = dict(values)
    by_name = {}
    for element, value in point.items():
        if not isinstance(element, sp.Indexed):
            known[element] = value
    out = {}

    def evaluate(expr, index, idx):
        unrolled = _unroll(written_out(expr), dict(zip(index, idx)), sizes)
        leaves = {e for e in sp.preorder_traversal(unrolled) if isinstance(e, sp.Indexed)}
        named = {}
        for e in leaves:
            k = _key(e)
            symbol = sp.Symbol(f"{k[0]}[{','.join(map(str, k[1]))}]")
            value = by_name.get(k, known.get(symbol, point.get(e)))
            if value is None:  # an element outside its tensor: no value, so no agreement
                return sp.nan
            named[e] = value
        return _number(unrolled.xreplace(named), known)

    for a in d.adjoints:
        shape = [int(sp.sympify(s).xreplace(sizes)) for s in a.node.shape]
        for idx in itertools.product(*(range(n) for n in shape)):
            value = evaluate(a.expr, a.index, idx)
            by_name[(a.tensor.name, idx)] = value
            out[(a.node.name, idx)] = value
    for grad in d.gradients:
        shape = [int(sp.sympify(s).xreplace(sizes)) for s in grad.input.shape]
        for idx in itertools.product(*(range(n) for n in shape)):
            out[(grad.input.name, idx)] = evaluate(grad.expr, grad.index, idx)
    return out


# -- from the command line ------------------------------------------------------------------

def layer_hyper(texts) -> dict:
    """``--hyper LAYER.NAME=VALUE`` (repeatable) as {layer: {name: value}}; values are whole numbers,
    decimals, True or False, read as such (never evaluated)."""
    found = {}
    for text in texts:
        target, sep, value = text.partition("=")
        layer, dot, name = target.rpartition(".")
        if not sep or not dot or not layer or not name:
            raise ValueError(f"--hyper: expected LAYER.NAME=VALUE (conv2d.padding=1), got {text!r}")
        found.setdefault(layer, {})[name] = _value(value, text)
    return found


def _value(text: str, whole: str):
    if text in ("True", "False"):
        return text == "True"
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text):
        return float(text)
    raise ValueError(f"--hyper: {whole!r}: the value must be a number, True or False")


def needs_network(ops) -> bool:
    """Whether a chain is beyond the dense chains' path (``derive.engine.chain``): a layer on images
    or a flatten."""
    return any(op.name == "flatten" or op.shape_kind == "fixed" and len(op.inputs[0].shape) > 2 for op in ops)


def chain_network(names, hyper: dict) -> Composed:
    """A chain of op names composed, ``hyper`` by layer: an op's name where it occurs once, else the op's
    name numbered by occurrence (``linear1``, ``linear2``)."""
    from derive.define.network import chain_net
    ops = [get(n) for n in names]
    if not ops:
        raise ValueError("chain: give at least one op")
    for op in ops[:-1]:
        if op.is_loss:
            raise ValueError(f"chain: the loss {op.name!r} must come last")
    labels, seen = [], {}
    for op in ops:
        seen[op.name] = seen.get(op.name, 0) + 1
        labels.append(op.name if names.count(op.name) == 1 else f"{op.name}{seen[op.name]}")
    for key in hyper:
        if key not in labels:
            repeated = [n for n in dict.fromkeys(names) if names.count(n) > 1]
            hint = f" ({', '.join(repeated)} occurs more than once: number it, {repeated[0]}1)" if repeated else ""
            raise ValueError(f"--hyper: no layer {key!r} in the chain; its layers are {', '.join(labels)}{hint}")
    return compose(chain_net(ops, [hyper.get(label, {}) for label in labels]))


def file_network(path, hyper: dict) -> Composed:
    """The network of a ``--net`` file, with ``hyper`` (by layer name) over the file's own."""
    from derive.define.network import load_net
    net = load_net(path)
    names = [layer.name for layer in net.layers]
    for key in hyper:
        if key not in names:
            raise ValueError(f"--hyper: no layer {key!r} in {path}; its layers are {', '.join(names)}")
    layers = tuple(Layer(layer.name, layer.op, *layer.reads, hyper={**layer.hyper, **hyper.get(layer.name, {})},
                         share=layer.share, sizes=layer.sizes, tag=layer.tag) if isinstance(layer, Layer) else layer
                   for layer in net.layers)
    return compose(replace(net, layers=layers))
