"""The vocabulary an op is written in: sizes, indices, tensors, intermediates.

Everything is index notation with symbolic sizes (``IndexedBase`` inputs,
``Sum`` over symbolic bounds), the form in which SymPy differentiates layers
reliably (see ../shared/SYMPY-NOTES.md).
"""
from __future__ import annotations

import contextlib
import contextvars
import itertools
from functools import lru_cache

import sympy as sp
from sympy.core.function import Function
from sympy.tensor.indexed import Indexed, IndexedBase


def sizes(names: str) -> tuple[sp.Symbol, ...]:
    """Symbolic dimension sizes (positive integers), e.g. ``sizes("N D M")``."""
    return tuple(sp.Symbol(name, integer=True, positive=True) for name in names.split())


def indices(names: str) -> tuple[sp.Symbol, ...]:
    """Index symbols (integers); plain symbols print better than ``Idx``."""
    return tuple(sp.Symbol(name, integer=True) for name in names.split())


class Tensor(IndexedBase):
    """An input array of the op, with its symbolic shape.

    Elements are real (so that ``|x|`` differentiates to ``sign(x)``), or
    integers with ``integer=True`` (indices into another tensor, such as an
    embedding's token ids).
    """

    def __new__(cls, name, *shape, integer=False):
        if len(shape) == 1 and isinstance(shape[0], (tuple, sp.Tuple)):
            shape = tuple(shape[0])  # unpickled
        if isinstance(name, sp.Symbol):
            return super().__new__(cls, name, shape)
        kind = {"integer": True, "nonnegative": True} if integer else {"real": True}  # (not an index letter)
        return super().__new__(cls, sp.Symbol(name, **kind), shape)

    @property
    def args(self):
        # An atom to substitution: putting numbers for sizes into an expression
        # must not turn x of shape (N, D) into a different tensor of shape (2, 3).
        return self._args[:1]

    def __getnewargs__(self):
        return self._args

    @property
    def func(self):
        # SymPy rebuilds nodes as node.func(*node.args): keep the hidden shape.
        return lambda label: Tensor(label, *self.shape)

    @property
    def rank(self) -> int:
        return len(self.shape)


class Intermediate(IndexedBase):
    """A named value defined from the inputs, such as ``net``, ``mu`` or ``y``.

    The definition is part of the object (its arguments), so two
    intermediates are equal only if they mean the same thing, and SymPy's
    caches cannot confuse the ``y`` of one op with the ``y`` of another.
    Differentiation goes through the definition, but the value itself stays
    opaque, so every result is written in terms of the named values.
    """

    def __new__(cls, name, index: tuple, shape: tuple, definition, **assumptions):
        """``assumptions`` (say ``positive=True``) hold for every element, as for ``IndexedBase``."""
        label = sp.Symbol(name, **assumptions) if isinstance(name, str) else name
        if len(index) != len(shape):
            raise ValueError(f"{label}: {len(index)} indices but {len(shape)} sizes")
        obj = sp.Expr.__new__(cls, label, sp.Tuple(*index), sp.Tuple(*shape), sp.sympify(definition))
        obj._shape = sp.Tuple(*shape)
        obj._offset = sp.S.Zero
        obj._strides = None
        obj._name = str(label)
        IndexedBase._set_assumptions(obj, label.assumptions0)
        return obj

    @property
    def args(self):
        # Generic traversals (xreplace, replace, subs, preorder_traversal) see an
        # atom: renaming indices elsewhere must never rewrite a definition.
        return self._args[:1]

    def __getnewargs__(self):
        return self._args

    @property
    def func(self):
        # SymPy rebuilds nodes as node.func(*node.args): keep the hidden definition.
        return lambda label: Intermediate(label, self.index, self.shape, self.definition)

    @property
    def index(self) -> tuple:
        return tuple(self._args[1])

    @property
    def definition(self) -> sp.Expr:
        return self._args[3]

    def __getitem__(self, idx):
        idx = idx if isinstance(idx, tuple) else (idx,)
        if len(idx) != len(self.index):
            raise IndexError(f"{self.name} takes {len(self.index)} indices, got {len(idx)}")
        return IntermediateElement(self, *idx)

    def at(self, *idx, avoid=frozenset()) -> sp.Expr:
        """The definition written for the element at ``idx``.

        Bound indices that clash with ``avoid`` (say, the indices of the
        element we differentiate by) are renamed first.
        """
        return substitute_indices(avoid_capture(self.definition, avoid), dict(zip(self.index, idx)))


