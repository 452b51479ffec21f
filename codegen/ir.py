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

import dataclasses
import itertools
from collections import Counter
from dataclasses import dataclass

import numpy as np
import sympy as sp

from derive.define.symbols import FirstMax, Iverson, Maximum, index_symbols, is_index
from derive.engine.deltas import implied


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


@dataclass(frozen=True)
class Window(Node):
    """Sliding windows: ``x[n, c, i s + p d, j s' + q d']`` as an array with axes (n, c, i, j, p, q)."""

    name: str
    kernel: tuple  # the sizes of the window axes (p, q)
    stride: tuple  # per window axis: the step between windows (s, s')
    dilation: tuple  # per window axis: the step between a window's values (d, d'), 1 for adjacent ones


@dataclass(frozen=True)
class Mask(Node):
    """A window's first maximum as a 0/1 array, laid out like the windows (max pooling); ``candidates``, if
    any, is True at the window cells where the maximum may lie (laid out like the windows, broadcasting)."""

    window: Node
    candidates: Node | None = None
    #: Hyper-parameter values, ((symbol, value), ...), at which every window cell is a candidate (a pool's
    #: padding 0): the candidates need not be computed there.
    all_candidates_at: tuple = ()


@dataclass(frozen=True)
class Pad(Node):
    """An array with zeros around it: ``[0 <= h - P < H] x[n, c, h - P, w - P]``."""

    name: str
    before: tuple  # per axis
    after: tuple


@dataclass(frozen=True)
class Crop(Node):
    """A stretch of an array along each axis: ``x[n, c, h + P, w + P]`` for h < H (the gradient of a padded input
    taken back to the input)."""

    name: str
    start: tuple  # per axis
    size: tuple  # per axis; None: the whole axis


@dataclass(frozen=True)
class Scatter(Node):
    """Windows summed back onto the image they came from (col2im).

    ``out[..., a, b] = sum over (i, p) with a = i s + p d - offset`` of
    ``arg[..., p, q, i, j]``; ``arg`` is laid out (leading, p, q, i, j), so
    that each kernel offset's slice is contiguous. Stride, offset and dilation are per image axis.
    """

    arg: Node
    layout: tuple  # the axes arg is read in: (leading, p, q, i, j)
    kernel: tuple  # the sizes of p, q
    image: tuple  # the sizes of a, b
    stride: tuple
    offset: tuple
    dilation: tuple


@dataclass(frozen=True)
class Split(Node):
    """``x[n, g K + q, s]``: the named array with one axis viewed as two, (g, q), q running fastest
    (group norm's channels by group); ``sizes`` are the sizes of all ``axes``."""

    name: str
    position: int
    sizes: tuple


@dataclass(frozen=True)
class Merge(Node):
    """The opposite: ``arg`` with two adjacent axes (g, q) read as one, ``h = g K + q`` (the gradient
    of a split read); ``sizes`` are the sizes of ``arg``'s axes, ``position`` where g is. An ``arg``
    without q (one more size than it has axes: K) is repeated K times along g."""

    arg: Node
    position: int
    sizes: tuple


@dataclass(frozen=True)
class Arange(Node):
    """An index's values as an array along its own axis: 0, 1, ..., size - 1."""

    size: sp.Expr


@dataclass(frozen=True)
class Gather(Node):
    """``W[idx[n, l], e]``: the named array ``name`` read along axis ``position`` at the integers of
    ``index`` (an embedding's lookup); laid out as W's axes with that one replaced by index's axes.
    With ``along``, the index runs along W's other axes (``z[n, t[n]]``, a label per row): one value
    per row, laid out as W's axes without that one."""

    name: str
    position: int
    index: Node
    along: bool = False


def gather(name: str, others: tuple, position: int, index: Node) -> Gather | None:
    """The array ``name`` read at ``index`` along axis ``position`` (its other axes ``others``): a lookup
    laid out with index's axes there, or one value per row when the index runs along the others
    (``z[n, t[n]]``); None when neither (an index along some of them only, or a repeated axis)."""
    if not set(index.axes) & set(others):
        return Gather(others[:position] + tuple(index.axes) + others[position:], name, position, index)
    if set(index.axes) <= set(others) and len(set(others)) == len(others):
        return Gather(others, name, position, index, along=True)
    return None


@dataclass(frozen=True)
class IndexAdd(Node):
    """``out[v, ...] = sum over the positions i with index[i] = v of values[i, ...]``: a scatter-add, the
    gradient of a gather. ``axes`` is (v, then the axes values has beyond index's); ``size`` is v's range."""

    index: Node
    values: Node
    size: sp.Expr


@dataclass(frozen=True)
class Block(Node):
    """``W[g H + k, d]`` with a constant ``g``: block ``g`` (``size`` rows from ``start``) of ``arg`` along
    axis ``position``, a view (a GRU's gate rows in its stacked weights). ``arg`` has the full axis."""

    arg: Node
    position: int
    start: sp.Expr
    size: sp.Expr
    total: sp.Expr  # the full axis's length


@dataclass(frozen=True)
class Stack(Node):
    """The opposite: ``blocks`` (each with ``axes``) laid end to end along axis ``position``, block g at
    rows ``g size``: a gradient of stacked weights, assembled block by block."""

    blocks: tuple
    position: int
    size: sp.Expr


def is_scalar_expr(expr: sp.Expr) -> bool:
    return not any(isinstance(n, (sp.Indexed, sp.Sum, Maximum, FirstMax)) for n in sp.preorder_traversal(expr))


