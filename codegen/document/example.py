"""A worked example: one training step of a network on concrete numbers, computed twice.

The numbers in the tables come from the generated modules (``generated/<op>.py``),
run forward layer by layer and backward in reverse order, as ``derive.train``
does. The same inputs and weights are then put into the chain's symbolic
equations (the forward definitions, each error term, each gradient); the
example is refused unless both agree, so the tables are the document's own
equations evaluated, not numbers from somewhere else.
"""
from __future__ import annotations

import importlib
import itertools
from dataclasses import dataclass

import numpy as np
import sympy as sp

from derive.engine.chain import BATCH_SIZE, OBJECTIVE, ChainDerivation
from derive.engine.check import expand_sums

LEARNING_RATE = 0.5
AGREE = 1e-9  # relative: symbolic against generated, in float64


@dataclass(frozen=True)
class Step:
    """What one step computes, by chain tensor: values before, gradients, values after."""

    sizes: dict  # size symbol -> int
    inputs: dict  # chain tensor -> array (x, t)
    params: dict  # chain tensor -> array, before the step
    forward: dict  # chain tensor (or E) -> array
    deltas: dict  # error-term tensor -> array
    grads: dict  # parameter tensor -> array
    updated: dict  # parameter tensor -> array
    loss: float
    loss_after: float
    lr: float
    checked: int  # how many numbers were compared with the symbolic equations


def _round(rng, shape, low, high) -> np.ndarray:
    return np.round(rng.uniform(low, high, shape), 2)


def _shape(tensor, sizes) -> tuple:
    return tuple(int(sp.sympify(s).xreplace(sizes)) for s in tensor.shape)


def widths(c: ChainDerivation, nodes) -> dict:
    """Sizes of the chain's index ranges: the batch, then each width the network passes through."""
    from codegen.document.document import groups
    cols = groups(c)
    if len(nodes) != len(cols):
        raise ValueError(f"sizes: this network has {len(cols)} layers of nodes, got {len(nodes)} sizes")
    batch = 3 if c.coupled_by else 1  # a batch norm needs more than one sample
    sizes = {BATCH_SIZE: sp.Integer(batch)}
    sizes.update({g.size: sp.Integer(n) for g, n in zip(cols, nodes)})
    return sizes


def one_step(c: ChainDerivation, nodes, seed: int = 0, lr: float = LEARNING_RATE) -> Step:
    """Run the generated modules on fixed numbers, check them against the symbolic equations."""
    sizes = widths(c, nodes)
    rng = np.random.default_rng(seed)
    x = c.inputs["x"]
    inputs = {x: _round(rng, _shape(x, sizes), -1, 1)}
    loss = c.layers[-1]
    params = {}
    for layer in c.layers:
        for name, tensor in layer.tensors.items():
            if tensor in inputs or name == layer.op.inputs[0].name:
                continue
            if name == "t":
                inputs[tensor] = _targets(loss.op.name, rng, _shape(tensor, sizes))
            elif name == "gamma":
                params[tensor] = _round(rng, _shape(tensor, sizes), 0.5, 1.5)
            else:
                params[tensor] = _round(rng, _shape(tensor, sizes), -1, 1)
    forward, deltas, grads, value = _generated(c, inputs, params)
    updated = {t: params[t] - lr * grads[t] for t in params}
    _, _, _, after = _generated(c, inputs, updated)
    checked = _check(c, sizes, inputs, params, forward, deltas, grads, value)
    return Step({k: int(v) for k, v in sizes.items()}, inputs, params, forward, deltas, grads, updated,
                value, after, lr, checked)


def _targets(loss: str, rng, shape) -> np.ndarray:
    """Probabilities, one-hot, for the cross-entropies; values in (0, 1) for the squared errors."""
    if "entropy" in loss:
        hot = np.zeros(shape)
        hot[np.arange(shape[0]), rng.integers(0, shape[1], shape[0])] = 1.0
        return hot
    return _round(rng, shape, 0.05, 0.95)