@lru_cache(maxsize=4096)
def _definition_symbols(node: Intermediate) -> frozenset:
    """The symbols a definition reads besides its own indices, once per intermediate: a nested
    intermediate's would otherwise be found again at every element of every expression that reads it."""
    return frozenset(node.definition.free_symbols - set(node.index))


class IntermediateElement(Indexed):
    """``y[n, k]`` for an intermediate ``y``: differentiated through its definition."""

    @property
    def free_symbols(self):
        return super().free_symbols | _definition_symbols(self.base)

    def _eval_derivative(self, wrt):
        # Cases as Iverson brackets first: SymPy would fold a Piecewise out of the sum around this
        # element, leaving its condition outside the sum it belongs to (a residual block's ReLU).
        return sp.diff(iverson_form(self.base.at(*self.indices, avoid=wrt.free_symbols)), wrt)


class Iverson(Function):
    """The Iverson bracket [condition]: 1 where it holds, 0 elsewhere.

    It carries the range conditions that delta elimination produces through
    an affine index, so that they are never dropped.
    """

    @classmethod
    def eval(cls, cond):
        if cond is sp.true:
            return sp.S.One
        if cond is sp.false:
            return sp.S.Zero
        return None

    @property
    def condition(self):
        return self.args[0]

    def _eval_is_nonnegative(self):
        return True

    def _eval_derivative(self, s):
        # Piecewise constant: 0 wherever it is differentiable (ReLU's kink, a window's edge).
        return sp.S.Zero


def iverson_form(expr: sp.Expr) -> sp.Expr:
    """Every ``Piecewise`` as a sum of Iverson-bracketed terms: ``a [c] + b [not c]``.

    SymPy folds a ``Piecewise`` out of any ``Sum`` around it (each new
    ``Sum`` runs ``piecewise_fold``), even when the condition depends on
    the summation index: nested layers of ReLU came out wrong that way.
    Iverson brackets are plain factors and stay where they are.
    """
    def convert(pw):
        terms, earlier = [], sp.false
        for value, cond in pw.args:
            active = sp.And(cond, sp.Not(earlier)) if earlier is not sp.false else cond
            terms.append(value * Iverson(active))
            earlier = sp.Or(earlier, cond)
        return sp.Add(*terms)
    return expr.replace(lambda e: isinstance(e, sp.Piecewise), convert)


def as_piecewise(expr: sp.Expr) -> sp.Expr:
    """Iverson brackets back to ``Piecewise`` (for expressions without sums: checks, printing)."""
    return expr.replace(lambda e: isinstance(e, Iverson), lambda e: sp.Piecewise((1, e.condition), (0, True)))


class FirstMax(Function):
    """1 where offset (p, q) holds its window's first maximum, else 0.

    ``FirstMax(x[..., i s + p', j s + q'], p', q', K, L, p, q)``: the window
    runs over the bound offsets p' < K, q' < L; (p, q) is the element asked
    for. A primitive with a stated rule: piecewise constant, so its
    derivative is 0 wherever it has one; ties go to the first maximum in
    row-major order, as in PyTorch. Max pooling sums the window against it.
    An eighth argument, a condition on p' and q', restricts the maximum to
    the offsets where it holds (padded max pooling: the cells inside the
    image, as if the padding were -inf, without an infinity that 0 * -inf
    would turn into NaN).
    """

    def _eval_derivative(self, s):
        return sp.S.Zero

    @property
    def window(self):
        return self.args[0]

    @property
    def bound(self):
        return self.args[1:3]

    @property
    def kernel(self):
        return self.args[3:5]

    @property
    def at(self):
        return self.args[5:7]

    @property
    def candidates(self):
        """Where in the window the maximum may lie: a condition on the bound offsets (true: anywhere)."""
        return self.args[7] if len(self.args) > 7 else sp.true

    @property
    def free_symbols(self):
        inner = (self.window.free_symbols | self.candidates.free_symbols) - set(self.bound)
        return inner.union(*(a.free_symbols for a in self.args[3:7]))


