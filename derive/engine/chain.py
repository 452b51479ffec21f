"""Networks: registered ops composed in a chain, the backward pass by the chain rule across layers.

Each op's vector-Jacobian products come from ``engine.derive``; the chain
instantiates them with the network's own tensors and index letters (the
article's ``i``, ``j``, ``k``, from the output back) and passes the
upstream gradient from the loss back to the input. At the output of a
layer whose op names its upstream gradient ``\\delta`` (the fully
connected layer), that gradient becomes the layer's error term ``delta``,
and the layers before refer to it by name, as the article does.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from derive.engine import rewrite
from derive.define.op import Op
from derive.define.registry import get
from derive.engine.derivation import derive, display_index
from derive.engine.prepare import prepare
from derive.define.symbols import Intermediate, Tensor, substitute_indices

LETTERS = "kjihfedc"
BATCH = sp.Symbol("n", integer=True)
BATCH_SIZE = sp.Symbol("N", integer=True, positive=True)
OBJECTIVE = sp.Symbol("E")


@dataclass(frozen=True)
class Layer:
    """One op of the chain, with the network's names for its tensors."""

    op: Op
    position: int
    role: str  # "hidden", "output" or "loss"
    tensors: dict  # op input name -> chain tensor
    output: Tensor | None  # None for the loss
    index: tuple  # index letters of the output (n, k)
    letters: dict  # op index base letter -> chain index
    sizes: dict  # op size -> chain size


@dataclass(frozen=True)
class Quantity:
    """One equation of the backward pass: ``lhs = chain-rule form = factor values = result``."""

    kind: str  # "delta" (an error term), "gradient" (of a parameter) or "input"
    layer: Layer
    lhs: sp.Expr
    chain: sp.Expr  # with Derivative factors, as the chain rule reads
    factors: tuple  # the factors' values, in chain order
    expr: sp.Expr  # the result, in terms of the error terms
    expanded: sp.Expr  # the result with every error term substituted


@dataclass
class ChainDerivation:
    """The forward equations, the backward quantities and the update rules of a network."""

    names: tuple
    layers: list
    inputs: dict  # name -> chain tensor (x, t)
    forward: list = field(default_factory=list)  # (lhs, rhs)
    backward: list = field(default_factory=list)  # Quantity
    deltas: dict = field(default_factory=dict)  # delta tensor -> (index, expanded expression)

    @property
    def parameters(self):
        return [q for q in self.backward if q.kind == "gradient"]

    @property
    def coupled_by(self) -> tuple:
        """The layers that make a sample's result depend on the rest of its batch (batch norm).
        With any, the article's one-sample form (no batch index, N = 1) is not this network's."""
        return tuple(dict.fromkeys(layer.op.name for layer in self.layers if layer.op.couples_samples))


def chain(names, lr=sp.Symbol("eta", positive=True), backward: bool = True) -> ChainDerivation:
    """Derive a network given as op names, first layer first (``linear,sigmoid,...,half_sse``).

    ``backward=False`` stops after the layers and the forward equations, before
    anything is derived (``derive verify`` reads a formula's names from them).
    """
    names = tuple(names)
    if not names:
        raise ValueError("chain: give at least one op")
    ops = [prepare(get(n)) for n in names]  # the working forms, which the derivations are in
    names = tuple(op.name for op in ops)  # an Op given itself is named by its name
    for op in ops[:-1]:
        if op.is_loss:
            raise ValueError(f"chain: the loss {op.name!r} must come last")
    for op in ops:
        if op.shape_kind == "fixed" and len(op.inputs[0].shape) > 2:
            raise ValueError(f"chain: {op.name} works on images (N, C, H, W); chains are derived for layers on "
                             f"(batch, features), so derive {op.name} on its own (derive latex {op.name}); "
                             f"'derive demo --network conv' trains an image network")
    layers, inputs = _layers(ops)
    result = ChainDerivation(names, layers, inputs)
    for layer in layers:
        for node in _named_intermediates(layer.op):
            element = _instantiate(node[node.index], layer)
            result.forward.append((element, _instantiate(node.definition, layer)))
        node = layer.op.output
        rhs = _instantiate(node.definition, layer)
        lhs = layer.output[layer.index] if layer.output is not None else OBJECTIVE
        result.forward.append((lhs, rhs))
    if backward:
        _backward(result)
    return result


