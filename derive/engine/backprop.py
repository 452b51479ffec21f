"""The backward pass through an op's own intermediates: each one's gradient, named, from its readers'.

``derivation.derive`` writes every input's gradient out in full (batch
norm's compact ``γ ρ/(N S)(N S g - x̂ Σ g x̂ - Σ g)``). The literature also
names the gradient arriving at each intermediate and writes each in terms
of the gradients of what reads it: attention's ``δ^P = δ^Y V^T``,
``δ^S = P ⊙ (δ^P - rowsum(δ^P ⊙ P))``, ``δ^Q = δ^S K/√D``; an LSTM's
error term of each gate. Here each intermediate ``u`` gets a tensor
``d<u>`` (printed ``δ^{u}``) and

    d<u>[i] = sum over the readers c of u: d/du[i] ( sum_j d<c>[j] c(j) ),

with every other intermediate held as an opaque value while it is
differentiated, so the result reads in the named gradients and values.
It is the same chain rule, one definition at a time; the checks expand the
named gradients again and compare them with SymPy's derivative of the
unrolled forward.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from derive.define.op import Input, Op
from derive.define.symbols import Intermediate, IntermediateElement, Tensor, avoid_capture, fresh_scope, \
    substitute_indices


@dataclass(frozen=True)
class Adjoint:
    """``dE/du`` for one intermediate ``u``, in terms of the adjoints of the intermediates that read it."""

    node: Intermediate
    tensor: Tensor  # d<u>: how the backward pass names it
    steps: tuple

    @property
    def index(self) -> tuple:
        return tuple(self.node.index)

    @property
    def expr(self) -> sp.Expr:
        return self.steps[-1].expr


def adjoint_tensor(node: Intermediate) -> Tensor:
    return Tensor(f"d{node.name}", *node.shape)


def upstream_of(op: Op, output: Intermediate | None = None) -> sp.Expr:
    """The gradient arriving at the output: ``g[n, k]``, or the scalar ``g`` of a loss; at another
    output ``u`` (an LSTM's ``c'``), ``g_u``."""
    if op.is_loss:
        return sp.Symbol(op.upstream_label)
    if output is not None and output is not op.output:
        return Tensor(f"{op.upstream_label}_{output.name}", *output.shape)
    return Tensor(op.upstream_label, *op.output.shape)


def output_objective(op: Op) -> sp.Expr:
    """What backward differentiates: each output's elements times the gradient arriving there, summed."""
    return sp.Add(*(_over(y, upstream_of(op, y)[tuple(y.index)] * y[tuple(y.index)]) for y in op.outputs))


def _over(node: Intermediate, body: sp.Expr) -> sp.Expr:
    """``body`` summed over every element of ``node`` (its indices over their ranges)."""
    return sp.Sum(body, *reversed([(i, 0, s - 1) for i, s in zip(node.index, node.shape)]))


def backward_pass(op: Op, upstream, identities, simplify) -> tuple[tuple[Adjoint, ...], dict]:
    """The adjoint of every intermediate between the inputs and the output, last first, and each
    differentiable input's gradient in terms of them. ``simplify(op, objective, element, sizes, restore,
    readers)`` is the engine's pipeline (``derivation.vector_jacobian``); ``restore`` turns opaque values back
    into the intermediates, so that folding and printing see them."""
    path = _on_the_path(op)
    if not [n for n in path if n is not op.output]:
        return (), {}
    values = {n: Tensor(sp.Symbol(n.name, **n.label.assumptions0), *n.shape) for n in op.intermediates}
    named = {n: adjoint_tensor(n) for n in path if n is not op.output}

    def opaque(expr):
        return expr.replace(lambda e: isinstance(e, IntermediateElement) and e.base in values,
                            lambda e: values[e.base][e.indices])

    back = {v: n for n, v in values.items()}

    def restore(expr):
        return expr.replace(lambda e: isinstance(e, sp.Indexed) and e.base in back,
                            lambda e: back[e.base][e.indices])

    def objective(readers, avoid, node=None):
        """sum over the readers of (their adjoint) * (their definition, intermediates opaque); for
        an output other than the first (an LSTM's c'), plus the gradient arriving at it."""
        total = sp.S.Zero
        if node in op.also_outputs:
            total += _over(node, upstream_of(op, node)[tuple(node.index)] * values[node][tuple(node.index)])
        for c in readers:
            if c is op.output and op.is_loss:
                total += upstream * opaque(c.definition)
                continue
            adjoint = upstream if c is op.output else named[c]
            total += _over(c, adjoint[tuple(c.index)] * opaque(c.definition))
        return avoid_capture(total, avoid)

    adjoints = []
    for node in reversed(path):
        if node is op.output:
            continue
        readers = [c for c in path if node in _reads(c)]
        with fresh_scope():
            steps, _ = simplify(op, objective(readers, set(node.index), node), values[node][tuple(node.index)],
                                dict(zip(node.index, node.shape)), restore, readers)
        adjoints.append(Adjoint(node, named[node], tuple(steps)))
    gradients = {}
    for inp in op.differentiable:
        readers = [c for c in path if inp.tensor in _tensors_read(c)]
        index = _input_index(op, inp)
        with fresh_scope():
            steps, _ = simplify(op, objective(readers, set(index)), inp.tensor[index],
                                dict(zip(index, inp.shape)), restore, readers)
        gradients[inp.name] = (index, tuple(steps))
    return tuple(adjoints), gradients


def adjoint_nodes(op: Op) -> list:
    """The intermediates whose gradient the backward pass names, in computing order (none when the
    output reads the inputs directly)."""
    return [n for n in _on_the_path(op) if n is not op.output]


def expanded(expr: sp.Expr, adjoints) -> sp.Expr:
    """``expr`` with every adjoint written out (recursively): what the checks compare."""
    by_tensor = {a.tensor: a for a in adjoints}
    for _ in range(len(adjoints) + 1):
        found = [e for e in sp.preorder_traversal(expr) if isinstance(e, sp.Indexed) and e.base in by_tensor]
        if not found:
            return expr
        free = {s for s in sp.preorder_traversal(expr) if isinstance(s, sp.Symbol) and s.is_integer}
        expr = expr.replace(lambda e: isinstance(e, sp.Indexed) and e.base in by_tensor,
                            lambda e: substitute_indices(avoid_capture(by_tensor[e.base].expr, free),
                                                         dict(zip(by_tensor[e.base].index, e.indices))))
    raise ValueError("adjoints: a cycle among the named gradients")


def _on_the_path(op: Op) -> list:
    """The intermediates between a differentiable input and an output, in computing order."""
    differentiable = {i.tensor for i in op.differentiable}
    feeds_output = set(op.outputs)
    for node in reversed(op.intermediates):
        if node in feeds_output:
            feeds_output |= _reads(node)
    depends = set()
    for node in op.intermediates:
        if _tensors_read(node) & differentiable or _reads(node) & depends:
            depends.add(node)
    return [n for n in op.intermediates if n in feeds_output and n in depends]


def _reads(node: Intermediate) -> set:
    return {e.base for e in sp.preorder_traversal(node.definition) if isinstance(e, IntermediateElement)}


def _tensors_read(node: Intermediate) -> set:
    return {e.base for e in sp.preorder_traversal(node.definition) if isinstance(e, sp.Indexed)
            and isinstance(e.base, Tensor)}


def _input_index(op: Op, inp: Input) -> tuple:
    from derive.engine.derivation import display_index
    return display_index(op, inp)