class Lowering:
    """Lowers index expressions, naming arrays through ``names`` (a base -> variable name map)."""

    def __init__(self, names, defaults=None):
        self.names = names
        self.defaults = defaults or {}  # hyper-parameter symbol -> its default value
        self.ranges: dict = {}  # index symbol -> size, for the statement being lowered
        self.sizes: dict = {}  # index symbol -> size, for every statement lowered so far

    def statement(self, expr: sp.Expr, index: tuple, shape: tuple) -> Node:
        """Lower the right-hand side of ``name[index] = expr`` (its indices run over ``shape``)."""
        self.ranges = dict(zip(index, shape))
        node = self.lower(expr, tuple(index))
        self.sizes.update(self.ranges)
        return node

    def defaults_implying(self, condition) -> tuple | None:
        """The fewest hyper-parameters, at their defaults, under which ``condition`` holds at every index of
        the statement (a pool's window cells all inside the image at padding 0), as ((symbol, value),
        ...) sorted; None if their defaults do not make it hold."""
        def holds(values) -> bool:
            ranges = {a: (0, sp.sympify(size - 1).xreplace(values)) for a, size in self.ranges.items()}
            return implied(condition.xreplace(values), ranges)

        used = set().union(condition.free_symbols, *(sp.sympify(s).free_symbols for s in self.ranges.values()))
        chosen = {s: v for s, v in self.defaults.items() if s in used}
        if not holds(chosen):
            return None
        for symbol in sorted(chosen, key=str):  # each one that is not needed left free
            fewer = {s: v for s, v in chosen.items() if s != symbol}
            if holds(fewer):
                chosen = fewer
        return tuple(sorted(chosen.items(), key=lambda sv: str(sv[0])))

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
        if isinstance(expr, FirstMax):
            (u, v), (k, m), (p, q) = expr.bound, expr.kernel, expr.at
            self.ranges.update({u: k, v: m})
            window = self.lower(expr.window, first)
            candidates = None if expr.candidates is sp.true else self.lower(Iverson(expr.candidates), first)
            everywhere = self.defaults_implying(expr.candidates) if candidates is not None else None
            rename = {u: p, v: q}
            return Mask(tuple(rename.get(a, a) for a in window.axes), window, candidates,
                        () if everywhere is None else everywhere)
        if isinstance(expr, Maximum):
            self.ranges[expr.bound] = expr.limits[2] - expr.limits[1] + 1
            arg = self.lower(expr.body, first)
            axes = tuple(a for a in arg.axes if a != expr.bound)
            return Reduce(axes, "max", arg, expr.limits[2] - expr.limits[1] + 1)
        return self.elementwise(expr, first)

    def leaf(self, expr: sp.Indexed) -> Node:
        idx = expr.indices
        blocked = self.block(expr)
        if blocked is not None:
            return blocked
        if all(isinstance(i, sp.Symbol) for i in idx) and len(set(idx)) == len(idx):
            return Leaf(tuple(idx), self.names[expr.base])
        cropped = self.crop(expr)
        if cropped is not None:
            return cropped
        split = [pos for pos, i in enumerate(idx) if self._grouped(i)]
        if len(split) == 1 and all(isinstance(i, sp.Symbol) for p, i in enumerate(idx) if p != split[0]):
            (pos,) = split
            g, q = self._grouped(idx[pos])
            axes = tuple(idx[:pos]) + (g, q) + tuple(idx[pos + 1:])
            return Split(axes, self.names[expr.base], pos, tuple(self.ranges.get(a, 1) for a in axes))
        gathered = [pos for pos, i in enumerate(idx) if isinstance(i, sp.Indexed)]
        if len(gathered) == 1 and all(isinstance(i, sp.Symbol) for p, i in enumerate(idx) if p != gathered[0]):
            (pos,) = gathered
            found = gather(self.names[expr.base], tuple(idx[:pos]) + tuple(idx[pos + 1:]), pos, self.leaf(idx[pos]))
            if found is None:
                raise NotImplementedError(f"cannot vectorise the index {expr}")
            return found
        windows = [_window_position(i) for i in idx]
        plain = [i for i, w in zip(idx, windows) if w is None]
        inner = [w for w in windows if w is not None]
        if all(isinstance(i, sp.Symbol) for i in plain) and inner and all(w is not None for w in windows[len(plain):]):
            inner = [self._offset_last(w) for w in inner]
            axes = tuple(plain) + tuple(w[0] for w in inner) + tuple(w[1] for w in inner)
            kernel = tuple(self.ranges[w[1]] for w in inner)
            return Window(axes, self.names[expr.base], kernel, tuple(w[2] for w in inner), tuple(w[3] for w in inner))
        raise NotImplementedError(f"cannot vectorise the index {expr}")

    def _block_of(self, expr: sp.Indexed, pos: int):
        """``(k, start)`` where index ``pos`` of ``expr`` reads ``g K + k`` of an axis ``G K`` long, ``k``
        running over ``K`` values and ``g`` a constant (block ``g`` of ``G``); else None."""
        index = expr.indices[pos]
        shape = getattr(expr.base, "shape", None)
        own = [v for v in sp.Add.make_args(index) if is_index(v) and v in self.ranges]
        if shape is None or len(own) != 1:
            return None
        (k,) = own
        start, size = sp.expand(index - k), self.ranges[k]
        blocks, g = sp.simplify(shape[pos] / size), sp.simplify(start / size)
        if start.free_symbols & set(self.ranges) or not (blocks.is_Integer and g.is_Integer) \
                or blocks < 2 or not 0 <= g < blocks:
            return None
        return k, start

    def block(self, expr: sp.Indexed) -> Node | None:
        """``W[g H + k, d]``: a view of block g of W (other axes read with plain indices); else None."""
        found = [(pos, self._block_of(expr, pos)) for pos in range(len(expr.indices))]
        found = [(pos, b) for pos, b in found if b is not None]
        if len(found) != 1 or not all(isinstance(i, sp.Symbol) for p, i in enumerate(expr.indices) if p != found[0][0]):
            return None
        ((pos, (k, start)),) = found
        full = sp.Symbol(f"{k.name}_stacked", integer=True)
        axes = tuple(expr.indices[:pos]) + (full,) + tuple(expr.indices[pos + 1:])
        if len(set(axes)) != len(axes):
            return None
        self.ranges[full] = expr.base.shape[pos]
        inner = Leaf(axes, self.names[expr.base])
        return Block(tuple(expr.indices[:pos]) + (k,) + tuple(expr.indices[pos + 1:]), inner, pos, start,
                     self.ranges[k], expr.base.shape[pos])

    def stack(self, expr: sp.Expr, first) -> Node | None:
        """``sum_g [0 <= k - g K <= K - 1] f_g(k - g K)`` over every block g of k's range: each f_g
        lowered with its own rows, the blocks laid end to end; else None."""
        if not isinstance(expr, sp.Add):
            return None
        blocks, index, size = {}, None, None
        for term in expr.args:
            brackets = [f for f in sp.Mul.make_args(term) if isinstance(f, Iverson)]
            found = _bracket(brackets[0].condition) if len(brackets) == 1 else None
            if found is None:
                return None
            shifted, length = found
            own = [v for v in index_symbols(shifted) if v in self.ranges]
            if len(own) != 1 or sp.expand(shifted - own[0]).free_symbols & set(self.ranges) \
                    or (index is not None and (own[0], length) != (index, size)):
                return None
            index, size = own[0], length
            g = sp.simplify((own[0] - shifted) / size)
            if not g.is_Integer or g in blocks:
                return None
            blocks[int(g)] = term / brackets[0]
        count = sp.simplify(self.ranges[index] / size)
        if not count.is_Integer or sorted(blocks) != list(range(int(count))):
            return None
        total = self.ranges[index]
        self.ranges[index] = size
        lowered = []
        for g in sorted(blocks):
            lowered.append(self.lower(blocks[g].xreplace({index: index + g * size}), first))
        self.ranges[index] = total
        if any(index not in node.axes for node in lowered) or len({tuple(n.axes) for n in lowered}) != 1:
            return None
        axes = tuple(lowered[0].axes)
        return Stack(axes, tuple(lowered), axes.index(index), size)

    def _offset_last(self, window):
        """``i s + p d`` read either way round, (i, p, s, d): the offset p is the index that runs over a
        size of its own (a kernel's side), the window i the one over an output size computed from others."""
        i, p, s, d = window
        if d != 1 and not isinstance(self.ranges.get(p), sp.Symbol) and isinstance(self.ranges.get(i), sp.Symbol):
            return p, i, d, s
        return window

    def sum(self, expr: sp.Sum, first) -> Node:
        if isinstance(expr.function, sp.Add) and any(
                isinstance(e, sp.Indexed) and self._reads_block(e, expr) for e in sp.preorder_traversal(expr.function)):
            # A sum over the blocks of stacked weights: one sum per block, which a matrix product joins.
            return self.lower(sp.Add(*(sp.Sum(t, *expr.limits) for t in expr.function.args)), first)
        # Gather directly nested sums: sum_i sum_j f is one contraction over (i, j).
        bound, body = [], expr  # outermost first
        while True:
            if isinstance(body, sp.Sum):
                inner, rest = body, sp.S.One
            else:  # a product with one sum in it: sum_i [a] sum_j b is sum_i sum_j [a] b
                sums = [f for f in sp.Mul.make_args(body) if isinstance(f, sp.Sum)]
                if not isinstance(body, sp.Mul) or len(sums) != 1 \
                        or {v for v, *_ in sums[0].limits} & body.free_symbols - sums[0].free_symbols:
                    break
                inner, rest = sums[0], body / sums[0]
            for v, lo, hi in reversed(inner.limits):
                bound.append((v, hi - lo + 1))
            body = rest * inner.function
        summed = {v for v, _ in bound}
        size = sp.Mul(*(s for _, s in bound))
        inside = [f for f in sp.Mul.make_args(body) if f.free_symbols & summed]
        outside = sp.Mul(*(f for f in sp.Mul.make_args(body) if not f.free_symbols & summed))
        if outside != 1:
            # normalize() keeps sums factored, but be safe: pull constants out.
            inner = sp.Sum(sp.Mul(*inside), *reversed([(v, 0, s - 1) for v, s in bound]))
            return self.elementwise(outside * inner, first)
        for v, size in bound:
            self.ranges[v] = size
        gathered = self.gather(bound, inside, first) or self.block_sum(bound, inside, first)
        if gathered is not None:
            return gathered
        scatter = self.merge(bound, inside, first) or self.scatter(bound, inside, first) \
            or self.index_add(bound, inside, first)
        if scatter is not None:
            return scatter
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

    def _reads_block(self, e: sp.Indexed, expr: sp.Sum) -> bool:
        saved = dict(self.ranges)
        self.ranges.update({v: hi - lo + 1 for v, lo, hi in expr.limits})
        found = any(self._block_of(e, pos) is not None for pos in range(len(e.indices)))
        self.ranges = saved
        return found

    def _grouped(self, index):
        """``g K + q`` with ``q`` running over ``K`` values: (g, q); else None."""
        terms = sp.Add.make_args(sp.expand(index))
        if len(terms) != 2:
            return None
        for q in terms:
            if is_index(q) and q in self.ranges:
                rest = sp.expand(index - q)
                g = [v for v in index_symbols(rest) if v != q]
                if len(g) == 1 and g[0] in self.ranges and sp.expand(rest / g[0] - self.ranges[q]) == 0:
                    return g[0], q
        return None

    def merge(self, bound, inside, first) -> Node | None:
        """``sum_g [0 <= h - g K <= K - 1] f(g, h - g K)``: f on the grid (g, q), then (g, q) read as one
        axis h = g K + q (each h lies in exactly one group)."""
        summed = {v for v, _ in bound}
        ties = [(f, _tie(f.condition, summed)) for f in inside if isinstance(f, Iverson)]
        # the groups' tie (h = g K + q, blocks end to end); others (a grouped conv's windows) stay inside
        ties = [(f, t) for f, t in ties if t is not None and t[3] == 0 and t[4] == 1 and sp.expand(t[2] - t[6]) == 0]
        if len(ties) != 1:
            return None
        bracket, (h, g, stride, shift, dilation, expr, size) = ties[0]
        q = sp.Symbol(next(c for c in "qrstuvw" if c not in {str(x) for f in inside for x in f.free_symbols}),
                      integer=True)
        # h itself read elsewhere (a grouped conv's W[o, ...] beside its window of group g): h = g K + q there too
        body = sp.Mul(*(f for f in inside if f is not bracket)).xreplace({expr: q}).xreplace({h: g * size + q})
        self.ranges[q] = size
        others = [(v, n) for v, n in bound if v != g]
        inner = sp.Sum(body, *reversed([(v, 0, n - 1) for v, n in others])) if others else body
        leading = [a for a in self.order(index_symbols(inner) - summed - {q}, first) if a != h]
        layout = tuple(first[:first.index(h)] if h in first else ())
        layout = tuple(a for a in layout if a in leading) + (g, q) \
            + tuple(a for a in leading if a not in layout)
        arg = self.lower(inner, layout)
        if g not in arg.axes:
            return None
        position = tuple(arg.axes).index(g)
        if q not in arg.axes:  # the same for every q of the group (group norm's mean): each value K times
            axes = tuple(arg.axes)[:position] + (h,) + tuple(arg.axes)[position + 1:]
            return Merge(axes, arg, position, tuple(self.ranges.get(a, 1) for a in arg.axes) + (size,))
        if tuple(arg.axes)[position + 1:position + 2] != (q,):
            return None
        axes = tuple(arg.axes)[:position] + (h,) + tuple(arg.axes)[position + 2:]
        return Merge(axes, arg, position, tuple(self.ranges.get(a, 1) for a in arg.axes))

    def block_sum(self, bound, inside, first) -> Node | None:
        """``sum_o [0 <= o - g K <= K - 1] f(o)`` with g not summed here: only block g's K values of o,
        ``sum_r f(g K + r)`` (a grouped conv's output channels of group g); else None."""
        summed = {v for v, _ in bound}
        for bracket in (f for f in inside if isinstance(f, Iverson)):
            found = _bracket(bracket.condition)
            own = [v for v in index_symbols(found[0]) if v in summed] if found else []
            if len(own) != 1:
                continue
            (o,), (shifted, size) = own, found
            g = [v for v in index_symbols(shifted) if v != o]
            if len(g) != 1 or g[0] not in self.ranges or sp.expand(shifted - o + g[0] * size) != 0:
                continue
            taken = {str(x) for f in inside for x in f.free_symbols} | {str(v) for v, _ in bound}
            r = sp.Symbol(next(c for c in "rstuvwk" if c not in taken), integer=True)
            body = sp.Mul(*(f for f in inside if f is not bracket)).xreplace({o: g[0] * size + r})
            limits = [(r, 0, size - 1) if v == o else (v, 0, n - 1) for v, n in bound]
            return self.lower(sp.Sum(body, *reversed(limits)), first)
        return None

    def gather(self, bound, inside, first) -> Node | None:
        """``sum_v [v = idx_n] f(v)`` is ``f(idx_n)``: the delta is a substitution (the forward of a gather)."""
        summed = {v for v, _ in bound}
        for f in inside:
            if isinstance(f, sp.KroneckerDelta):
                for v, other in (f.args, reversed(f.args)):
                    if v in summed and isinstance(other, sp.Indexed) and not other.free_symbols & {v}:
                        rest = sp.Mul(*(g for g in inside if g is not f)).xreplace({v: other})
                        remaining = [(u, size) for u, size in bound if u != v]
                        body = sp.Sum(rest, *reversed([(u, 0, size - 1) for u, size in remaining])) \
                            if remaining else rest
                        return self.lower(body, first)
        return None

    def index_add(self, bound, inside, first) -> Node | None:
        """``sum_n [p = idx_n] f(n)``: each ``f(n)`` added at row ``idx_n`` (the backward of a gather)."""
        summed = {v for v, _ in bound}
        for f in inside:
            if isinstance(f, sp.KroneckerDelta):
                for p, index in (f.args, reversed(f.args)):
                    if isinstance(p, sp.Symbol) and p not in summed and isinstance(index, sp.Indexed) \
                            and set(index.indices) <= summed and all(isinstance(i, sp.Symbol) for i in index.indices):
                        index_node = self.leaf(index)
                        rest = sp.Mul(*(g for g in inside if g is not f))
                        others = [(u, size) for u, size in bound if u not in index.indices]
                        body = sp.Sum(rest, *reversed([(u, 0, size - 1) for u, size in others])) if others else rest
                        free = tuple(a for a in self.order(index_symbols(body) - summed - {p}, first))
                        values = self.lower(body, tuple(index.indices) + free)
                        return IndexAdd((p,) + free, index_node, values, self.ranges[p])
        return None

    def scatter(self, bound, inside, first) -> Node | None:
        """``sum_i [0 <= a + P - i s <= K-1] f(..., a + P - i s, ...)``: windows summed back (col2im).

        Each bracket ties a free index a (a pixel of the image) to a summed
        one i (a window): the offset p = a + P - i s inside the window runs
        over 0..K-1. Naming p turns the sum into "compute every window's
        contribution, add each at its place".
        """
        summed = {v for v, _ in bound}
        ties = []
        for f in inside:
            if isinstance(f, Iverson):
                tie = _tie(f.condition, summed)
                if tie is not None:
                    ties.append((f, tie))
        if not ties:
            return None
        rest = [f for f in inside if f not in {f for f, _ in ties}]
        offsets, image, replace = [], [], {}
        strides, shifts, dilations = [], [], []
        taken = {str(x) for f in inside for x in f.free_symbols} | {str(v) for v, _ in bound}
        letters = (c for c in "pqrsuvklm" if c not in taken)
        for f, (a, i, stride, shift, dilation, expr, size) in sorted(ties, key=lambda t: str(t[1][0])):
            if dilation != 1:  # the bracket saying the offset is whole goes with the placement
                whole = [b for b in rest if isinstance(b, Iverson) and _divides(b, dilation, a + shift - i * stride)]
                if not whole:
                    return None
                rest.remove(whole[0])
            p = sp.Symbol(next(letters), integer=True)  # the offset inside the window
            replace[expr] = p
            self.ranges[p] = size
            offsets.append((a, i, p))
            strides.append(stride)
            shifts.append(shift)
            dilations.append(dilation)
        body = sp.Mul(*rest).xreplace(replace)
        if any(a in body.free_symbols for a, _, _ in offsets):
            return None
        remaining = [(v, s) for v, s in bound if v not in {i for _, i, _ in offsets}]
        image = tuple(self.ranges[a] for a, _, _ in offsets)
        leading = tuple(x for x in self.order(index_symbols(body) - summed - {p for *_, p in offsets}, first))
        layout = leading + tuple(p for *_, p in offsets) + tuple(i for _, i, _ in offsets)
        inner = sp.Sum(body, *reversed([(v, 0, s - 1) for v, s in remaining])) if remaining else body
        arg = self.lower(inner, layout)
        axes = leading + tuple(a for a, _, _ in offsets)
        kernel = tuple(self.ranges[p] for *_, p in offsets)
        return Scatter(axes, arg, layout, kernel, image, tuple(strides), tuple(shifts), tuple(dilations))

    def crop(self, expr: sp.Indexed) -> Node | None:
        """``x[..., h + P, ...]``: each index one axis of its own plus a shift that holds no index; else None."""
        if expr.base.shape is None:
            return None
        axes, starts, lengths = [], [], []
        for index, whole in zip(expr.indices, expr.base.shape):
            own = index_symbols(index)
            if len(own) != 1:
                return None
            (axis,) = own
            start = sp.expand(index - axis)
            if sp.expand(index).coeff(axis) != 1 or axis not in self.ranges or not start.is_nonnegative:
                return None  # a negative start reads outside the array: only brackets (a Pad) make that right
            axes.append(axis)
            starts.append(start)
            lengths.append(None if start == 0 and sp.expand(self.ranges[axis] - whole) == 0 else self.ranges[axis])
        if len(set(axes)) != len(axes):
            return None
        return Crop(tuple(axes), self.names[expr.base], tuple(starts), tuple(lengths))

    def pad(self, expr: sp.Expr) -> Node | None:
        """``[0 <= h - P <= H - 1] x[..., h - P, ...]`` (brackets for every shifted index): zero padding."""
        factors = sp.Mul.make_args(expr)
        arrays = [f for f in factors if isinstance(f, sp.Indexed)]
        brackets = [f for f in factors if isinstance(f, Iverson)]
        if len(arrays) != 1 or len(arrays) + len(brackets) != len(factors) or not brackets:
            return None
        (array,) = arrays
        covered = {_bracket(b.condition) for b in brackets}
        axes, before, after = [], [], []
        for pos, index in enumerate(array.indices):
            own = [v for v in index_symbols(index)]
            if len(own) != 1 or sp.expand(index).coeff(own[0]) != 1:
                return None
            shift = sp.expand(own[0] - index)
            size = array.base.shape[pos]
            if shift != 0 and (index, size) not in covered:
                return None
            axes.append(own[0])
            before.append(shift)
            after.append(self.ranges.get(own[0], size) - size - shift)
        if len(covered) != sum(1 for b in before if b != 0):
            return None
        return Pad(tuple(axes), self.names[array.base], tuple(before), tuple(sp.simplify(a) for a in after))

    def elementwise(self, expr: sp.Expr, first) -> Node:
        padded = self.pad(expr) or self.stack(expr, first)
        if padded is not None:
            return padded
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
            if isinstance(sub, (sp.Indexed, sp.Sum, Maximum, FirstMax)):
                return hole(sub)
            if is_index(sub) and sub in self.ranges:  # an index as a number: a causal mask's s <= l
                node = Arange((sub,), self.ranges[sub])
                key = next((k for k, v in holes.items() if v == node), None) or sp.Symbol(f"_h{len(holes)}")
                holes[key] = node
                return key
            if not sub.args or is_scalar_expr(sub) and not sub.free_symbols & set(self.ranges):
                return sub
            return sub.func(*(visit(a) for a in sub.args))

        body = visit(expr)
        if not holes:
            return Elementwise((), body, ())
        axes = self.order(set().union(*(set(n.axes) for n in holes.values())), first, expr)
        if len(holes) == 1 and body == next(iter(holes)):
            return next(iter(holes.values()))
        return Elementwise(axes, body, tuple(holes.items()))