def _named_intermediates(op: Op):
    """The op's intermediates other than its output (batch norm's mu, var, xhat; the loss's y)."""
    return [n for n in op.intermediates if n is not op.output and n.index]


def _layers(ops):
    """Assign the chain's tensors and index letters, layer by layer."""
    n_boundaries = 1 + sum(1 for op in ops if _changes_width(op))
    if n_boundaries > len(LETTERS):
        raise ValueError(f"chain: at most {len(LETTERS) - 1} width-changing layers")
    letters = [sp.Symbol(c, integer=True) for c in reversed(LETTERS[:n_boundaries])]
    widths = [sp.Symbol(c.upper(), integer=True, positive=True) for c in reversed(LETTERS[:n_boundaries])]
    boundary = 0
    x = Tensor("x", BATCH_SIZE, widths[0])
    current, current_index = x, (BATCH, letters[0])
    inputs = {"x": x}
    layers = []
    params = _parameter_counter()
    for position, op in enumerate(ops):
        first = op.inputs[0]
        in_letters = dict(zip(_bases(_op_index(op, first)), current_index))
        sizes = dict(zip(first.shape, [BATCH_SIZE, widths[boundary]][: len(first.shape)]))
        if op.shape_kind == "flat":
            in_letters = {_bases(_op_index(op, first))[0]: current_index}
            sizes = {first.shape[0]: BATCH_SIZE * widths[boundary]}
        elif op.shape_kind == "channels":  # (N, C, S) on (N, width): no trailing axes, S = 1
            in_letters[_bases(_op_index(op, first))[-1]] = ()
            sizes[first.shape[-1]] = sp.S.One
        if _changes_width(op):
            boundary += 1
        out_index = (BATCH, letters[boundary])
        tensors = {first.name: current}
        if op.is_loss:
            role = "loss"
        else:
            role = "output" if boundary == n_boundaries - 1 else "hidden"
        for inp in op.inputs[1:]:
            idx = _op_index(op, inp)
            for base, size in zip(_bases(idx), inp.shape):
                if base not in in_letters:
                    in_letters[base] = letters[boundary]
                    sizes.setdefault(size, widths[boundary])
            shape = current.shape if op.shape_kind == "flat" else [sizes.get(s, s) for s in inp.shape]
            if inp.differentiable:
                tensors[inp.name] = Tensor(params(inp.name), *shape)
            else:
                tensors[inp.name] = Tensor(inp.name, *shape)
                inputs[inp.name] = tensors[inp.name]
        out_op_index = op.output.index
        if op.is_loss:
            letters_map = dict(in_letters)
        elif op.shape_kind == "flat":
            letters_map = {_bases(out_op_index)[0]: out_index}
        else:
            letters_map = dict(in_letters)
            letters_map.update(dict(zip(_bases(out_op_index), out_index)))
            if op.shape_kind == "channels":
                letters_map[_bases(out_op_index)[-1]] = ()
        for size, chain_size in zip(op.output.shape, [BATCH_SIZE, widths[boundary]]):
            sizes.setdefault(size, chain_size)
        _add_summed_letters(op, letters_map)
        output = None if op.is_loss else Tensor(params(op.output.name), BATCH_SIZE, widths[boundary])
        layer = Layer(op, position, role, tensors, output, out_index, letters_map, sizes)
        layers.append(layer)
        if output is not None:
            current, current_index = output, out_index
    return layers, inputs


def _add_summed_letters(op: Op, letters_map: dict):
    """A letter the op only sums over (softmax's ``j``) reads as a primed letter of the same size (``k'``)."""
    size_of = {}
    for node in op.intermediates:
        size_of.update(dict(zip(_bases(node.index), node.shape)))
        for sub in sp.preorder_traversal(node.definition):
            if isinstance(sub, sp.Sum):
                size_of.update({_bases((v,))[0]: hi + 1 for v, lo, hi in sub.limits})
    for inp in op.inputs:
        size_of.update(dict(zip(_bases(_op_index(op, inp)), inp.shape)))
    for letter, size in size_of.items():
        if letter in letters_map:
            continue
        twin = next((u for u, s in size_of.items() if s == size and u in letters_map
                     and not isinstance(letters_map[u], tuple)), None)
        if twin is not None:
            letters_map[letter] = sp.Symbol(letters_map[twin].name + "'", integer=True)


