"""Print vector IR as NumPy statements: broadcasting, einsum/matmul, keepdims, temporaries.

Each array is addressed by a layout: a tuple of index symbols, ``None``
for a broadcast (size-1) axis. NumPy broadcasts from the right, so a
child only needs ``[:, None]`` for axes missing in the middle or at the
end, a transpose when its axes come in another order, and reductions
keep their dimensions when that lines them up for free.
"""
from __future__ import annotations

import dataclasses
from collections import Counter

import sympy as sp
from sympy.printing.numpy import NumPyPrinter

from derive.define.symbols import Iverson, as_piecewise

from codegen.ir import (Arange, Block, Stack, Contract, Crop, Elementwise, Gather, IndexAdd, Leaf, Mask, Merge, Node, Pad, Reduce, Scatter,
                        Split, Window,
                        canonical, children, gather, subtrees)


class ExprPrinter(NumPyPrinter):
    """SymPy's NumPy printer with ``np.``, infix comparisons and ``np.where``."""

    def __init__(self, helpers: set):
        super().__init__({"fully_qualified_modules": False, "allow_unknown_functions": True})
        self.helpers = helpers
        self.ranks: dict = {}  # array code -> number of axes, to order terms
        self.arrays: set = set()  # the symbols that stand for arrays in the expression being printed
        self.counts: set = set()  # the symbols that stand for a count of what brackets keep (it may be 0)

    def _module_format(self, fqn, register=True):
        return "np." + fqn.split(".")[-1] if fqn.startswith("numpy.") else fqn

    def _print_Add(self, expr, order=None):
        """Positive terms first: ``x - m``, not ``-m + x``; bracketed branches as ``np.where``."""
        if expr.has(Iverson):
            return self._print(sp.piecewise_fold(as_piecewise(expr)))
        def rank(term):
            return max((self.ranks.get(s.name, 0) for s in term.free_symbols), default=0)

        terms = sorted(expr.as_ordered_terms(), key=lambda t: (t.could_extract_minus_sign(), -rank(t)))
        text = ""
        for t in terms:
            s = self._print(t)
            if s.startswith("-"):
                text += (" - " if text else "-") + s[1:]
            else:
                text += (" + " if text else "") + s
        return text

    def _print_KroneckerDelta(self, expr):
        """``[a = b]`` as a boolean array (a label's one-hot row): a factor, as an Iverson bracket's mask is."""
        return f"({self._print(expr.args[0])} == {self._print(expr.args[1])})"

    def _print_Relational(self, expr):
        return f"{self._print(expr.lhs)} {expr.rel_op} {self._print(expr.rhs)}"

    def _print_Piecewise(self, expr):
        (value, cond), *rest = expr.args
        other = sp.Piecewise(*rest) if rest[0][1] is not sp.true else rest[0][0]
        if other == 0 and isinstance(cond, sp.StrictGreaterThan) and cond.rhs == 0 and value == cond.lhs:
            return f"np.maximum({self._print(value)}, 0)"  # ReLU: NaN stays NaN, as in PyTorch
        if other == 0 and value.free_symbols & self.counts:
            # Divided by a count of kept samples, which is 0 only where every bracket is: select, as an
            # Iverson bracket is strongly zero (0 even beside the NaN of 0/0), PyTorch's zero gradient.
            return f"np.where({self._print(cond)}, {self._print(value)}, 0)"
        if other == 0:  # a mask: multiplying by it beats np.where's unpredictable branches
            return f"{self.parenthesize(value, 50)}*({self._print(cond)})"
        scaled = self.factored_branches(value, other, cond)
        if scaled is not None:
            # One array times a number chosen per element (leaky ReLU: 1 or alpha): exact, and without
            # np.where's branch, which mispredicts every other element of random signs.
            self.helpers.add("scaled")
            return f"_scaled({', '.join(self._print(part) for part in scaled)})"
        # Otherwise select: multiplying each branch by a mask would turn an infinite branch into NaN.
        return f"np.where({self._print(cond)}, {self._print(value)}, {self._print(other)})"

    def factored_branches(self, value, other, cond):
        """``(A, cond, a, b)`` for branches ``A*a`` and ``A*b``: one array expression A, and numbers
        a, b without arrays in them (hyper-parameters, sizes: finite); else None."""
        def split(branch):
            factors = sp.Mul.make_args(branch)
            return (sp.Mul(*(f for f in factors if self.holds_array(f))),
                    sp.Mul(*(f for f in factors if not self.holds_array(f))))
        (array, if_true), (array_other, if_false) = split(value), split(other)
        if array != array_other or array == 1 or not self.holds_array(cond) \
                or if_true.has(sp.Piecewise) or if_false.has(sp.Piecewise):
            return None
        return array, cond, if_true, if_false

    def holds_array(self, expr) -> bool:
        """Whether ``expr`` reads an array (a hole with at least one axis)."""
        return any(self.ranks.get(s.name, 0) > 0 for s in expr.free_symbols if isinstance(s, sp.Symbol))

    def _print_Mul(self, expr):
        if expr.has(Iverson):
            return self._print(sp.piecewise_fold(as_piecewise(expr)))
        arrays = [f for f in expr.args if f.free_symbols & self.arrays]
        scalars = [f for f in expr.args if not f.free_symbols & self.arrays]
        count = next((f.base for f in scalars if isinstance(f, sp.Pow) and f.exp == -1 and f.base in self.counts), None)
        if count is not None and not arrays:
            self.helpers.add("over_count")
            return f"_over_count({self._print(expr * count)}, {self._print(count)})"
        if count is not None and len(scalars) == 1:
            self.helpers.add("over_count")
            return f"{self.parenthesize(sp.Mul(*arrays), 50)}*_over_count(1, {self._print(count)})"
        if arrays and len(scalars) > 1 or arrays and scalars and any(
                isinstance(f, sp.Pow) and f.exp.is_negative for f in scalars):
            # Scalars first, multiplied together: one pass over the arrays instead of one per scalar.
            numerator, denominator = sp.fraction(sp.Mul(*scalars))
            arrays_text = self.parenthesize(sp.Mul(*arrays), 50)
            if numerator == 1:  # divide, not multiply by a reciprocal: the same bits as x/(1 - p)
                return f"{arrays_text}/{self.parenthesize(denominator, 50)}"
            factor = self._print(sp.Mul(*scalars))
            return f"{arrays_text}*{factor if _atomic(factor) else f'({factor})'}"
        return super()._print_Mul(expr)

    def _print_Pow(self, expr, rational=False):
        if expr.exp == -1:
            return f"1/{self.parenthesize(expr.base, 60)}"
        base = self._print(expr.base)
        if expr.exp in (3, 4) and base.isidentifier():
            # x*x*x: NumPy squares fast but calls pow for any other power, 50 times slower (the tanh GELU's x^3)
            return "*".join([base] * int(expr.exp))
        if expr.exp.is_Rational and not expr.exp.is_integer and expr.base.free_symbols \
                and all(s.is_integer for s in expr.base.free_symbols):
            # a root of sizes (attention's sqrt(D)) as a Python float: np.sqrt(D) is a float64 scalar,
            # and a float32 array divided by it would become float64
            return f"{self.parenthesize(expr.base, 60)}**{float(expr.exp)!r}"
        return super()._print_Pow(expr, rational)

    def _print_floor(self, expr):
        num, den = sp.fraction(expr.args[0])
        if den != 1:  # sizes are integers: floor division keeps them integers
            return f"({self._print(num)})//{self.parenthesize(den, 50)}"
        return f"int(np.floor({self._print(expr.args[0])}))"

    # The known functions (derive.define.functions), each in a form that never overflows.

    def _print_Sigmoid(self, expr):
        self.helpers.add("sigmoid")
        return f"_sigmoid({self._print(expr.args[0])})"

    def _print_Softplus(self, expr):
        self.helpers.add("softplus")
        return f"_softplus({self._print(expr.args[0])})"

    def _print_Phi(self, expr):
        self.helpers.update({"normal_cdf", "erfc"})
        return f"_normal_cdf({self._print(expr.args[0])})"

    def _print_NormalPdf(self, expr):
        return f"np.exp(-{self.parenthesize(expr.args[0] ** 2, 50)}/2)*{float(1 / sp.sqrt(2 * sp.pi))!r}"

    def _print_erf(self, expr):
        self.helpers.update({"erf", "erfc"})
        return f"_erf({self._print(expr.args[0])})"

    def _print_Iverson(self, expr):
        return f"({self._print(expr.condition)})"

    def _print_And(self, expr):
        """One np.logical_and per pair, which broadcasts (``logical_and.reduce`` of a tuple stacks it first, and
        a window's row and column conditions differ in shape)."""
        return self._pairwise("np.logical_and", expr.args)

    def _print_Or(self, expr):
        return self._pairwise("np.logical_or", expr.args)

    def _print_Min(self, expr):
        return self._pairwise("np.minimum", expr.args)

    def _print_Max(self, expr):
        return self._pairwise("np.maximum", expr.args)

    def _pairwise(self, function, args):
        """``np.minimum(x, 0)``: NumPy's elementwise form, arrays first, numbers last."""
        first, *rest = sorted(args, key=lambda a: bool(a.is_number))
        return f"{function}({self._print(first)}, {self._pairwise(function, rest)})" if rest else self._print(first)

    def _print_Masked(self, expr):
        value, condition = expr.args
        return f"np.where({self._print(condition)}, {self._print(value)}, -np.inf)"

    def _print_Rational(self, expr):
        """A decimal constant as the user wrote it (0.044715), other fractions as divisions."""
        decimal = decimal_text(expr)
        return decimal if decimal is not None else super()._print_Rational(expr)

    def parenthesize(self, item, level, strict=False):
        if isinstance(item, sp.Rational) and item > 0 and decimal_text(item) is not None:
            return decimal_text(item)  # a decimal is an atom: 0.5*x, not (0.5)*x
        return super().parenthesize(item, level, strict)

    def _print_Symbol(self, expr):
        return expr.name

    def _print(self, expr, **kwargs):
        """An irrational constant (``sqrt(2/pi)``) as a Python float: NumPy's ``np.sqrt(2)`` is a float64
        scalar, and a float32 array times it would become float64."""
        if isinstance(expr, sp.Expr) and expr.is_number and not expr.is_Rational and expr.is_real:
            return repr(float(expr))
        return super()._print(expr, **kwargs)