def _window_position(index):
    """``i s + p d`` (or ``i s + p``) as (i, p, s, d): the window i (stride s) and the offset p inside
    it (dilation d, 1 for ``i s + p``); else None."""
    terms = sp.Add.make_args(index)
    if len(terms) != 2:
        return None
    scaled = []
    for t in terms:
        if is_index(t):
            scaled.append((t, sp.S.One))
        elif isinstance(t, sp.Mul) and len(t.args) == 2 and sum(is_index(a) for a in t.args) == 1:
            (i,), (step,) = [a for a in t.args if is_index(a)], [a for a in t.args if not is_index(a)]
            scaled.append((i, step))
        else:
            return None
    (i, s), (p, d) = sorted(scaled, key=lambda pair: pair[1] == 1)  # a bare index is the offset
    if i == p:
        return None
    return i, p, s, d


def _bracket(cond):
    """``0 <= e <= K - 1`` as (e, K); else None."""
    parts = cond.args if isinstance(cond, sp.And) else (cond,)
    low = high = None
    for part in parts:
        if isinstance(part, sp.GreaterThan) and part.rhs == 0:
            low = part.lhs
        elif isinstance(part, sp.LessThan) and part.lhs.is_number is False and part.rhs.is_number is not None:
            high = (part.lhs, part.rhs)
    if low is None or high is None or sp.expand(low - high[0]) != 0:
        return None
    return low, high[1] + 1