def _parameter_counter():
    counts = {}

    def name(base):
        counts[base] = counts.get(base, 0) + 1
        return f"{base}_{counts[base]}"

    return name


def _changes_width(op: Op) -> bool:
    """A layer with its own output width (the fully connected layer)."""
    if op.is_loss or op.shape_kind == "flat":
        return False
    first = _bases(_op_index(op, op.inputs[0]))
    return _bases(op.output.index)[-1] not in first


def _op_index(op: Op, inp) -> tuple:
    return display_index(op, inp)


def _bases(index) -> tuple:
    return tuple(sp.Symbol(str(i).rstrip("'").split("_")[0], integer=True) for i in index)


# -- instantiation --------------------------------------------------------------

def _instantiate(expr: sp.Expr, layer: Layer, upstream=None) -> sp.Expr:
    """An op-level expression in the chain's names: tensors, index letters, sizes.

    ``upstream`` maps the op's upstream gradient ``g`` to a function of the
    chain indices it is read at.
    """
    op = layer.op
    bases = {inp.tensor: layer.tensors[inp.name] for inp in op.inputs}
    if layer.output is not None:
        bases[op.output] = layer.output
    index_of = {}
    taken = set()

    def chain_index(i):
        """The chain indices for one op index (a tuple for a flat op's single index)."""
        if i in index_of:
            return index_of[i]
        name = str(i)
        base = sp.Symbol(name.rstrip("'").split("_")[0], integer=True)
        primes = len(name) - len(name.rstrip("'")) + (1 if "_" in name else 0)
        target = layer.letters.get(base)
        if target is None:
            raise ValueError(f"chain: cannot place index {i} of {op.name}")
        targets = target if isinstance(target, tuple) else (target,)
        result = tuple(sp.Symbol(t.name + "'" * primes, integer=True) for t in targets)
        index_of[i] = result
        taken.update(result)
        return result

    def visit(node):
        if isinstance(node, sp.Sum):
            body = visit(node.function)
            for v, lo, hi in node.limits:
                for c, size in zip(reversed(chain_index(v)), reversed(_sizes_of(chain_index(v), layer))):
                    body = sp.Sum(body, (c, 0, size - 1))
            return body
        if isinstance(node, sp.Indexed):
            idx = tuple(c for i in node.indices for c in chain_index(i))
            base = node.base
            if upstream is not None and str(base.label) == "g" and not isinstance(base, Intermediate):
                return upstream(idx)
            if base in bases:
                return bases[base][idx]
            if isinstance(base, Intermediate):
                return Tensor(f"{base.name}_{layer.position + 1}", *_sizes_of(idx, layer))[idx]
            return base[idx]
        if isinstance(node, sp.Derivative):
            return sp.Derivative(visit(node.expr), *[visit(v) for v, _ in node.variable_count], evaluate=False)
        if not node.args:
            return node.xreplace(layer.sizes) if node in layer.sizes else node
        return node.func(*(visit(a) for a in node.args))

    if op.is_loss and upstream is None:
        expr = expr.xreplace({sp.Symbol("g"): sp.S.One})
    return visit(expr)


def _sizes_of(idx, layer):
    sizes = []
    for c in idx:
        base = sp.Symbol(c.name.rstrip("'"), integer=True)
        if base == BATCH:
            sizes.append(BATCH_SIZE)
        else:
            sizes.append(sp.Symbol(base.name.upper(), integer=True, positive=True))
    return tuple(sizes)


# -- the backward pass -------------------------------------------------------------