def decimal_text(value: sp.Rational, shortest_denominator: int = 1) -> str | None:
    """``value`` as a finite decimal (``8943/200000`` is ``0.044715``), or None when it has none
    or its denominator is below ``shortest_denominator`` (LaTeX keeps 1/2 a fraction)."""
    q = int(value.q)
    if q < shortest_denominator or q == 1:
        return None
    for prime in (2, 5):
        while q % prime == 0:
            q //= prime
    return repr(float(value)) if q == 1 else None


#: The hole of an accumulation term's coefficient (computed on the small arrays, then broadcast).
COEFFICIENT = sp.Symbol("_coefficient")
#: Functions of one array that NumPy computes into the array it is given (``out=``).
IN_PLACE_CALLS = {sp.exp: "exp", sp.log: "log", sp.tanh: "tanh"}


class ArrayPrinter:
    """Turns IR nodes into NumPy code, assigning shared subtrees to temporaries."""

    def __init__(self, shape_kind: str, leaves: dict, statements=()):
        self.shape_kind = shape_kind  # "flat": one index stands for every axis; else one axis per index
        self.layouts = dict(leaves)  # variable name -> stored layout
        self.statements = set(statements)  # names the statements will assign: no temporary takes them
        self.lines: list[str] = []
        self.helpers: set[str] = set()
        self.temps: dict[Node, str] = {}
        self.target: tuple = ()  # the axes of the statement being printed
        self.shared: set[Node] = set()
        self.masks: dict[str, Mask] = {}  # statement name -> the first-maximum mask it was assigned
        #: integer input -> the hyper-parameter it may hold out of range (ignore_index): read as row 0 there
        self.outside: dict[str, str] = {}
        self.integers: set[str] = set()  # the integer inputs (labels, token ids)
        self.dtype = ""  # code for the op's float dtype, where arithmetic on integers alone must yield it
        self.float_dtype = ""  # code for the op's float dtype, for sums that read no float array (a window's cells)
        self.stacks: dict = {}  # the blocks of a Stack -> the array that holds them
        self.expr_printer = ExprPrinter(self.helpers)

    # -- statements ---------------------------------------------------------

    def plan(self, nodes):
        """Find subtrees that occur more than once in ``nodes``: they become temporaries."""
        counts = Counter()

        def visit(node):
            counts[canonical(node)] += 1
            if counts[canonical(node)] > 1:
                return
            for child in children(node):
                visit(child)

        for node in nodes:
            visit(node)
        self.shared |= {n for n, c in counts.items() if c > 1 and not isinstance(n, Leaf)
                        and not (isinstance(n, Elementwise) and not n.axes)}

    def assign(self, name: str, node: Node, axes: tuple, reusable=frozenset()):
        """``name = <node laid out as axes>``, accumulated in place where that saves passes.

        ``reusable`` names arrays nothing reads after this statement: one of
        them scaled or shifted in place becomes ``name`` without a new array.
        """
        axes = tuple(axes)
        self.target = axes
        if isinstance(node, Mask):
            self.masks[name] = node
        if self.reuse(name, node, axes, reusable):
            self.layouts[name] = axes
            return
        alone = self.one_hot(node, axes) if isinstance(node, Elementwise) and set(node.axes) == set(axes) \
            and self.float_dtype else None
        if alone is not None:  # [k = t_n] c_n alone: zero but for one entry per row
            sizes = (self.scalar(next(c.size for _, c in node.holes if isinstance(c, Arange))) if a == one_hot_axis(node)
                     else f"{self.code(alone[0], tuple(alone[0].axes), top=True)}.shape[0]" for a in axes)
            self.lines.append(f"{name} = np.zeros(({', '.join(sizes)}), dtype={self.float_dtype})")
            self.lines.append(self.add_one_hot(name, alone, one_hot_axis(node), axes, "="))
            self.layouts[name] = axes
            return
        call = self.call_in_place(node, axes) if isinstance(node, Elementwise) else None
        terms = self.accumulation(node, axes) if isinstance(node, Elementwise) and call is None else None
        factors = self.product(node, axes) if terms is None and call is None and isinstance(node, Elementwise) \
            else None
        if call is not None:
            function, argument = call
            self.lines.append(f"{name} = {self.code(argument, axes, top=True)}")
            self.lines.append(f"np.{function}({name}, out={name})")
        elif factors is not None:
            (_, first), *rest = factors
            self.lines.append(f"{name} = {self.code(first, axes, top=True)}")
            self.lines += [self.scale_in_place(name, factor, axes, divide) for divide, factor in rest]
        elif terms is None:
            self.lines.append(f"{name} = {self.code(node, axes, top=True)}")
        else:
            hot = [self.one_hot(term, axes, node.holes) if pos > 0 else None for pos, (_, term) in enumerate(terms)]
            self.share_coefficients([found[1] if found else dict(getattr(term, "holes", ())).get(COEFFICIENT)
                                     for found, (_, term) in zip(hot, terms)])
            for pos, ((sign, term), one_hot) in enumerate(zip(terms, hot)):
                if one_hot is not None:  # [k = t_n] c_n: one entry per row, not a full-size mask
                    self.lines.append(self.add_one_hot(name, one_hot, one_hot_axis(term), axes,
                                                       "-=" if sign < 0 else "+="))
                    continue
                scaled = self.stored_times_coefficient(term) if pos > 0 else None
                if scaled is not None:  # no full-size temporary for the product
                    self.helpers.add("add_product")
                    array, coefficient = (self.code(part, axes, top=True) for part in scaled)
                    self.lines.append(f"_add_product({name}, {array}, {'-' if sign < 0 else ''}{coefficient})")
                    continue
                code = self.code(term, axes, top=True)
                if pos == 0:
                    self.lines.append(f"{name} = {'-' if sign < 0 else ''}{code}")
                else:
                    self.lines.append(f"{name} {'-=' if sign < 0 else '+='} {code}")
        self.layouts[name] = axes

    def one_hot(self, term: Node, axes: tuple, known=()):
        """(the label, the coefficient) for a term ``[k = t_n] c_n`` of an accumulation into an array of
        two axes (n, k): added at entry (n, t_n) of each row alone. A coefficient read along k (a class's
        weight w_k) is read at k = t_n, as the delta says (w[t_n]), under the name ``known`` (the
        statement's holes) has for that value if any, so that a coefficient equal to another term's is
        seen to be one. Else None."""
        axis = one_hot_axis(term)
        if axis is None or len(axes) != 2:
            return None
        holes = dict(term.holes)
        delta = next(f for f in sp.Mul.make_args(term.expr) if isinstance(f, sp.KroneckerDelta))
        label = next(holes[a] for a in delta.args if not isinstance(holes[a], Arange))
        rest = term.expr / delta
        row = tuple(a for a in axes if a != axis)
        if tuple(label.axes) != row:
            return None
        used = tuple((k, at_label(c, axis, label)) for k, c in holes.items() if k in rest.free_symbols)
        if any(c is None for _, c in used):
            return None
        names = {canonical(c): k for k, c in known}
        renamed = {k: names.get(canonical(c), k) for k, c in used}
        used = tuple(dict((renamed[k], c) for k, c in used).items())
        return label, Elementwise(row if used else (), rest.xreplace(renamed), used)

    def add_one_hot(self, name: str, one_hot: tuple, axis, axes: tuple, operator: str) -> str:
        """``name[n, t_n] += c_n`` (or ``-=``, ``=``) for the (label, coefficient) of ``one_hot``."""
        label, coefficient = one_hot
        row = tuple(a for a in axes if a != axis)
        at = ", ".join(self.align(self.label(label), tuple(label.axes), row) if a == axis
                       else f"np.arange({name}.shape[{p}])" for p, a in enumerate(axes))
        return f"{name}[{at}] {operator} {self.code(coefficient, row, top=True)}"

    def share_coefficients(self, coefficients):
        """Compute once a coefficient (per row, per channel) that several terms of an accumulation share
        (a mean's scale, for the probabilities and the one-hot row alike)."""
        found = Counter(canonical(c) for c in coefficients if isinstance(c, Elementwise) and c.axes and c.holes)
        self.shared |= {c for c, count in found.items() if count > 1}

    def stored_times_coefficient(self, term: Node):
        """(array, coefficient) for a term ``array * coefficient`` of an accumulation whose array is
        a named one (an input, a cached or shared array) and whose coefficient is smaller (per
        channel, per row): added by ``_add_product`` a few rows at a time, never as a full-size
        temporary. Else None."""
        if not isinstance(term, Elementwise) or len(term.holes) != 2:
            return None
        (key, array), (coefficient_key, coefficient) = term.holes
        if coefficient_key != COEFFICIENT or term.expr != key * coefficient_key \
                or set(array.axes) != set(term.axes) or set(coefficient.axes) == set(term.axes):
            return None
        stored = isinstance(array, Leaf) or canonical(array) in self.shared
        return (array, coefficient) if stored else None

    def reuse(self, name: str, node: Node, axes: tuple, reusable) -> bool:
        """``old *= small; name = old`` for ``name = old * small`` with ``old`` dead (so too ``+``)."""
        if not isinstance(node, Elementwise) or not isinstance(node.expr, (sp.Mul, sp.Add)):
            return False
        holes = dict(node.holes)
        for key, child in holes.items():
            others = node.expr.func(*(a for a in node.expr.args if a != key))
            if (isinstance(child, Leaf) and child.name in reusable and tuple(child.axes) == axes
                    and self.layouts.get(child.name) == axes and key in node.expr.args
                    and not any(set(c.axes) == set(axes) for k, c in holes.items()
                                if k in others.free_symbols)):
                rest = holes[others] if others in holes else Elementwise(
                    tuple(a for a in axes if any(a in c.axes for k, c in holes.items() if k in others.free_symbols)),
                    others, tuple((k, c) for k, c in holes.items() if k in others.free_symbols))
                op = "*=" if isinstance(node.expr, sp.Mul) else "+="
                self.lines.append(f"{child.name} {op} {self.code(rest, axes, top=True)}")
                self.lines.append(f"{name} = {child.name}")
                return True
        return False

    def accumulation(self, node: Elementwise, axes: tuple):
        """``name = a*X + b*Y + c`` as ``name = X*a; name += Y*b; name += c``, or None.

        The expression is expanded into terms, each a product of full-size
        arrays times a coefficient of smaller arrays (per channel, per row);
        the coefficients are computed on the small arrays, and the big ones
        are touched once per term, in place. Used only when that takes no
        more full-size operations than the expression as written.
        """
        holes = dict(node.holes)
        big = {k for k, child in holes.items() if set(child.axes) == set(axes)}
        if not big or set(node.axes) != set(axes) or any(b.free_symbols & big for b in node.expr.atoms(Iverson)):
            return None  # (bracketed branches print as one np.where; a bracket per row is a coefficient)
        groups: dict = {}
        for term in sp.Add.make_args(sp.expand(node.expr)):
            part = sp.Mul(*(f for f in sp.Mul.make_args(term) if f.free_symbols & big))
            groups[part] = groups.get(part, 0) + term / part
        if len(groups) < 2 or _full_ops(sp.Add(*(p * c for p, c in groups.items())), big, expanded=True) \
                > _full_ops(node.expr, big):
            return None
        ordered = sorted(groups.items(), key=lambda pc: (pc[0] == 1, pc[1].could_extract_minus_sign(),
                                                          pc[1] == 1, sp.default_sort_key(pc[0])))
        if ordered[0][0] == 1 or ordered[0][1] == 1 and isinstance(holes.get(ordered[0][0]), (Leaf, Split, Block)):
            return None  # the first term must make a new array, never alias an input (nor a view of one)
        out = []
        for part, coeff in ordered:
            sign = -1 if coeff.could_extract_minus_sign() else 1
            coeff = sp.factor_terms(sign * coeff)
            out.append((sign, self._term(node, part, coeff, holes)))
        return out

    def call_in_place(self, node: Elementwise, axes: tuple):
        """``name = np.exp(x - m)`` as ``name = x - m; np.exp(name, out=name)``: the new array the
        argument makes also holds the result. Returns (the NumPy function, the argument) or None."""
        function = IN_PLACE_CALLS.get(type(node.expr))
        if function is None or set(node.axes) != set(axes):
            return None
        (argument,) = node.expr.args
        holes = dict(node.holes)
        if argument.is_Symbol or argument.has(Iverson, sp.Piecewise) \
                or not any(set(holes[k].axes) == set(axes) for k in argument.free_symbols if k in holes):
            return None  # a named array (read, not overwritten), a mask, or smaller than the result
        return function, self._term(node, argument, sp.S.One, holes)

    def product(self, node: Elementwise, axes: tuple):
        """``name = (1 - y)*y*dout*k`` as ``name = 1 - y; name *= y; name *= dout; name *= k``: one new
        array where NumPy would make one per full-size factor that is arithmetic, each factor read
        once, the small ones (``k``: per channel, per row, numbers) multiplied together first.

        Returns [(divide, factor node), ...], the first factor making the new array (arithmetic,
        never an input to scale in place), or None where that saves nothing. A full-size input
        times small arrays is one line, ``dout*(gamma*rstd)[:, None]``: one pass, not one per array.
        """
        if not isinstance(node.expr, sp.Mul) or set(node.axes) != set(axes) or node.expr.has(Iverson, sp.Piecewise):
            return None
        holes = dict(node.holes)
        big = {k for k, child in holes.items() if set(child.axes) == set(axes)}
        full = [f for f in node.expr.args if f.free_symbols & big]
        small = sp.Mul(*(f for f in node.expr.args if not f.free_symbols & big))
        if not full:
            return None
        fresh = [f for f in full if not f.is_Symbol and not (f.is_Pow and f.exp == -1)
                 or f.is_Symbol and self.fresh_array(holes[f])]
        if not fresh:  # inputs only: one expression, with the small factors multiplied first
            if len(full) != 1 or not small.free_symbols & set(holes):
                return None
            return [(False, self._term(node, full[0], small, holes))]
        if len(full) == 1 and small == 1:
            return None
        first = fresh[0]
        out = [(False, self._term(node, first, sp.S.One, holes))]
        for f in full:
            if f is not first:
                divide = f.is_Pow and f.exp == -1
                out.append((divide, self._term(node, f.base if divide else f, sp.S.One, holes)))
        if small != 1:
            out.append((False, self._term(node, sp.S.One, small, holes)))
        return out

    def scale_in_place(self, name: str, factor: Node, axes: tuple, divide: bool = False) -> str:
        """``name *= factor`` (``/=`` with ``divide``), or ``name /= d`` when the factor is a plain scalar ``1/d``."""
        if divide:
            return f"{name} /= {self.code(factor, axes, top=True)}"
        if isinstance(factor, Elementwise) and not factor.holes:
            numerator, denominator = sp.fraction(factor.expr)
            if numerator == 1 and denominator != 1:
                return f"{name} /= {self.scalar(denominator)}"
        return f"{name} *= {self.code(factor, axes, top=True)}"

    def fresh_array(self, node: Node) -> bool:
        """Whether ``node`` is a new image-size array (col2im's canvas), free to scale in place."""
        return isinstance(node, Scatter) and canonical(node) not in self.shared

    @staticmethod
    def _term(node: Elementwise, part, coeff, holes) -> Node:
        """``part * coeff``: the coefficient is its own node, computed on the small arrays."""
        def sub(expr, axes):
            used = tuple((k, c) for k, c in holes.items() if k in expr.free_symbols)
            if not used:
                return Elementwise((), expr, ())
            if len(used) == 1 and expr == used[0][0]:
                return used[0][1]
            have = set().union(*(set(c.axes) for _, c in used))
            return Elementwise(tuple(a for a in axes if a in have), expr, used)

        if part == 1:
            return sub(coeff, node.axes)
        small = sub(coeff, node.axes)
        if coeff == 1 or set(small.axes) == set(node.axes):  # a full-size coefficient saves nothing
            return sub(part * coeff, node.axes)
        k = COEFFICIENT
        return Elementwise(node.axes, part * k, tuple((h, c) for h, c in holes.items() if h in part.free_symbols)
                           + ((k, small),))

    # -- expressions ----------------------------------------------------------

    def code(self, node: Node, layout: tuple, top: bool = False) -> str:
        """Code for ``node``, broadcastable into ``layout``; parenthesised unless ``top``."""
        if isinstance(node, Stack):  # stored by code_direct, under whichever name its axis has
            return self.code_direct(node, layout, top)
        key = canonical(node)
        if key in self.temps:
            return self.align(self.temps[key], self.layouts[self.temps[key]], layout)
        if key in self.shared:
            name = self.fresh(node)
            stored = self.natural_layout(node, layout)
            self.lines.append(f"{name} = {self.code_direct(node, stored, top=True)}")
            self.layouts[name] = stored
            self.temps[key] = name
            return self.align(name, stored, layout)
        return self.code_direct(node, layout, top)

    def natural_layout(self, node: Node, layout: tuple) -> tuple:
        """Store a shared reduction with kept dimensions when that lines it up with its use."""
        if isinstance(node, Reduce):
            keep = self.keepdims_layout(node, layout)
            if keep is not None:
                return keep
        return tuple(node.axes)

    def code_direct(self, node: Node, layout: tuple, top: bool) -> str:
        if isinstance(node, Leaf):
            return self.align(node.name, self.layouts[node.name], layout, node.axes)
        if isinstance(node, Window):
            self.helpers.add("windows")
            dilation = f", {self.pair(node.dilation)}" if any(d != 1 for d in node.dilation) else ""
            return self.align(f"_windows({node.name}, {self.pair(node.kernel)}, {self.pair(node.stride)}{dilation})",
                              node.axes, layout)
        if isinstance(node, Mask):
            self.helpers.add("first_max")
            return self.align(f"_first_max_mask({self.code(node.window, tuple(node.window.axes), top=True)}"
                              f"{self.candidates(node)})", node.axes, layout)
        if isinstance(node, Pad):
            widths = ", ".join(f"({self.scalar(b)}, {self.scalar(a)})" for b, a in zip(node.before, node.after))
            self.helpers.add("pad")
            return self.align(f"_pad({node.name}, ({widths}))", node.axes, layout)
        if isinstance(node, Crop):
            spans = ", ".join(":" if size is None else f"{self.scalar(start) if start != 0 else ''}:{self.scalar(start + size)}"
                              for start, size in zip(node.start, node.size))
            return self.align(f"{node.name}[{spans}]", node.axes, layout)
        if isinstance(node, Scatter):
            self.helpers.add("col2im")
            factors = self.scatter_factors(node)
            arg = self.code(factors[0], tuple(node.layout), top=True)
            weights = f", {self.code(factors[1], tuple(node.layout), top=True)}" if len(factors) > 1 else ""
            dilation = f", dilation={self.pair(node.dilation)}" if any(d != 1 for d in node.dilation) else ""
            text = f"_col2im({arg}, {self.pair(node.kernel)}, {self.pair(node.image)}, {self.pair(node.stride)}, " \
                   f"{self.pair(node.offset)}{weights}{dilation})"
            return self.align(text, node.axes, layout)
        if isinstance(node, Split):
            shape = ", ".join(self.scalar(k) for k in node.sizes)
            return self.align(f"{node.name}.reshape({shape})", node.axes, layout)
        if isinstance(node, Merge):
            arg = self.code(node.arg, tuple(node.arg.axes), top=True)
            if len(node.sizes) > len(node.arg.axes):  # constant within each group
                text = f"np.repeat({arg}, {self.scalar(node.sizes[-1])}, axis={node.position})"
                return self.align(text, node.axes, layout)
            sizes = list(node.sizes)
            sizes[node.position:node.position + 2] = [sp.Mul(*sizes[node.position:node.position + 2])]
            shape = ", ".join(self.scalar(k) for k in sizes)
            return self.align(f"{arg if _atomic(arg) else f'({arg})'}.reshape({shape})", node.axes, layout)
        if isinstance(node, Block):
            arg = self.code(node.arg, tuple(node.arg.axes), top=True)
            rows = f"{self.scalar(node.start) if node.start != 0 else ''}:{self.scalar(node.start + node.size)}"
            text = f"{arg if _atomic(arg) else f'({arg})'}[{', '.join([':'] * node.position + [rows])}]"
            return self.align(text, node.axes, layout)
        if isinstance(node, Stack):  # stored once, whatever the stacked axis is called where it is read
            stacked = node.blocks[0].axes[node.position]
            key = (tuple((b.name, tuple(None if a == stacked else a for a in b.axes)) if isinstance(b, Leaf)
                         else canonical(b) for b in node.blocks), node.position)
            if key not in self.stacks:
                blocks = ", ".join(self.code(b, tuple(b.axes), top=True) for b in node.blocks)
                self.stacks[key] = self.fresh(node)
                self.lines.append(f"{self.stacks[key]} = np.concatenate(({blocks}), axis={node.position})")
                self.layouts[self.stacks[key]] = tuple(node.axes)
            name = self.stacks[key]
            return self.align(name, self.layouts[name], layout, node.axes)
        if isinstance(node, Arange):
            return self.align(f"np.arange({self.scalar(node.size)})", node.axes, layout)
        if isinstance(node, Gather) and node.along:  # one value per row: z[n, t[n]]
            rows = tuple(node.axes[:node.position]) + (None,) + tuple(node.axes[node.position:])
            index = self.align(self.label(node.index), tuple(node.index.axes), rows)
            picked = ", ".join("0" if p == node.position else ":" for p in range(len(rows)))
            text = f"np.take_along_axis({node.name}, {index}, axis={node.position})[{picked}]"
            return self.align(text, node.axes, layout)
        if isinstance(node, Gather):
            index = self.label(node.index)
            text = f"{node.name}[{index}]" if node.position == 0 else \
                f"np.take({node.name}, {index}, axis={node.position})"
            return self.align(text, node.axes, layout)
        if isinstance(node, IndexAdd):
            self.helpers.add("index_add")
            index = self.code(node.index, tuple(node.index.axes), top=True)
            values = self.code(node.values, tuple(node.index.axes) + tuple(node.axes[1:]), top=True)
            return self.align(f"_index_add({index}, {values}, {self.scalar(node.size)})", node.axes, layout)
        if isinstance(node, Elementwise):
            return self.elementwise(node, layout, top)
        if isinstance(node, Reduce):
            return self.reduce(node, layout)
        if isinstance(node, Contract):
            return self.contract(node, layout, top)
        raise TypeError(node)

    def label(self, index: Node) -> str:
        """An integer index as a gather reads it: where it holds its out-of-range value (ignore_index),
        row 0, which the definition's bracket then drops."""
        code = self.code(index, tuple(index.axes), top=True)
        if isinstance(index, Leaf) and index.name in self.outside:
            return f"np.where({code} == {self.outside[index.name]}, 0, {code})"
        return code

    def scatter_factors(self, node: Scatter) -> tuple:
        """The windows scattered back, as (arg,) or, for a product of two arrays, (arg, weights):
        col2im multiplies them offset by offset instead of making the full-size product first."""
        arg = node.arg
        if not isinstance(arg, Elementwise) or canonical(arg) in self.shared or len(arg.holes) != 2 \
                or arg.expr != sp.Mul(*(k for k, _ in arg.holes)):
            return (arg,)
        (_, a), (_, b) = arg.holes
        if set(b.axes) != set(node.layout):
            a, b = b, a
        return (a, b) if set(b.axes) == set(node.layout) else (arg,)

    def elementwise(self, node: Elementwise, layout: tuple, top: bool) -> str:
        # Arithmetic on smaller arrays is done at their size, then broadcast once.
        axes = layout if set(node.axes) == set(layout) - {None} else tuple(node.axes)
        subs = {}
        terms = node.expr.args if isinstance(node.expr, sp.Add) else ()
        for key, child in node.holes:
            subs[key] = sp.Symbol(self.code(child, axes, top=key in terms))
            self.expr_printer.ranks[subs[key].name] = len(child.axes)
        # Only a statement's own full-size arrays gain from multiplying the scalars together first.
        full = tuple(node.axes) == tuple(self.target)
        self.expr_printer.arrays = {v for k, v in subs.items() if dict(node.holes)[k].axes} if full else set()
        self.expr_printer.counts = {subs[k] for k, child in node.holes if _counts_kept(child)}
        text = self.expr_printer.doprint(node.expr.xreplace(subs))
        if self.dtype and node.holes and all(isinstance(c, Arange) or isinstance(c, Leaf) and c.name in self.integers
                                             for _, c in node.holes):
            # brackets and one-hot rows of labels alone are booleans (their sums integers): as floats of the
            # op's dtype, never float64 beside a float32 input
            text = f"({text}).astype({self.dtype})"
        if axes and axes != layout:
            text = self.align(f"({text})", axes, layout)
        return text if top or _atomic(text) else f"({text})"

    def reduce(self, node: Reduce, layout: tuple) -> str:
        keep = self.keepdims_layout(node, layout)
        child_axes = self.child_axes(node)
        inner = self.code(node.arg, child_axes)
        inner = inner if _atomic(inner) else f"({inner})"
        reduced = [a for a in child_axes if a not in node.axes]
        method = node.kind
        if isinstance(node.arg, Window) and method == "sum" and reduced == list(child_axes[-2:]):
            self.helpers.add("offset_sum")
            return self.align(f"_offset_sum({inner})", tuple(node.axes), layout)
        if self.shape_kind == "flat":
            return self.align(f"{inner}.{method}()", (), layout)
        if not node.axes and self.shape_kind == "fixed":
            return self.align(f"{inner}.{method}()", (), layout)
        axis = self.axis_numbers(child_axes, reduced)
        if method == "sum" and self.float_dtype and _reads_no_floats(node.arg, self.integers):
            axis += f", dtype={self.float_dtype}"  # counted brackets: in the op's dtype, never int64 beside float32
        if keep is not None:
            return f"{inner}.{method}(axis={axis}, keepdims=True)"
        return self.align(f"{inner}.{method}(axis={axis})", tuple(node.axes), layout)

    def scalar(self, expr) -> str:
        return self.expr_printer.doprint(sp.sympify(expr))

    def pair(self, values) -> str:
        """A tuple of scalars, one per image axis: ``(KH, KW)``."""
        return "(" + ", ".join(self.scalar(v) for v in values) + ("," if len(values) == 1 else "") + ")"

    @staticmethod
    def child_axes(node: Reduce) -> tuple:
        return tuple(node.arg.axes)

    def keepdims_layout(self, node: Reduce, layout: tuple):
        """The layout of ``node`` reduced with ``keepdims``, if it lines up with ``layout``."""
        if self.shape_kind == "flat":
            return None
        child = self.child_axes(node)
        kept = tuple(a if a in node.axes else None for a in child)
        return kept if None in kept and _fits(kept, layout) else None

    @staticmethod
    def axis_numbers(axes: tuple, chosen) -> str:
        nums = [axes.index(a) for a in chosen]
        return str(nums[0]) if len(nums) == 1 else str(tuple(nums))

    def contract(self, node: Contract, layout: tuple, top: bool) -> str:
        out = tuple(node.axes)
        args = list(node.args)
        if self.shape_kind == "flat":  # one index for every axis: a full dot product
            if len(args) == 2 and not out:
                a, b = (self.code(x, tuple(x.axes), top=True) for x in args)
                return self.align(f"np.vdot({a}, {b})", (), layout)
            product = " * ".join(self.code(x, tuple(x.axes)) for x in args)
            return self.align(f"({product}).sum()" if not out else f"({product})", out, layout)
        if len(args) == 2:
            found = self.matmul(args, out)
            if found is not None:
                text, have = found
                return self.align(text if top and tuple(layout) == have else f"({text})", have, layout)
            text = self.hadamard(args, out)
            if text is not None:
                return self.align(text if top and tuple(layout) == out else f"({text})", out, layout)
        window = next((a for a in args if isinstance(a, Window)), None)
        if len(args) == 2 and window is not None and args[0].axes == args[1].axes \
                and list(out) == list(window.axes[:-2]):
            weights = args[1] if window is args[0] else args[0]
            mask = self.first_max_of(weights, window)
            if mask is not None:
                # The windows summed against their first-maximum mask: their maximum (NaN too).
                self.helpers.add("offset_max")
                return self.align(f"_offset_max({self.code(window, tuple(window.axes), top=True)}"
                                  f"{self.candidates(mask)})", out, layout)
            self.helpers.add("offset_sum")
            text = f"_offset_sum({self.code(window, tuple(window.axes), top=True)}, " \
                   f"{self.code(weights, tuple(window.axes), top=True)})"
            return self.align(text, out, layout)
        if len(args) == 2 and (len(out) > 2 or any(len(a.axes) > 2 for a in args)):
            text = self.tensordot(args, out)
            if text is not None:
                return self.align(text, out, layout)
        letters = self.letters([out] + [a.axes for a in args])
        spec = ",".join("".join(letters[i] for i in a.axes) for a in args) + "->" + "".join(letters[i] for i in out)
        operands = ", ".join(self.code(a, tuple(a.axes), top=True) for a in args)
        # No optimize=True: its path search copies the arrays into BLAS calls that a sum of products
        # (batch norm's sum of dout * xhat) does not need; matrix products go through @ and tensordot.
        text = f"np.einsum('{spec}', {operands})"
        return self.align(text, out, layout)

    def first_max_of(self, weights: Node, window: Window) -> Mask | None:
        """The first-maximum mask of these very windows, if ``weights`` is an array assigned one."""
        mask = self.masks.get(weights.name) if isinstance(weights, Leaf) else None
        same = mask is not None and isinstance(mask.window, Window) and \
            dataclasses.replace(mask.window, axes=()) == dataclasses.replace(window, axes=())
        return mask if same else None

    def candidates(self, mask: Mask) -> str:
        """The mask's candidates as the helpers' second argument (laid out like its windows), or nothing;
        None (every cell) at the hyper-parameter values that make them all true, not computed there."""
        if not mask.candidates:
            return ""
        code = self.code(mask.candidates, tuple(mask.window.axes), top=True)
        if not mask.all_candidates_at:
            return f", {code}"
        test = " and ".join(f"{self.scalar(s)} == {self.scalar(v)}" for s, v in mask.all_candidates_at)
        return f", None if {test} else {code}"

    def tensordot(self, args, out) -> str | None:
        """A two-array contraction as one BLAS call (einsum's path search picks worse for windows).

        tensordot copies ``a`` as (kept, summed) and ``b`` as (summed, kept);
        a window view is copied fastest with its kernel offsets ahead of the
        window positions, so it goes where that holds.
        """
        a, b = args
        window = next((x for x in args if isinstance(x, Window)), None)
        if window is not None:
            other = b if window is a else a
            offsets_summed = all(k in other.axes for k in window.axes[-len(window.kernel):])
            a, b = (other, window) if offsets_summed else (window, other)
        batch = [x for x in out if x in a.axes and x in b.axes]  # a grouped conv's groups: one product each
        shared = [x for x in a.axes if x in b.axes and x not in batch]
        if len(set(a.axes)) != len(a.axes) or len(set(b.axes)) != len(b.axes):
            return None
        left = [x for x in a.axes if x not in shared and x not in batch]
        right = [x for x in b.axes if x not in shared and x not in batch]
        if set(batch + left + right) != set(out) or batch and not (left and right):
            return None
        axes = (tuple(a.axes.index(x) for x in shared), tuple(b.axes.index(x) for x in shared))
        operands = f"{self.code(a, tuple(a.axes), top=True)}, {self.code(b, tuple(b.axes), top=True)}"
        have = batch + left + right
        if batch:
            self.helpers.add("batch_tensordot")
            # b's axes the output wants ahead of the batch (a conv's images): a broadcast over them, no reorder
            outer = next((k for k in range(len(right), 0, -1) if right[:k] + batch + left + right[k:] == list(out)), 0)
            have = right[:outer] + batch + left + right[outer:]
            text = f"_batch_tensordot({operands}, ({_tuple(axes[0])}, {_tuple(axes[1])}), " \
                   f"({_tuple(tuple(a.axes.index(x) for x in batch))}, {_tuple(tuple(b.axes.index(x) for x in batch))})" \
                   f"{f', outer={outer}' if outer else ''})"
        else:
            text = f"np.tensordot({operands}, axes=({_tuple(axes[0])}, {_tuple(axes[1])}))"
        if have != list(out):
            text += f".transpose{tuple(have.index(x) for x in out)}"
        return text

    def matmul(self, args, out):
        """``A @ B`` (with transposes where needed) when the contraction is a matrix product, batched over
        the axes both share and keep (attention's ``(n, l, s) @ (n, s, d)``): (text, its axes), or None."""
        a_axes, b_axes = set(args[0].axes), set(args[1].axes)
        batch = [x for x in out if x in a_axes & b_axes]
        summed = (a_axes & b_axes) - set(out)
        left = next((a for a in args if len(set(a.axes) - summed - set(batch)) == 1
                     and (set(a.axes) - summed - set(batch)) <= set(out)), None)
        right = next((a for a in args if a is not left and len(set(a.axes) - summed - set(batch)) == 1), None)
        if left is None or right is None or len(summed) != 1 or len(left.axes) != len(batch) + 2 \
                or len(right.axes) != len(batch) + 2 or set(out) != (set(left.axes) | set(right.axes)) - summed:
            return None
        (s,) = summed
        (i,) = set(left.axes) - summed - set(batch)
        (j,) = set(right.axes) - summed - set(batch)
        if (i, j) != tuple(x for x in out if x in (i, j)):  # keep the product in the output's order
            left, right, i, j = right, left, j, i
        a = self.code(left, (*batch, i, s))
        b = self.code(right, (*batch, s, j))
        return f"{a} @ {b}", (*batch, i, j)

    def hadamard(self, args, out) -> str | None:
        """Two arrays multiplied with nothing summed: a broadcast product, no einsum."""
        if set(args[0].axes) | set(args[1].axes) != set(out):
            return None
        a, b = (self.code(x, out) for x in args)
        return f"{a}*{b}"

    def letters(self, axes_lists) -> dict:
        seen = []
        for axes in axes_lists:
            for a in axes:
                if a not in seen:
                    seen.append(a)
        out, used = {}, set()
        for a in seen:
            letter = a.name[0] if a.name[0].isalpha() and a.name[0] not in used else \
                next(c for c in "abcdefghijklmnopqrstuvwxyz" if c not in used)
            used.add(letter)
            out[a] = letter
        return out

    def fresh(self, node: Node) -> str:
        stem = {"Reduce": "s", "Contract": "c", "Elementwise": "u", "Window": "windows", "Pad": "padded", "Crop": "cropped",
                "Scatter": "image", "Mask": "mask", "Gather": "rows", "IndexAdd": "added",
                "Arange": "positions", "Split": "grouped", "Merge": "merged",
                "Block": "block", "Stack": "stacked"}[type(node).__name__]
        if isinstance(node, Reduce) and node.kind == "max":
            stem = "m"
        name, n = stem, 1
        while name in self.layouts or name in self.statements:
            n += 1
            name = f"{stem}{n}"
        return name

    # -- layout --------------------------------------------------------------

    def align(self, text: str, have: tuple, want: tuple, axes: tuple | None = None) -> str:
        """Index ``text`` (stored as ``have``) so that it broadcasts into ``want``.

        ``axes`` renames the stored axes, for a leaf read with other indices.
        """
        have = tuple(axes) if axes is not None and len(axes) == len(have) else tuple(have)
        want = tuple(want)
        if self.shape_kind == "flat" or _fits(have, want):
            return text
        if None in have:  # drop kept dimensions first
            text = f"{text}[{', '.join('0' if a is None else ':' for a in have)}]"
            have = tuple(a for a in have if a is not None)
            if _fits(have, want):
                return text
        order = sorted(have, key=want.index)
        if list(order) != list(have):
            perm = tuple(have.index(a) for a in order)
            if len(have) == 2:
                text = f"{text}.T"
            else:
                text = f"{text}.transpose{perm}"
            have = tuple(order)
            if _fits(have, want):
                return text
        start = want.index(have[0])
        slots = []
        for a in want[start:]:
            if a in have:
                slots.append(":")
            else:
                slots.append("None")
        return f"{text}[{', '.join(slots)}]"