def _tie(cond, summed):
    """A bracket ``0 <= (a + P - i s) / d <= K-1`` as (a, i, s, P, d, the expression, K); else None.
    With a dilation d other than 1 the offset is whole only where d divides ``a + P - i s``: a bracket
    of its own (``_divides``)."""
    found = _bracket(cond)
    if found is None:
        return None
    expr, size = found
    free = [v for v in index_symbols(expr) if v not in summed]
    tied = [v for v in index_symbols(expr) if v in summed]
    if len(free) != 1 or len(tied) != 1:
        return None
    a, i = free[0], tied[0]
    unit = sp.expand(expr).coeff(a)
    if unit == 0 or index_symbols(unit):
        return None
    dilation = 1 / unit
    scaled = sp.expand(expr * dilation)
    stride = -scaled.coeff(i)
    shift = sp.expand(scaled - a + stride * i)
    if scaled.coeff(a) != 1 or not stride.free_symbols.isdisjoint({a, i}) or index_symbols(shift) \
            or not dilation.is_positive:
        return None
    return a, i, stride, shift, dilation, expr, size


def _divides(bracket, dilation, numerator) -> bool:
    """Whether ``bracket`` is ``[(numerator) mod d = 0]``, the one saying a dilated offset is whole."""
    cond = bracket.condition
    if not isinstance(cond, sp.Eq) or 0 not in cond.args:
        return False
    (side,) = [s for s in cond.args if s != 0]
    mod = -side if isinstance(-side, sp.Mod) else side
    return isinstance(mod, sp.Mod) and mod.args[1] == dilation \
        and 0 in (sp.expand(mod.args[0] - numerator), sp.expand(mod.args[0] + numerator))


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
    elif isinstance(node, Mask):
        found |= symbols_used(node.window) | (symbols_used(node.candidates) if node.candidates else set())
    elif isinstance(node, Window):
        found |= set().union(*(sp.sympify(k).free_symbols for k in node.kernel + node.stride + node.dilation))
    elif isinstance(node, Pad):
        found |= set().union(*(sp.sympify(k).free_symbols for k in node.before + node.after))
    elif isinstance(node, Crop):
        found |= set().union(*(sp.sympify(k).free_symbols for k in node.start + node.size if k is not None))
    elif isinstance(node, Scatter):
        found |= symbols_used(node.arg) | set().union(*(sp.sympify(k).free_symbols for k in node.image + node.kernel
                                                        + node.stride + node.offset + node.dilation))
    elif isinstance(node, Contract):
        for child in node.args:
            found |= symbols_used(child)
    elif isinstance(node, Gather):
        found |= symbols_used(node.index)
    elif isinstance(node, Arange):
        found |= sp.sympify(node.size).free_symbols
    elif isinstance(node, (Split, Merge)):
        found |= set().union(*(sp.sympify(k).free_symbols for k in node.sizes))
        found |= symbols_used(node.arg) if isinstance(node, Merge) else set()
    elif isinstance(node, Block):
        found |= symbols_used(node.arg) | sp.sympify(node.start + node.size).free_symbols
    elif isinstance(node, Stack):
        found |= set().union(*(symbols_used(b) for b in node.blocks))
    elif isinstance(node, IndexAdd):
        found |= symbols_used(node.index) | symbols_used(node.values) | sp.sympify(node.size).free_symbols
    return found