def _backward(result: ChainDerivation):
    layers = result.layers
    last = layers[-1]
    if last.op.is_loss:
        y_in = last.tensors[last.op.inputs[0].name]
        loss_grad = derive(last.op).gradient(last.op.inputs[0].name)
        expr = _instantiate(loss_grad.expr, last)
        index = _index_of_input(last)
        up = _Upstream(index, chain=sp.Derivative(OBJECTIVE, y_in[index], evaluate=False),
                       factors=(expr,), expr=expr, expanded=expr)
        rest = layers[:-1]
    else:
        out = last.output
        g = Tensor("g", *out.shape)
        up = _Upstream(last.index, chain=sp.Derivative(OBJECTIVE, out[last.index], evaluate=False),
                       factors=(g[last.index],), expr=g[last.index], expanded=g[last.index])
        rest = layers
    for layer in reversed(rest):
        up = _through(result, layer, up)
    x = result.inputs["x"]
    result.backward.append(Quantity("input", layers[0], sp.Derivative(OBJECTIVE, x[up.index], evaluate=False),
                                    up.chain, up.factors, up.expr, up.expanded))


@dataclass(frozen=True)
class _Upstream:
    """dE/d(layer output), as the chain rule reads, as factor values, as a result."""

    index: tuple
    chain: sp.Expr
    factors: tuple
    expr: sp.Expr
    expanded: sp.Expr

    def at(self, idx, which="expr"):
        return rewrite_indices(getattr(self, which), dict(zip(self.index, idx)))


def rewrite_indices(expr, mapping):
    return substitute_indices(expr, mapping)


def _through(result: ChainDerivation, layer: Layer, up: _Upstream) -> _Upstream:
    op = layer.op
    d = derive(op)
    out = layer.output
    if op.upstream == r"\delta":
        # Name the gradient at this layer's output: its error term.
        delta = Tensor(f"delta_{layer.position + 1}", *out.shape)
        lhs = delta[up.index]
        result.backward.append(Quantity("delta", layer, lhs, up.chain, up.factors, up.expr, up.expanded))
        result.deltas[delta] = (up.index, up.expanded)
        named = _Upstream(up.index, chain=sp.Derivative(OBJECTIVE, out[up.index], evaluate=False),
                          factors=(lhs,), expr=lhs, expanded=up.expanded)
    else:
        named = up
    for inp in op.inputs[1:]:
        if not inp.differentiable:
            continue
        grad = d.gradient(inp.name)
        tensor = layer.tensors[inp.name]
        element_index = tuple(c for i in grad.index for c in _chain_index(layer, i))
        expr = rewrite.textbook(_instantiate(grad.expr, layer, lambda idx: named.at(idx)))
        expanded = _instantiate(grad.expr, layer, lambda idx: named.at(idx, "expanded"))
        lhs = sp.Derivative(OBJECTIVE, tensor[element_index], evaluate=False)
        chain_form = _chain_form(grad.expr, layer, named, out, tensor[element_index])
        result.backward.append(Quantity("gradient", layer, lhs, chain_form, (expr,), expr, expanded))
    first = op.inputs[0]
    grad = d.gradient(first.name)
    index = tuple(c for i in grad.index for c in _chain_index(layer, i))
    expr = rewrite.textbook(rewrite.normalize(_instantiate(grad.expr, layer, lambda idx: named.at(idx))))
    expanded = _instantiate(grad.expr, layer, lambda idx: named.at(idx, "expanded"))
    x_elem = layer.tensors[first.name][index]
    chain_form = _chain_form(grad.expr, layer, named, out, x_elem)
    if op.shape_kind == "flat":  # elementwise: the upstream times the local derivative
        local = _instantiate(grad.expr, layer, lambda idx: sp.S.One)
        factors = named.factors + (local,)
    else:
        factors = (expr,)
    return _Upstream(index, chain_form, factors, expr, expanded)


def _chain_index(layer, i):
    name = str(i)
    base = sp.Symbol(name.rstrip("'").split("_")[0], integer=True)
    target = layer.letters[base]
    return target if isinstance(target, tuple) else (target,)