def at_label(node: Node, axis, label: Node) -> Node | None:
    """``node`` read at ``axis = label`` (a class's weight w_k at k = t_n: ``w[t_n]``): itself if it does
    not run along the axis, a gather for an input that does, else None."""
    if axis not in node.axes:
        return node
    if not isinstance(node, Leaf):
        return None
    position = node.axes.index(axis)
    return gather(node.name, tuple(a for a in node.axes if a != axis), position, label)


def one_hot_axis(term: Node):
    """The axis k of a term ``[k = t_n] c`` (a label's one-hot row times what does not run along k), else None."""
    if not isinstance(term, Elementwise):
        return None
    holes = dict(term.holes)
    deltas = [f for f in sp.Mul.make_args(term.expr) if isinstance(f, sp.KroneckerDelta)]
    if len(deltas) != 1 or not all(a in holes for a in deltas[0].args):
        return None
    kinds = sorted(deltas[0].args, key=lambda a: not isinstance(holes[a], Arange))
    arange, label = holes[kinds[0]], holes[kinds[1]]
    if not isinstance(arange, Arange) or not isinstance(label, Leaf) or arange.axes[0] in label.axes:
        return None
    return arange.axes[0]


def _full_ops(expr: sp.Expr, big: set, expanded: bool = False) -> int:
    """How many operations of ``expr`` produce a full-size array (holes in ``big`` are full size).

    In an expanded sum each term's small factors are multiplied first
    (``X * (a*b)``), so a term costs one product per full-size factor.
    """
    if not expr.free_symbols & big:
        return 0
    if isinstance(expr, sp.Add):
        return sum(_full_ops(t, big, expanded) for t in expr.args) + len(expr.args) - 1
    if isinstance(expr, sp.Mul):
        full = [f for f in expr.args if f.free_symbols & big]
        small = [f for f in expr.args if not f.free_symbols & big and f != -1]
        scaled = 1 if small else 0  # the printer multiplies the small factors together first
        return sum(_full_ops(f, big, expanded) for f in full) + len(full) - 1 + scaled
    if expr in big:
        return 0
    return 1 + sum(_full_ops(a, big, expanded) for a in expr.args)