def canonical(node: Node) -> Node:
    """``node`` with the axes it sums over renamed by position, so that sums that differ only
    in the names of their bound indices (``sum_n g x`` and ``sum_n' g x``) compare equal."""
    counter = itertools.count()

    def appearance(n: Node) -> list:
        seen = list(n.axes)
        for kid in children(n):
            seen += [a for a in appearance(kid) if a not in seen]
        return seen

    def visit(n: Node, mapping: dict) -> Node:
        axes = tuple(mapping.get(a, a) for a in n.axes)
        if isinstance(n, (Leaf, Window, Pad, Crop, Arange, Split)):
            return dataclasses.replace(n, axes=axes)
        if isinstance(n, (Contract, Reduce, Scatter)):
            local = dict(mapping)
            for a in appearance(n):
                if a not in n.axes and a not in local:
                    local[a] = sp.Symbol(f"_a{next(counter)}", integer=True)
            if isinstance(n, Contract):
                return Contract(axes, tuple(visit(c, local) for c in n.args))
            if isinstance(n, Scatter):
                return dataclasses.replace(n, axes=axes, arg=visit(n.arg, local),
                                           layout=tuple(local.get(a, a) for a in n.layout))
            return dataclasses.replace(n, axes=axes, arg=visit(n.arg, local))
        if isinstance(n, Elementwise):
            return Elementwise(axes, n.expr, tuple((k, visit(c, mapping)) for k, c in n.holes))
        if isinstance(n, Mask):
            local = dict(mapping)
            for a, b in zip(n.window.axes, n.axes):
                if a != b:
                    local[a] = mapping.get(b, b)
            return dataclasses.replace(n, axes=axes, window=visit(n.window, local),
                                       candidates=visit(n.candidates, local) if n.candidates else None)
        if isinstance(n, Gather):
            return dataclasses.replace(n, axes=axes, index=visit(n.index, mapping))
        if isinstance(n, Stack):
            return dataclasses.replace(n, axes=axes, blocks=tuple(visit(b, mapping) for b in n.blocks))
        if isinstance(n, (Merge, Block)):
            local = dict(mapping)
            for a in appearance(n):
                if a not in n.axes and a not in local:
                    local[a] = sp.Symbol(f"_a{next(counter)}", integer=True)
            return dataclasses.replace(n, axes=axes, arg=visit(n.arg, local))
        if isinstance(n, IndexAdd):
            local = dict(mapping)
            for a in appearance(n):
                if a not in n.axes and a not in local:
                    local[a] = sp.Symbol(f"_a{next(counter)}", integer=True)
            return dataclasses.replace(n, axes=axes, index=visit(n.index, local), values=visit(n.values, local))
        return n

    return visit(node, {})