def _chain_form(vjp: sp.Expr, layer: Layer, up: _Upstream, out: Tensor, wrt) -> sp.Expr:
    """The chain rule as it reads: ``dE/dout[idx] * dout[idx]/dwrt``, summed where it must be.

    Where the VJP is one product with the upstream gradient (a fully
    connected or elementwise layer), its sums are kept:
    ``sum_k dE/dnet_k dnet_k/dy_j``. Otherwise (batch norm mixes the batch)
    the sum runs over the output indices the upstream gradient is read at.
    """
    marked = rewrite.normalize(_instantiate(vjp, layer, lambda idx: _Marker(*idx)))

    def local(idx):
        own = rewrite_indices(up.chain, dict(zip(up.index, idx)))
        return ChainProduct(own, sp.Derivative(out[idx], wrt, evaluate=False))

    body = marked
    while isinstance(body, sp.Sum):
        body = body.function
    body = body.args[0][0] if isinstance(body, sp.Piecewise) else body
    markers = [f for f in sp.Mul.make_args(body) if isinstance(f, _Marker)]
    if not isinstance(body, sp.Add) and len(markers) == 1:
        def visit(node):
            if isinstance(node, sp.Sum):
                return sp.Sum(visit(node.function), *node.limits)
            return local(markers[0].args)
        return visit(marked)
    reads = {m.args for m in marked.atoms(_Marker)}
    varying = [p for p in range(len(up.index)) if any(r[p] != up.index[p] for r in reads)]
    primed = list(up.index)
    for p in varying:
        primed[p] = sp.Symbol(up.index[p].name + "'", integer=True)
    form = local(tuple(primed))
    for p in reversed(varying):
        form = sp.Sum(form, (primed[p], 0, out.shape[p] - 1))
    return form


class _Marker(sp.Function):
    """Stands for the upstream gradient while the chain-rule form is built."""


class ChainProduct(sp.Expr):
    """Chain-rule factors kept in the order the chain rule reads them (a ``Mul`` would sort them)."""

    is_commutative = True

    def __new__(cls, *factors):
        flat = []
        for f in factors:
            flat.extend(f.args if isinstance(f, ChainProduct) else [f])
        return sp.Expr.__new__(cls, *flat)

    def _latex(self, printer):
        last = len(self.args) - 1
        parts = []
        for pos, f in enumerate(self.args):
            tex = printer._print(f)
            if isinstance(f, sp.Add) or isinstance(f, sp.Sum) and pos < last:
                tex = rf"\left({tex}\right)"
            parts.append(tex)
        return " ".join(parts)

    def doit(self, **hints):
        return sp.Mul(*self.args)  # the product it stands for; its derivatives stay symbolic


def _index_of_input(layer):
    first = layer.op.inputs[0]
    return tuple(c for i in _op_index(layer.op, first) for c in _chain_index(layer, i))


# -- the article's single-sample form ----------------------------------------------

def sample_form(expr: sp.Expr) -> sp.Expr:
    """``expr`` for one sample, as the article writes it: no batch index, N = 1."""
    def is_batch(v):
        return str(v).rstrip("'").split("_")[0] == BATCH.name

    def visit(node):
        if isinstance(node, sp.Sum):
            body = visit(node.function)
            limits = []
            for v, lo, hi in node.limits:
                if is_batch(v):
                    body = body.xreplace({v: BATCH})
                else:
                    limits.append((v, lo, hi))
            return sp.Sum(body, *limits) if limits else body
        if isinstance(node, sp.Indexed):
            keep = [p for p, i in enumerate(node.indices) if not is_batch(i)]
            if not keep:
                return sp.Symbol(str(node.base.label))
            shape = node.base.shape or (None,) * len(node.indices)
            base = Tensor(str(node.base.label), *[shape[p] for p in keep])
            return base[tuple(node.indices[p] for p in keep)]
        if isinstance(node, sp.Derivative):
            return sp.Derivative(visit(node.expr), *[visit(v) for v, _ in node.variable_count], evaluate=False)
        if not node.args:
            return node
        return node.func(*(visit(a) for a in node.args))

    return visit(expr).xreplace({BATCH_SIZE: sp.S.One})


def display_name(label: str) -> str:
    """The article's name for a chain tensor: ``W_2`` is ``w``, ``delta_1`` is ``delta``."""
    base = label.rsplit("_", 1)[0] if label.rsplit("_", 1)[-1].isdigit() else label
    return {"W": "w"}.get(base, base)