def _generated(c: ChainDerivation, inputs: dict, params: dict):
    """Forward and backward through ``generated/<op>.py``, keeping every layer's output and the
    gradient arriving at it."""
    x = c.inputs["x"]
    value, caches, outputs = inputs[x], [], {}
    named = {str(lhs.base.label): lhs.base for lhs, _ in c.forward if isinstance(lhs, sp.Indexed)}
    for layer in c.layers:
        module = importlib.import_module(f"generated.{layer.op.name}")
        args = {name: (params.get(t) if t in params else inputs.get(t))
                for name, t in layer.tensors.items() if name != layer.op.inputs[0].name}
        value, cache = module.forward(value, **args)
        caches.append(cache)
        for node in layer.op.intermediates:  # what the module keeps of its own (softmax's y, batch norm's mu)
            tensor = named.get(f"{node.name}_{layer.position + 1}")
            kept = cache.get(node.name) if isinstance(cache, dict) else None
            if tensor is not None and kept is not None and np.ndim(kept) == len(tensor.shape):
                outputs[tensor] = np.asarray(kept, dtype=float)
        outputs[layer.output if layer.output is not None else OBJECTIVE] = np.asarray(value, dtype=float)
    loss = float(value)
    upstream, at_outputs, grads = 1.0, {}, {}
    for layer, cache in zip(reversed(c.layers), reversed(caches)):
        if layer.output is not None:
            at_outputs[layer.output] = upstream
        module = importlib.import_module(f"generated.{layer.op.name}")
        g = module.backward(upstream, cache)
        for name, t in layer.tensors.items():
            if t in params:
                grads[t] = g[name]
        upstream = g[layer.op.inputs[0].name]
    deltas = {q.lhs.base: at_outputs[q.layer.output] for q in c.backward if q.kind == "delta"}
    return outputs, deltas, grads, loss


def _elements(tensor, sizes):
    return [tensor[idx] for idx in itertools.product(*(range(n) for n in _shape(tensor, sizes)))]


def _check(c, sizes, inputs, params, forward, deltas, grads, loss) -> int:
    """The chain's equations at the same numbers: forward values, error terms, gradients."""
    values = {s: sp.Float(v, 30) for layer in c.layers for h in layer.op.hyper
              for s, v in h.bind(h.default).items()}  # eps: as the code
    for t, array in {**inputs, **params}.items():
        values.update({e: sp.Float(array[tuple(int(i) for i in e.indices)], 30) for e in _elements(t, sizes)})

    def number(expr, at):
        local = expr.xreplace(at).xreplace(sizes)
        return float(sp.N(expand_sums(local).xreplace(values).doit(), 30))

    checked = []

    def compare(what, symbolic, generated):
        if not abs(symbolic - generated) <= AGREE * max(1.0, abs(generated)):
            raise ValueError(f"example: {what} is {generated} in the generated code but {symbolic} by the "
                             "equations")
        checked.append(what)

    for lhs, rhs in c.forward:
        if not isinstance(lhs, sp.Indexed):
            values[lhs] = sp.Float(number(rhs, {}), 30)
            compare("E", float(values[lhs]), loss)
            continue
        for e in _elements(lhs.base, sizes):
            values[e] = sp.Float(number(rhs, dict(zip(lhs.indices, e.indices))), 30)
            if lhs.base in forward:
                compare(str(e), float(values[e]), forward[lhs.base][tuple(int(i) for i in e.indices)])
    for q in c.backward:
        if q.kind == "delta":
            for e in _elements(q.lhs.base, sizes):
                values[e] = sp.Float(number(q.expr, dict(zip(q.lhs.indices, e.indices))), 30)
                compare(str(e), float(values[e]), np.asarray(deltas[q.lhs.base])[tuple(int(i) for i in e.indices)])
        elif q.kind == "gradient":
            element = q.lhs.variables[0]
            for e in _elements(element.base, sizes):
                got = number(q.expr, dict(zip(element.indices, e.indices)))
                compare(f"dE/d{e}", got, grads[element.base][tuple(int(i) for i in e.indices)])
    return len(checked)