def children(node: Node) -> tuple:
    """The nodes ``node`` is computed from."""
    if isinstance(node, Contract):
        return node.args
    if isinstance(node, Mask):
        return (node.window,) + ((node.candidates,) if node.candidates else ())
    if isinstance(node, (Reduce, Scatter, Merge, Block)):
        return (node.arg,)
    if isinstance(node, Stack):
        return node.blocks
    if isinstance(node, Elementwise):
        return tuple(c for _, c in node.holes)
    if isinstance(node, Gather):
        return (node.index,)
    if isinstance(node, IndexAdd):
        return (node.index, node.values)
    return ()


def map_children(node: Node, fn) -> Node:
    """``node`` with ``fn`` applied to each of its children."""
    if isinstance(node, Contract):
        return dataclasses.replace(node, args=tuple(fn(c) for c in node.args))
    if isinstance(node, Mask):
        return dataclasses.replace(node, window=fn(node.window),
                                   candidates=fn(node.candidates) if node.candidates else None)
    if isinstance(node, (Reduce, Scatter, Merge, Block)):
        return dataclasses.replace(node, arg=fn(node.arg))
    if isinstance(node, Stack):
        return dataclasses.replace(node, blocks=tuple(fn(b) for b in node.blocks))
    if isinstance(node, Elementwise):
        return dataclasses.replace(node, holes=tuple((k, fn(c)) for k, c in node.holes))
    if isinstance(node, Gather):
        return dataclasses.replace(node, index=fn(node.index))
    if isinstance(node, IndexAdd):
        return dataclasses.replace(node, index=fn(node.index), values=fn(node.values))
    return node


def leaf_names(node: Node, computed=frozenset()) -> set:
    """The named arrays ``node`` reads, but not through the subtrees in ``computed`` (canonical
    nodes already stored as temporaries)."""
    if canonical(node) in computed:
        return set()
    if isinstance(node, (Leaf, Window, Pad, Crop, Split)):
        return {node.name}
    own = {node.name} if isinstance(node, Gather) else set()
    return own.union(*(leaf_names(c, computed) for c in children(node)))


def subtrees(node: Node):
    """``node`` and every node below it."""
    yield node
    for child in children(node):
        yield from subtrees(child)


def share_arithmetic(trees: list) -> list:
    """Give arithmetic that several places compute over full arrays a node of its own.

    ``e = exp(z - m)`` and ``E = sum t (z - m - log s)`` both compute ``z - m``
    over the whole array; as one node, the printer stores it once. A part of
    a longer sum counts (``z - m`` in ``z - m - log s``). Only pieces the
    size of their statement's arrays are worth a name.
    """
    symbols: dict = {}  # canonical node -> stand-in symbol
    nodes: dict = {}  # stand-in symbol -> node

    def stand_in(node: Node) -> sp.Symbol:
        key = canonical(node)
        if key not in symbols:
            symbols[key] = sp.Symbol(f"_n{len(symbols)}")
            nodes[symbols[key]] = node
        return symbols[key]

    def spelled(node: Elementwise) -> sp.Expr:
        return node.expr.xreplace({k: stand_in(c) for k, c in node.holes})

    def pieces(node: Elementwise):
        expr = spelled(node)
        for sub in sp.preorder_traversal(expr):
            if node.axes and _shareable(sub) and _axes_of(sub, nodes) == set(node.axes):
                yield expr, sub

    found = [(n, expr, sub) for n in _elementwise_nodes(trees) for expr, sub in pieces(n)]
    counts = Counter(sub for _, _, sub in found)
    sums = {sub for _, _, sub in found if isinstance(sub, sp.Add)}
    for _, expr, sub in found:
        if isinstance(sub, sp.Add):
            counts.update(part for part in sums if set(part.args) < set(sub.args))
    chosen = sorted((sub for sub, c in counts.items() if c > 1), key=lambda s: (-sp.count_ops(s), sp.default_sort_key(s)))
    if not chosen:
        return trees

    axes_order = {}
    for node, _, sub in found:
        axes_order.setdefault(sub, tuple(a for a in node.axes if a in _axes_of(sub, nodes)))
    named = {sub: sp.Symbol(f"_s{i}") for i, sub in enumerate(chosen)}

    def name_parts(expr: sp.Expr, skip=None) -> sp.Expr:
        for sub in chosen:
            if sub == skip:
                continue
            expr = expr.xreplace({sub: named[sub]})
            if isinstance(sub, sp.Add):
                parts = set(sub.args)
                expr = expr.replace(lambda e: isinstance(e, sp.Add) and parts < set(e.args),
                                    lambda e: named[sub] + sp.Add(*(set(e.args) - parts)))
        return expr

    memo: dict = {}

    def build(expr: sp.Expr, axes: tuple) -> Node:
        holes = {}
        for s in sorted(expr.free_symbols & (set(nodes) | set(named.values())), key=str):
            holes[sp.Symbol(f"_h{len(holes)}")] = s
        body = expr.xreplace({s: k for k, s in holes.items()})
        children = tuple((k, shared(s)) for k, s in holes.items())
        if len(children) == 1 and body == children[0][0]:
            return children[0][1]
        return Elementwise(axes, body, children)

    def shared(s: sp.Symbol) -> Node:
        if s not in memo:
            sub = next((sub for sub, n in named.items() if n == s), None)
            memo[s] = build(name_parts(sub, skip=sub), axes_order[sub]) if sub is not None else rewrite(nodes[s])
        return memo[s]

    def rewrite(node: Node) -> Node:
        if isinstance(node, Elementwise):
            return build(name_parts(spelled(node)), tuple(node.axes))
        return map_children(node, rewrite)

    return [rewrite(tree) for tree in trees]