class Maximum(Function):
    """``max`` over one axis: ``Maximum(body, index, lo, hi)``.

    Only numerics use it: the max shift that keeps ``exp`` from overflowing.
    """

    @property
    def body(self):
        return self.args[0]

    @property
    def bound(self):
        return self.args[1]

    @property
    def limits(self):
        return self.args[1:]

    @property
    def free_symbols(self):
        return (self.body.free_symbols - {self.bound}) | self.args[2].free_symbols | self.args[3].free_symbols

    def _eval_derivative(self, wrt):
        raise NotImplementedError("the max shift is for numerics, never differentiated")


#: Names handed out in the current derivation (see ``fresh_scope``).
_handed_out: contextvars.ContextVar = contextvars.ContextVar("handed_out", default=None)


@contextlib.contextmanager
def fresh_scope():
    """Within this block, no two fresh indices share a name, even in unrelated subexpressions.

    An intermediate's definition is renamed where it is differentiated,
    without sight of the sums around it; unique names keep a nested sum
    from shadowing an outer one with the same bound index.
    """
    token = _handed_out.set(set())
    try:
        yield
    finally:
        _handed_out.reset(token)


def fresh_index(hint: str, taken) -> sp.Symbol:
    """An integer index named after ``hint`` (``k`` gives ``k_1``) and not in ``taken``.

    Names are chosen, not counted globally, so that a derivation gives the
    same symbols, and so the same bytes, whatever ran before it.
    """
    base = str(hint).split("_")[0]
    handed_out = _handed_out.get()
    names = {str(t) for t in taken} | (handed_out or set())
    for m in itertools.count(1):
        name = f"{base}_{m}"
        if name not in names:
            if handed_out is not None:
                handed_out.add(name)
            return sp.Symbol(name, integer=True)


def symbols_in(expr) -> set:
    """Every symbol in ``expr``, bound or free."""
    return set(sp.sympify(expr).atoms(sp.Symbol))


def is_index(symbol) -> bool:
    """An index: an integer symbol with no sign (sizes are positive, stride and padding have signs)."""
    return isinstance(symbol, sp.Symbol) and symbol.is_integer and symbol.is_nonnegative is None


def index_symbols(expr) -> set:
    """The free indices of ``expr``."""
    return {s for s in sp.sympify(expr).free_symbols if is_index(s)}


def bound_indices(expr: sp.Expr) -> set[sp.Symbol]:
    """Every index bound by a ``Sum`` (or ``Maximum``) somewhere in ``expr``."""
    found = set()
    for node in sp.preorder_traversal(expr):
        if isinstance(node, sp.Sum):
            found.update(lim[0] for lim in node.limits)
        elif isinstance(node, Maximum):
            found.add(node.bound)
    return found


def substitute_indices(expr: sp.Expr, mapping: dict) -> sp.Expr:
    """Replace free indices simultaneously, renaming bound ones that would be captured."""
    if not mapping:
        return expr
    incoming = set().union(*(symbols_in(v) for v in mapping.values()))
    expr = avoid_capture(expr, incoming | set(mapping))
    return expr.xreplace({k: sp.sympify(v) for k, v in mapping.items()})


def avoid_capture(expr: sp.Expr, avoid) -> sp.Expr:
    """Rename the bound indices of ``expr`` that are among ``avoid``."""
    clashes = bound_indices(expr) & set(avoid)
    if not clashes:
        return expr
    taken = symbols_in(expr) | set(avoid)
    renames = {}
    for b in sorted(clashes, key=str):
        renames[b] = fresh_index(b, taken | set(renames.values()))
    return rename_bound(expr, renames)


def rename_bound(expr: sp.Expr, renames: dict) -> sp.Expr:
    """Rename the bound variables of sums (and maxima) in ``expr``."""
    def visit(node):
        if not node.args or isinstance(node, Intermediate):
            return node
        args = [visit(a) for a in node.args]
        if isinstance(node, sp.Sum):
            body, limits = args[0], args[1:]
            new_limits = []
            for lim in limits:
                var = lim[0]
                if var in renames:
                    body = body.xreplace({var: renames[var]})
                    lim = sp.Tuple(renames[var], *lim[1:])
                new_limits.append(lim)
            return sp.Sum(body, *new_limits)
        if isinstance(node, Maximum):
            body, var = args[0], args[1]
            if var in renames:
                return Maximum(body.xreplace({var: renames[var]}), renames[var], *args[2:])
        return rebuild(node, args)
    return visit(expr)


def rebuild(node: sp.Basic, args) -> sp.Basic:
    """``node`` with new arguments, or ``node`` itself when none changed."""
    args = tuple(args)
    return node if args == node.args else node.func(*args)
