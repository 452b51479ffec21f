"""Index form lowered to whole-array operations: the vector IR.

An index expression such as ``y[n,k] (g[n,k] - sum_j g[n,j] y[n,j])`` is a
tree of four kinds of node, each an array whose axes are named by index
symbols:

* ``Leaf``: a named array (an input, a cached intermediate, the upstream
  gradient) read with some indices;
* ``Contract``: a product of arrays summed over shared indices (einsum,
  and matmul where it is one);
* ``Reduce``: a sum or max over some axes of one array;
* ``Elementwise``: arithmetic on broadcast arrays, kept as a SymPy
  expression whose "holes" stand for child nodes.

Nodes are frozen and hashable, so equal subtrees are computed once.
The NumPy printer and the matrix-form LaTeX printer both read this IR.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from derive.symbols import Maximum, index_symbols


@dataclass(frozen=True)
class Node:
    axes: tuple


@dataclass(frozen=True)
class Leaf(Node):
    name: str


@dataclass(frozen=True)
class Contract(Node):
    args: tuple


@dataclass(frozen=True)
class Reduce(Node):
    kind: str  # "sum" or "max"
    arg: Node
    size: sp.Expr  # how many values each output reduces (for mean)


@dataclass(frozen=True)
class Elementwise(Node):
    expr: sp.Expr
    holes: tuple  # ((Symbol, Node), ...)

    @property
    def children(self) -> dict:
        return dict(self.holes)


def is_scalar_expr(expr: sp.Expr) -> bool:
    return not any(isinstance(n, (sp.Indexed, sp.Sum, Maximum)) for n in sp.preorder_traversal(expr))


class Lowering:
    """Lowers index expressions, naming arrays through ``names`` (a base -> variable name map)."""

    def __init__(self, names):
        self.names = names

    def order(self, axes, first=()) -> tuple:
        """A deterministic axis order: ``first`` as given, then by name."""
        rest = sorted(set(axes) - set(first), key=str)
        return tuple(a for a in first if a in axes) + tuple(rest)

    def lower(self, expr: sp.Expr, first=()) -> Node:
        if isinstance(expr, sp.Indexed):
            return self.leaf(expr)
        if isinstance(expr, sp.Sum):
            return self.sum(expr, first)
        if isinstance(expr, Maximum):
            arg = self.lower(expr.body, first)
            axes = tuple(a for a in arg.axes if a != expr.bound)
            return Reduce(axes, "max", arg, expr.limits[2] - expr.limits[1] + 1)
        return self.elementwise(expr, first)

    def leaf(self, expr: sp.Indexed) -> Leaf:
        idx = expr.indices
        if not all(isinstance(i, sp.Symbol) for i in idx) or len(set(idx)) != len(idx):
            raise NotImplementedError(f"cannot vectorise the index {expr}")
        return Leaf(tuple(idx), self.names[expr.base])

    def sum(self, expr: sp.Sum, first) -> Node:
        # Gather directly nested sums: sum_i sum_j f is one contraction over (i, j).
        bound, body = [], expr  # outermost first
        while isinstance(body, sp.Sum):
            for v, lo, hi in reversed(body.limits):
                bound.append((v, hi - lo + 1))
            body = body.function
        summed = {v for v, _ in bound}
        size = sp.Mul(*(s for _, s in bound))
        inside = [f for f in sp.Mul.make_args(body) if f.free_symbols & summed]
        outside = sp.Mul(*(f for f in sp.Mul.make_args(body) if not f.free_symbols & summed))
        if outside != 1:
            # normalize() keeps sums factored, but be safe: pull constants out.
            inner = sp.Sum(sp.Mul(*inside), *reversed([(v, 0, s - 1) for v, s in bound]))
            return self.elementwise(outside * inner, first)
        free = set().union(*(index_symbols(f) for f in inside)) - summed
        axes = self.order(free, first)
        order = axes + tuple(v for v, _ in bound)
        if len(inside) >= 2 and not any(isinstance(f, sp.Pow) and f.exp.is_negative for f in inside):
            args = tuple(self.lower(f, order) for f in inside)
            return Contract(axes, args)
        arg = self.lower(sp.Mul(*inside), order)
        return Reduce(axes, "sum", arg, size)

    def elementwise(self, expr: sp.Expr, first) -> Node:
        holes = {}

        def hole(sub):
            node = self.lower(sub, first)
            key = sp.Symbol(f"_h{len(holes)}")
            for k, v in holes.items():
                if v == node:
                    return k
            holes[key] = node
            return key

        def visit(sub):
            if isinstance(sub, (sp.Indexed, sp.Sum, Maximum)):
                return hole(sub)
            if not sub.args or is_scalar_expr(sub):
                return sub
            return sub.func(*(visit(a) for a in sub.args))

        body = visit(expr)
        if not holes:
            return Elementwise((), body, ())
        axes = self.order(set().union(*(set(n.axes) for n in holes.values())), first)
        if len(holes) == 1 and body == next(iter(holes)):
            return next(iter(holes.values()))
        return Elementwise(axes, body, tuple(holes.items()))


def symbols_used(node: Node) -> set:
    """Scalar symbols (sizes, hyper-parameters) the printed code of ``node`` refers to."""
    found = set()
    if isinstance(node, Elementwise):
        holes = {key for key, _ in node.holes}
        found |= {s for s in node.expr.free_symbols if isinstance(s, sp.Symbol) and s not in holes}
        for _, child in node.holes:
            found |= symbols_used(child)
    elif isinstance(node, Reduce):
        found |= symbols_used(node.arg)
    elif isinstance(node, Contract):
        for child in node.args:
            found |= symbols_used(child)
    return found