def _shareable(sub: sp.Expr) -> bool:
    """Arithmetic worth naming: a sum, product or function of arrays, no conditions inside."""
    if not isinstance(sub, (sp.Add, sp.Mul, sp.Pow, sp.exp, sp.log)) or sub.is_Mul and sub.args[0] == -1:
        return False
    return not any(isinstance(e, (sp.Piecewise, Iverson, sp.Rel)) or e.is_Boolean for e in sp.preorder_traversal(sub))


def _axes_of(expr: sp.Expr, nodes: dict) -> set:
    return set().union(set(), *(set(nodes[s].axes) for s in expr.free_symbols if s in nodes))


def _elementwise_nodes(trees):
    """Every Elementwise node in ``trees``, outermost first, each once."""
    seen, out = set(), []

    def visit(node):
        if isinstance(node, Elementwise) and node not in seen:
            seen.add(node)
            out.append(node)
        for child in children(node):
            visit(child)

    for tree in trees:
        visit(tree)
    return out


def split_sums(node: Node) -> Node:
    """``sum t (A - b)`` with ``b`` smaller than ``A`` as ``sum t A - sum t b``.

    The sum of products reads its arrays in place; the difference as
    written would be a full-size temporary (``u - log s`` in the
    cross-entropy), made only to be summed. A shift by a maximum is never
    split from what it shifts: that is what keeps ``exp`` and ``log`` stable.
    """
    if isinstance(node, Contract):
        args = tuple(split_sums(a) for a in node.args)
        for pos, arg in enumerate(args):
            if isinstance(arg, Elementwise) and isinstance(arg.expr, sp.Add):
                groups = _terms_by_axes(arg)
                if groups is not None:
                    rest = args[:pos] + args[pos + 1:]
                    keys = [sp.Symbol(f"_h{i}") for i in range(len(groups))]
                    return Elementwise(tuple(node.axes), sp.Add(*(c * k for k, (c, _) in zip(keys, groups))),
                                       tuple((k, Contract(tuple(node.axes), (part,) + rest))
                                             for k, (_, part) in zip(keys, groups)))
        return dataclasses.replace(node, args=args)
    return map_children(node, split_sums)


def _terms_by_axes(node: Elementwise):
    """The terms of a sum grouped by the axes they span, as (number, node); None unless some span fewer."""
    holes = dict(node.holes)
    groups: dict = {}
    for term in node.expr.args:
        used = tuple((k, c) for k, c in node.holes if k in term.free_symbols)
        if not used or any(isinstance(c, Reduce) and c.kind == "max" for _, c in used):
            return None  # a constant term needs a count; a max shift stays with what it shifts
        axes = frozenset().union(*(c.axes for _, c in used))
        groups.setdefault(axes, []).append(term)
    if len(groups) < 2 or all(axes == frozenset(node.axes) for axes in groups):
        return None
    out = []
    for axes, terms in sorted(groups.items(), key=lambda g: (-len(g[0]), sp.default_sort_key(sp.Add(*g[1])))):
        coeff, expr = sp.Add(*terms).as_coeff_Mul()
        used = tuple((k, c) for k, c in node.holes if k in expr.free_symbols)
        if len(used) == 1 and expr == used[0][0]:
            out.append((coeff, holes[expr]))
        else:
            out.append((coeff, Elementwise(tuple(a for a in node.axes if a in axes), expr, used)))
    return out


def rows_sum_to_one(node: Node, names: set) -> Node:
    """``sum_k t[n, k] f[n]`` as ``sum f[n]`` where each row of ``t`` sums to 1, an assumption the
    module checks (``names``: such inputs, rows along their last axis): one pass over ``t`` fewer."""
    if isinstance(node, Contract):
        args = tuple(rows_sum_to_one(a, names) for a in node.args)
        for pos, arg in enumerate(args):
            rest = args[:pos] + args[pos + 1:]
            if isinstance(arg, Leaf) and arg.name in names and rest and arg.axes[-1] not in node.axes \
                    and not any(arg.axes[-1] in other.axes for other in rest):
                if len(rest) > 1:
                    return Contract(tuple(node.axes), rest)
                return rest[0] if tuple(rest[0].axes) == tuple(node.axes) else Reduce(tuple(node.axes), "sum",
                                                                                       rest[0], None)
        return dataclasses.replace(node, args=args)
    return map_children(node, lambda child: rows_sum_to_one(child, names))


def pairwise(node: Node, size) -> Node:
    """Each product of three or more arrays as a sequence of products of two, in the order that does the
    least work, where that is much less than one pass over every index at once.

    Attention's ``sum_{e,s} dout_{nle} v_{nse} p_{nls} k_{nsd}`` in one pass loops over n, l, s, e and d
    together; as (dout v) p, then k, it is two batched matrix products. ``size(axis)`` is a representative
    number for the axis (the op's benchmark sizes), so the order is fixed when the code is generated. A
    product whose arrays share their axes (batch norm's ``sum g x\\hat gamma``) stays one pass, with no
    temporary.
    """
    node = map_children(node, lambda child: pairwise(child, size))
    if not isinstance(node, Contract) or len(node.args) < 3:
        return node

    def work(axes) -> int:
        return int(np.prod([size(a) for a in set(axes)], dtype=float))

    out = set(node.axes)
    operands = list(node.args)
    one_pass = work(set().union(*(set(a.axes) for a in operands))) * (len(operands) - 1)
    total = 0
    while len(operands) > 2:
        best = None
        for i, j in itertools.combinations(range(len(operands)), 2):
            a, b = operands[i], operands[j]
            rest = [o for k, o in enumerate(operands) if k not in (i, j)]
            needed = out.union(*(set(o.axes) for o in rest))
            kept = tuple(x for x in _ordered(a.axes + b.axes) if x in needed)
            key = (work(a.axes + b.axes), work(kept), i, j)
            if best is None or key < best[0]:
                best = (key, i, j, kept)
        (cost, _, _, _), i, j, kept = best
        total += cost
        pair = Contract(kept, (operands[i], operands[j]))
        operands = [o for k, o in enumerate(operands) if k not in (i, j)] + [pair]
    total += work(operands[0].axes + operands[1].axes)
    if 2 * total > one_pass:
        return node
    return Contract(tuple(node.axes), tuple(operands))


