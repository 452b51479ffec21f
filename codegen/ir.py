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

import itertools
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

    def order(self, axes, first=(), expr=None) -> tuple:
        """A deterministic axis order: ``first`` as given, then as the arrays in ``expr`` store them."""
        seen = [a for a in first if a in axes]
        if expr is not None:
            for node in sp.preorder_traversal(expr):
                if isinstance(node, sp.Indexed):
                    seen += [i for i in node.indices if i in axes and i not in seen]
        return tuple(seen) + tuple(sorted(set(axes) - set(seen), key=str))

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
        if len(inside) == 1 and isinstance(inside[0], sp.Pow) and inside[0].exp == 2:
            inside = [inside[0].base] * 2  # a sum of squares is a contraction: no squared temporary
        free = set().union(*(index_symbols(f) for f in inside)) - summed
        axes = self.order(free, first)
        order = axes + tuple(v for v, _ in bound)
        reduced_first = self.order(free | summed, (), body)  # the arrays' own order: no transpose
        if len(inside) >= 2 and not any(isinstance(f, sp.Pow) and f.exp.is_negative for f in inside):
            args = tuple(self.lower(f, order) for f in inside)
            return Contract(axes, args)
        arg = self.lower(sp.Mul(*inside), reduced_first)
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
        axes = self.order(set().union(*(set(n.axes) for n in holes.values())), first, expr)
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


def canonical(node: Node) -> Node:
    """``node`` with the axes it sums over renamed by position, so that sums that differ only
    in the names of their bound indices (``sum_n g x`` and ``sum_n' g x``) compare equal."""
    counter = itertools.count()

    def appearance(n: Node) -> list:
        seen = list(n.axes)
        for kid in _kids(n):
            seen += [a for a in appearance(kid) if a not in seen]
        return seen

    def visit(n: Node, mapping: dict) -> Node:
        axes = tuple(mapping.get(a, a) for a in n.axes)
        if isinstance(n, Leaf):
            return Leaf(axes, n.name)
        if isinstance(n, (Contract, Reduce)):
            local = dict(mapping)
            for a in appearance(n):
                if a not in n.axes and a not in local:
                    local[a] = sp.Symbol(f"_a{next(counter)}", integer=True)
            if isinstance(n, Contract):
                return Contract(axes, tuple(visit(c, local) for c in n.args))
            return Reduce(axes, n.kind, visit(n.arg, local), n.size)
        if isinstance(n, Elementwise):
            return Elementwise(axes, n.expr, tuple((k, visit(c, mapping)) for k, c in n.holes))
        return n

    return visit(node, {})


def _kids(node: Node):
    if isinstance(node, Contract):
        return node.args
    if isinstance(node, Reduce):
        return (node.arg,)
    if isinstance(node, Elementwise):
        return tuple(c for _, c in node.holes)
    return ()


def leaf_names(node: Node) -> set:
    """The named arrays ``node`` reads."""
    if isinstance(node, Leaf):
        return {node.name}
    return set().union(set(), *(leaf_names(c) for c in _kids(node)))