def _tuple(values) -> str:
    return f"({values[0]},)" if len(values) == 1 else str(tuple(values))


def _fits(have: tuple, want: tuple) -> bool:
    """Does an array laid out as ``have`` broadcast into ``want`` as it is?"""
    if len(have) > len(want):
        return False
    tail = want[len(want) - len(have):]
    present = {a for a in have if a is not None}
    for h, w in zip(have, tail):
        if h is None:
            if w in present:
                return False
        elif h != w:
            return False
    # Axes of ``want`` left of the tail must not be ones we hold.
    return not (set(want[: len(want) - len(have)]) & present)


def _counts_kept(node: Node) -> bool:
    """Whether ``node`` is a total over what brackets keep (a mean's divisor over the samples not
    ignored): 0 where they keep nothing."""
    return not node.axes and isinstance(node, (Contract, Reduce)) and any(
        isinstance(n, Elementwise) and n.expr.has(Iverson) for n in subtrees(node))


def _reads_no_floats(node: Node, integers: set) -> bool:
    """Whether ``node`` is computed from positions and integer inputs alone (its sums are integers)."""
    if isinstance(node, Arange):
        return True
    if isinstance(node, Leaf):
        return node.name in integers
    if isinstance(node, Elementwise):
        return bool(node.holes) and all(_reads_no_floats(c, integers) for _, c in node.holes)
    if isinstance(node, Reduce):
        return _reads_no_floats(node.arg, integers)
    return False


def _atomic(text: str) -> bool:
    """True when ``text`` needs no parentheses as an operand."""
    depth = 0
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and ch in " +-*/@":
            return False
    return True