def _ordered(axes) -> tuple:
    return tuple(dict.fromkeys(axes))


def work(trees, size) -> float:
    """How much arithmetic the trees take: each distinct node once (shared ones are computed once),
    a product of arrays by every index it loops over, anything else by the size of what it makes."""
    seen, total = set(), 0.0
    for tree in trees:
        for node in subtrees(tree):
            key = canonical(node)
            if key in seen or isinstance(node, Leaf):
                continue
            seen.add(key)
            axes = set(node.axes).union(*(set(c.axes) for c in node.args)) if isinstance(node, Contract) \
                else set(node.axes)
            total += float(np.prod([size(a) for a in axes], dtype=float))
    return total


def without_axis(node: Node, axis) -> Node:
    """``node`` for one value of ``axis`` (each array's batch axis set aside: attention per sample)."""
    node = map_children(node, lambda child: without_axis(child, axis))
    return dataclasses.replace(node, axes=tuple(a for a in node.axes if a != axis))


def join_blocks(trees: list) -> list:
    """Stacked weights as whole-array products, the way PyTorch computes a GRU or an LSTM.

    Forward: the gate blocks ``x W[gH:(g+1)H]^T`` that several statements read become views of the one
    product ``x W^T``. Backward: a stacked gradient whose blocks are each some ``δ_g^T x`` is one
    product ``[δ_0 δ_1 ...]^T x``, and a sum over the blocks ``Σ_g δ_g W[gH:(g+1)H]`` is ``[δ_0 δ_1 ...] W``.
    """
    products = Counter(canonical(p) for tree in trees for node in subtrees(tree)
                       for p in [_block_product(node)] if p is not None)

    def visit(node: Node) -> Node:
        node = map_children(node, visit)
        product = _block_product(node)
        if product is not None and products[canonical(product)] > 1:
            (block,) = [a for a in node.args if isinstance(a, Block)]
            full = block.arg.axes[block.position]
            return Block(tuple(node.axes), product, tuple(product.axes).index(full), block.start, block.size,
                         block.total)
        if isinstance(node, Stack):
            return _stack_of_products(node)
        if isinstance(node, Elementwise):
            return _sum_over_blocks(node)
        return node

    return [visit(tree) for tree in trees]


def _block_product(node: Node) -> Contract | None:
    """``Σ x W[block]`` with the block's rows kept (a gate's pre-activation) as the product with all of
    W, whose rows are the stacked axis; else None."""
    if not isinstance(node, Contract) or len(node.args) != 2:
        return None
    blocks = [a for a in node.args if isinstance(a, Block) and isinstance(a.arg, Leaf)]
    if len(blocks) != 1 or blocks[0].axes[blocks[0].position] not in node.axes:
        return None
    (block,) = blocks
    (other,) = [a for a in node.args if a is not block]
    kept = block.axes[block.position]
    if kept in other.axes:
        return None
    full = block.arg.axes[block.position]
    args = tuple(block.arg if a is block else a for a in node.args)
    return Contract(tuple(full if a == kept else a for a in node.axes), args)


def _stack_of_products(node: Stack) -> Node:
    """Blocks that are each (block g of something) times one array B, as (the blocks stacked) times B;
    sums of blocks as the sum of the stack."""
    blocks = node.blocks
    stacked = blocks[0].axes[node.position]
    if all(isinstance(b, Reduce) and b.kind == "sum" and b.axes == blocks[0].axes for b in blocks):
        inner = [b.arg for b in blocks]
        if len({tuple(a.axes) for a in inner}) == 1 and stacked in inner[0].axes:
            arg = Stack(tuple(inner[0].axes), tuple(inner), tuple(inner[0].axes).index(stacked), node.size)
            return Reduce(tuple(node.axes), "sum", arg, blocks[0].size)
    if not all(isinstance(b, Contract) and len(b.args) == 2 and b.axes == blocks[0].axes for b in blocks):
        return node
    for shared in range(2):
        common = {canonical(b.args[shared]) for b in blocks}
        parts = [b.args[1 - shared] for b in blocks]
        if len(common) == 1 and stacked not in blocks[0].args[shared].axes \
                and len({tuple(p.axes) for p in parts}) == 1 and stacked in parts[0].axes:
            arg = Stack(tuple(parts[0].axes), tuple(parts), tuple(parts[0].axes).index(stacked), node.size)
            args = [None, None]
            args[shared], args[1 - shared] = blocks[0].args[shared], arg
            return Contract(tuple(node.axes), tuple(args))
    return node


def _sum_over_blocks(node: Elementwise) -> Node:
    """``... + Σ_k W[k, d] δ_0[n, k] + Σ_k W[H + k, d] δ_1[n, k] + ...`` over every block of W as one
    product of W with the blocks' factors stacked."""
    terms = sp.Add.make_args(node.expr)
    holes = node.children
    groups: dict = {}
    for key in terms:
        child = holes.get(key)
        if not isinstance(child, Contract) or len(child.args) != 2:
            continue
        blocks = [a for a in child.args if isinstance(a, Block) and isinstance(a.arg, Leaf)]
        if len(blocks) != 1:
            continue
        (block,) = blocks
        (other,) = [a for a in child.args if a is not block]
        k = block.axes[block.position]
        if k in child.axes or k not in other.axes:
            continue
        group = (block.arg, block.position, block.size, block.total, tuple(child.axes), tuple(other.axes))
        groups.setdefault(group, {})[block.start] = (key, other)
    expr, new_holes = node.expr, dict(node.holes)
    for (leaf, position, size, total, axes, other_axes), found in sorted(groups.items(), key=lambda g: str(g[0])):
        count = sp.simplify(total / size)
        starts = sorted(found, key=lambda s: sp.simplify(s / size))
        summed = [a for a in other_axes if a not in axes]
        if not count.is_Integer or [sp.simplify(s / size) for s in starts] != list(range(int(count))) \
                or len(summed) != 1:
            continue
        (k,) = summed
        full = leaf.axes[position]
        stacked = Stack(tuple(full if a == k else a for a in other_axes), tuple(found[s][1] for s in starts),
                        other_axes.index(k), size)
        key = sp.Symbol(f"_h{len(new_holes)}")
        while key in new_holes:
            key = sp.Symbol(f"{key.name}_")
        new_holes[key] = Contract(axes, (leaf, stacked))
        used = [found[s][0] for s in starts]
        expr = expr.xreplace({u: 0 for u in used}) + key
        for u in used:
            del new_holes[u]
    if expr == node.expr:
        return node
    if len(new_holes) == 1 and expr == next(iter(new_holes)):
        return next(iter(new_holes.values()))
    return Elementwise(tuple(node.axes), expr, tuple(new_holes.items()))

