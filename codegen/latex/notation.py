"""LaTeX in the article's style: ``w_{kj}``, ``\\partial``, ``\\sum_k``, readable sign order.

Two printers share one notation table: ``ArticleLatex`` prints index form
from SymPy expressions; ``matrix_form`` prints the vector IR (the same IR
the NumPy code is printed from) as matrix algebra, or ``None`` where no
plain matrix form exists.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import sympy as sp
from sympy.printing.latex import LatexPrinter

from derive.define.symbols import Iverson, as_piecewise, index_symbols, rename_bound

from codegen.ir import Block, Contract, Elementwise, Leaf, Node, Reduce, Stack
from codegen.module.printer import decimal_text

#: How multi-letter names print.
SPECIAL = {
    "net": "net", "xhat": r"\hat{x}", "xc": r"\tilde{x}", "mu": r"\mu", "var": r"\sigma^{2}", "rstd": r"\rho",
    "alpha": r"\alpha", "eps": r"\epsilon", "gamma": r"\gamma", "beta": r"\beta", "eta": r"\eta",
    "stride": "s", "padding": "P", "kernel": "K", "xp": r"\bar{x}", "hn": "h'", "ht": r"\tilde{h}",
    "cn": "c'", "ct": r"\tilde{c}", "cells": r"\kappa",
    "IH": "H", "IW": "W", "KH": "K_H", "KW": "K_W",
    # a hyper-parameter per image axis (``pair()``): the letter with the axis's size as subscript
    **{f"{name}_{axis}": f"{letter}_{axis.upper()}" for name, letter in
       (("stride", "s"), ("padding", "P"), ("dilation", "d"), ("kernel", "K")) for axis in "hw"},
    "ignore_index": r"\text{ignore}", "label_smoothing": r"\tilde{\epsilon}", "ly": r"\log y",
}

WORDS = {
    "en": {
        "forward": "Forward pass", "backward": "Backward pass", "where": "where",
        "otherwise": "otherwise", "upstream": "the gradient arriving at the output",
        "upstreams": "the gradients arriving at the outputs",
        "layout": "Matrix form: rows index the batch; a gradient has its parameter's shape.",
        "vector layout": "Vector form, for one row (layer norm) or one channel (batch norm): a vector holds "
                         "its values, a scalar is that row's or channel's own.",
        "steps": "Derivation", "gradient": "Gradient with respect to",
        "input layer": "input layer", "hidden layer": "hidden layer", "output layer": "output layer",
        "true": "true", "sample": "sample", "train": "train", "infer": "infer",
        "error term": "error term", "learning rate": "learning rate", "update": "Update",
        "no matrix form": "no plain matrix form; the index form above is the definition",
        "through only": "Written out in full, these gradients would run to hundreds of terms; each is derived "
                        "through the gradients of the intermediates, as follows.",
        "coupled": "The {ops} layer couples the samples of a batch (its mean and variance are over the batch), so "
                   "the batch index n stays: one sample alone would be normalised to 0.",
    },
    "zh": {
        "forward": "前向传播", "backward": "后向传播", "where": "其中",
        "otherwise": "其他", "upstream": "输出端传来的梯度", "upstreams": "各输出端传来的梯度",
        "layout": "矩阵形式：每行是一个样本；梯度与其参数形状相同。",
        "vector layout": "向量形式，针对一行（层归一化）或一个通道（批归一化）：向量为其各个值，标量为该行或该通道的量。",
        "steps": "推导", "gradient": "梯度",
        "input layer": "输入层", "hidden layer": "隐藏层", "output layer": "输出层",
        "true": "真实", "sample": "样本", "train": "训练", "infer": "推理",
        "error term": "误差项", "learning rate": "学习率", "update": "更新",
        "no matrix form": "没有简单的矩阵形式，以上面的下标形式为准",
        "through only": "这些梯度完全展开会有上百项；下面经由各中间量的梯度逐个推导。",
        "coupled": "{ops} 层把一个批次的样本联系在一起（均值和方差在整个批次上计算），所以保留批次下标 n："
                   "单个样本会被归一化为 0。",
    },
}


#: The objective as expressions write it (a plain symbol: a size called E has integer assumptions).
OBJECTIVE = sp.Symbol("E")


def words(lang: str) -> dict:
    if lang not in WORDS:
        raise ValueError(f"lang: expected one of {sorted(WORDS)}, got {lang!r}")
    return WORDS[lang]


def math_text(word: str) -> str:
    """A word inside maths (``W_{\\text{隐藏层}}``): upright, spaced, and set in the text font,
    which is the only way CJK renders in pdfLaTeX/XeLaTeX maths and in KaTeX's strict mode."""
    return rf"\text{{{word}}}"


def name_tex(name: str) -> str:
    """A label as the article writes it: Greek and hatted names, ``net`` upright, a number in a
    name as a layer tag (``W1`` and ``W_1`` are ``W^{(1)}``, so that its indices stay one subscript)."""
    if name in SPECIAL:
        return SPECIAL[name]
    numbered = re.fullmatch(r"([A-Za-z]+)_?(\d+)", name)
    if numbered:
        return f"{name_tex(numbered.group(1))}^{{({numbered.group(2)})}}"
    gate = re.fullmatch(r"([a-z])_([a-z]+)", name)
    if gate:  # a_r, a gate's pre-activation: a^{r}, so that its indices stay one subscript
        return f"{gate.group(1)}^{{{gate.group(2)}}}"
    if "_" in name:  # running_var: one name, not running with a subscript
        return r"\mathrm{" + name.replace("_", r"\_") + "}"
    return sp.latex(sp.Symbol(name))


@dataclass(frozen=True)
class Notation:
    """How tensors print: element names (``w`` for ``W``), matrix names, the upstream symbol."""

    elements: dict  # label -> TeX of one element's name
    matrices: dict  # label -> TeX of the whole array
    upstream: frozenset  # labels of upstream gradients, printed first in products
    indices: dict = field(default_factory=dict)  # index letter -> the letter printed (one a tensor also uses)
    objective: str = "E"  # what the objective is called (``L`` where the op uses the name E itself)
    timed: frozenset = frozenset()  # labels whose first index is a time step, printed apart: h_{t-1,nk}

    def element(self, label: str) -> str:
        return self.elements.get(label, name_tex(label))

    def matrix(self, label: str, rank: int) -> str:
        if label in self.matrices:
            return self.matrices[label]
        tex = self.element(label)
        if rank == 1:
            return rf"\vec{{{tex}}}"
        if len(label) == 1 and label.isalpha():
            return label.upper()
        barred = re.fullmatch(r"\\bar\{([a-z])\}(.*)", tex)
        if barred:  # the padded input x̄: X̄ (a bar under \mathbf has no glyph in XeLaTeX's fonts)
            return rf"\bar{{{barred.group(1).upper()}}}{barred.group(2)}"
        if re.fullmatch(r"[a-z]'+", tex):  # h': H'
            return tex.upper()
        if re.fullmatch(r"[a-z]\^\{[a-z]+\}", tex):  # a^{r}: A^{r}
            return tex[0].upper() + tex[1:]
        if tex.startswith("\\") and tex[1:].isalpha():
            return rf"\boldsymbol{{{tex}}}"
        return rf"\mathbf{{{tex}}}"


class ArticleLatex(LatexPrinter):
    """SymPy's LaTeX printer, with the article's conventions."""

    def __init__(self, notation: Notation, lang: str = "en"):
        super().__init__({"order": "none"})
        self.notation = notation
        self.lang = lang

    def _print_Symbol(self, expr, style="plain"):
        if expr == OBJECTIVE and self.notation.objective != "E":
            return self.notation.objective
        if expr.is_integer and expr.name.rstrip("'") in self.notation.indices:
            return self.notation.indices[expr.name.rstrip("'")] + expr.name[len(expr.name.rstrip("'")):]
        return name_tex(expr.name) if expr.name in SPECIAL else super()._print_Symbol(expr)

    def _print_Indexed(self, expr):
        base = self.notation.element(str(expr.base.label))
        step, indices = (expr.indices[0], expr.indices[1:]) if str(expr.base.label) in self.notation.timed \
            else (None, expr.indices)
        idx = [self._index(i) for i in indices]
        plain = all(len(i.replace("'", "")) == 1 for i in idx)
        sub = "".join(idx) if plain else ",".join(idx)
        return f"{base}_{{{sub}}}" if step is None else f"{base}_{{{self._index(step)},{sub}}}"

    def _index(self, index) -> str:
        """An index, its terms in one order on every axis: products with an index letter (``i s``),
        then the free letters (``h``), the summed ones (``p``), the rest (``P``); what is subtracted last.
        Terms over one denominator (a dilated offset) print as one fraction: ``\\frac{h + P - i s}{d}``."""
        if not isinstance(index, sp.Add):
            return self._print(index)
        over = {sp.fraction(term)[1] for term in index.args}
        if len(over) == 1 and not next(iter(over)).is_number:
            (over,) = over
            return rf"\frac{{{self._index(sp.expand(index * over))}}}{{{self._print(over)}}}"

        def key(term):
            negative = term.could_extract_minus_sign()
            body = -term if negative else term
            letter = isinstance(body, sp.Symbol) and body.is_integer and body.name.islower() and len(body.name) == 1
            product = isinstance(body, sp.Mul) and any(isinstance(f, sp.Symbol) and f.is_integer and f.name.islower()
                                                       and len(f.name) == 1 for f in body.args)
            summed = letter and body in getattr(self, "bound", set())
            return (negative, 0 if product else 2 if summed else 1 if letter else 3, self._print(body))

        tex = ""
        for term in sorted(sp.Add.make_args(index), key=key):
            if term.could_extract_minus_sign():
                tex += f" - {self._print(-term)}" if tex else f"- {self._print(-term)}"
            else:
                tex += f" + {self._print(term)}" if tex else self._print(term)
        return tex

    def _print_IndexedBase(self, expr):
        return self.notation.element(str(expr.label))

    def _print_Sum(self, expr):
        bound = {v for v, _, _ in expr.limits}
        self.bound = getattr(self, "bound", set()) | bound
        tex = self._print(expr.function)
        self.bound -= bound
        if isinstance(expr.function, sp.Add):
            tex = rf"\left({tex}\right)"
        for v, low, high in expr.limits:  # over its index's whole range 0..K-1: the letter; else the limits
            tex = rf"\sum_{{{self._print(v)}}} {tex}" if low == 0 else \
                rf"\sum_{{{self._print(v)} = {self._print(low)}}}^{{{self._print(high)}}} {tex}"
        return tex

    def _print_Rational(self, expr):
        decimal = decimal_text(expr, shortest_denominator=1000)  # 0.044715, but 1/2 stays a fraction
        return decimal if decimal is not None else super()._print_Rational(expr)

    def _print_KroneckerDelta(self, expr, exp=None):
        return rf"[{self._index(expr.args[0])} = {self._index(expr.args[1])}]"

    def _print_Iverson(self, expr):
        cond = expr.condition
        parts = cond.args if isinstance(cond, sp.And) else ()
        if len(parts) == 2:  # 0 <= e <= K - 1
            low = next((p for p in parts if isinstance(p, sp.GreaterThan) and p.rhs == 0), None)
            high = next((p for p in parts if isinstance(p, sp.LessThan)), None)
            if low is not None and high is not None and sp.expand(low.lhs - high.lhs) == 0:
                return rf"\left[0 \leq {self._index(low.lhs)} \leq {self._index(high.rhs)}\right]"
        if isinstance(cond, sp.Eq) and 0 in cond.args:  # [(h + P - i s) mod d = 0]: a dilated offset is whole
            (side,) = [a for a in cond.args if a != 0] or [0]
            mod = -side if isinstance(-side, sp.Mod) else side
            if isinstance(mod, sp.Mod):
                return rf"\left[\left({self._index(mod.args[0])}\right) \bmod {self._print(mod.args[1])} = 0\right]"
        return rf"\left[{self._print(cond)}\right]"

    def _ranges(self, cond, sep: str = ", ") -> str:
        r"""A conjunction of ranges as ``0 \leq e \leq K - 1, 0 \leq f \leq L - 1`` (SymPy flattens the pairs
        into one And); any other condition as SymPy prints it."""
        parts = list(cond.args) if isinstance(cond, sp.And) else [cond]
        lows = [p for p in parts if isinstance(p, sp.GreaterThan) and p.rhs == 0]
        highs = [p for p in parts if isinstance(p, sp.LessThan)]
        pairs = [(low, next((h for h in highs if sp.expand(h.lhs - low.lhs) == 0), None)) for low in lows]
        if len(lows) + len(highs) != len(parts) or any(h is None for _, h in pairs) or len(pairs) != len(highs):
            return self._print(cond)
        return sep.join(rf"0 \leq {self._index(low.lhs)} \leq {self._index(high.rhs)}" for low, high in pairs)

    def _print_Relational(self, expr):
        """An element on the left: ``|t - y| < \\delta``, not SymPy's ``\\delta > |t - y|``."""
        if expr.rel_op in ("<", "<=", ">", ">=") and not self._has_element(expr.lhs) and self._has_element(expr.rhs):
            expr = expr.reversed
        return super()._print_Relational(expr)

    def _has_element(self, expr) -> bool:
        return expr.has(sp.Indexed)

    def _print_Derivative(self, expr):
        (var, _), = expr.variable_count
        inner = expr.expr
        if isinstance(inner, (sp.Indexed, sp.Symbol)):
            return rf"\frac{{\partial {self._print(inner)}}}{{\partial {self._print(var)}}}"
        return rf"\frac{{\partial}}{{\partial {self._print(var)}}}\left({self._print(inner)}\right)"

    def _print_Piecewise(self, expr):
        rows = []
        for value, cond in expr.args:
            when = rf"\text{{{words(self.lang)['otherwise']}}}" if cond is sp.true else self._print(cond)
            rows.append(f"{self._print(value)} & {when}")
        return r"\begin{cases} " + r" \\ ".join(rows) + r" \end{cases}"

    def _print_FirstMax(self, expr):
        (u, v), (p, q) = expr.bound, expr.at
        offsets = f"({self._print(u)}, {self._print(v)})"
        if expr.candidates is not sp.true:  # the cells it may be, stacked under it: a line no wider than the window
            ranges = self._ranges(expr.candidates, sep=",\\\\ ")
            offsets = rf"\substack{{{offsets}:\\ {ranges}}}"
        return (rf"\left[({self._print(p)}, {self._print(q)}) = \operatorname*{{arg\,max}}_{{{offsets}}} "
                rf"{self._print(expr.window)}\right]")

    def _print_Maximum(self, expr):
        return rf"\max_{{{self._print(expr.bound)}}} {self._print(expr.body)}"

    def _print_log(self, expr, exp=None):
        arg = expr.args[0]
        tex = self._print(arg) if isinstance(arg, (sp.Symbol, sp.Indexed)) else rf"\left({self._print(arg)}\right)"
        return rf"\log {tex}" if exp is None else rf"\log^{{{exp}}} {tex}"

    def _print_tanh(self, expr, exp=None):
        head = r"\tanh" if exp is None else rf"\tanh^{{{exp}}}"
        return rf"{head}\left({self._print(expr.args[0])}\right)"

    def _print_exp(self, expr, exp=None):
        return rf"e^{{{self._print(expr.args[0])}}}"

    def _print_Add(self, expr, order=None):
        if _branches(expr):
            return self._print(_branches(expr))
        # subtracted terms last, a sum's own terms before it, a positive number first (1 + x (1 - σ))
        terms = sorted(expr.as_ordered_terms(), key=lambda t: (t.could_extract_minus_sign(), not t.has(sp.Sum),
                                                               not t.is_number))
        tex = ""
        for term in terms:
            if term.could_extract_minus_sign():
                body = self._print(-term)
                if isinstance(-term, sp.Add):
                    body = rf"\left({body}\right)"
                tex += f" - {body}" if tex else f"- {body}"
            else:
                tex += f" + {self._print(term)}" if tex else self._print(term)
        return tex

    def _print_Mul(self, expr):
        if _branches(expr):
            return self._print(_branches(expr))
        if expr.could_extract_minus_sign():
            return "- " + self._print_Mul_positive(-expr) if isinstance(-expr, sp.Mul) else "- " + self._print(-expr)
        return self._print_Mul_positive(expr)

    def _print_Mul_positive(self, expr):
        coeff, factors = expr.as_coeff_mul()
        num, den = [], []
        for f in factors:
            if isinstance(f, sp.Pow) and f.exp.is_number and f.exp.is_negative:
                den.append(f.base if f.exp == -1 else sp.Pow(f.base, -f.exp))
            else:
                num.append(f)
        p, q = sp.fraction(coeff)
        if q != 1 and decimal_text(coeff, shortest_denominator=1000) is not None:
            p, q = coeff, 1  # a decimal constant stays one number: 0.134145 x^2, not 26829 x^2 / 200000
        if p != 1:
            num.insert(0, p)
        if q != 1:
            den.insert(0, q)
        num = sorted(num, key=self._factor_rank)
        adds = [f for f in num if isinstance(f, (sp.Add, sp.Sum))] if den else []
        front = [f for f in num if f not in adds]
        tex = self._product(front) if front else ("1" if den else "")
        if den:
            below = self._print(den[0]) if len(den) == 1 else self._product(sorted(den, key=self._factor_rank))
            tex = rf"\frac{{{tex}}}{{{below}}}"
        if adds:
            tex += " " + self._product(adds)
        return tex

    def _factor_rank(self, f):
        if f.is_number:
            return (0, "")
        if isinstance(f, sp.Symbol):
            return (1, f.name)
        if isinstance(f, sp.Indexed) and str(f.base.label) in self.notation.upstream:
            return (1.5, "")
        if isinstance(f, sp.Sum):
            return (5, "")
        if isinstance(f, sp.Add):
            return (4, str(sp.default_sort_key(f)))
        if isinstance(f, sp.Piecewise):
            return (6, "")
        if isinstance(f, sp.Derivative):  # chain-rule factors: after the sums they sit beside
            return (7, str(sp.default_sort_key(f)))
        if isinstance(f, (sp.Indexed, sp.Symbol)):
            return (2, str(sp.default_sort_key(f)))
        return (3, str(sp.default_sort_key(f)))

    def _product(self, factors) -> str:
        parts = []
        for f in factors:
            tex = self._print(f)
            if isinstance(f, sp.Add) or (isinstance(f, sp.Sum) and len(factors) > 1 and f is not factors[-1]):
                tex = rf"\left({tex}\right)"
            parts.append(tex)
        return " ".join(parts)

    def _print_Pow(self, expr):
        if expr.exp == sp.Rational(1, 2):
            return rf"\sqrt{{{self._print(expr.base)}}}"
        if expr.exp.is_number and expr.exp.is_negative:
            return rf"\frac{{1}}{{{self._print(sp.Pow(expr.base, -expr.exp))}}}"
        if isinstance(expr.base, sp.Function):
            return super()._print_Pow(expr)
        base = self._print(expr.base)
        if not isinstance(expr.base, (sp.Symbol, sp.Indexed)) or "^" in base:
            base = rf"\left({base}\right)"
        elif isinstance(expr.base, sp.Indexed) and "'" in self.notation.element(str(expr.base.base.label)):
            # h'_{nk} squared: a prime is a superscript, so the base is one group
            base = f"{{{base}}}"
        return f"{base}^{{{self._print(expr.exp)}}}"


def _branches(expr):
    """``a [c] + b [not c]`` as ``Piecewise``, to print as cases; None if ``expr`` is not of that form.

    Only for printing: a ``Piecewise`` never goes back into an expression
    (see ``derive.define.symbols.iverson_form``).
    """
    if not expr.has(Iverson) or expr.has(sp.Sum):
        return None
    if not any(e.condition.atoms(sp.Indexed) for e in expr.atoms(Iverson)):
        return None  # conditions on indices alone (a window's range) read better as brackets
    folded = sp.piecewise_fold(as_piecewise(expr))
    return folded if isinstance(folded, sp.Piecewise) else None


def latex(expr: sp.Expr, notation: Notation, lang: str = "en") -> str:
    return ArticleLatex(notation, lang).doprint(expr)


# -- matrix form, from the vector IR -------------------------------------------

class MatrixForm:
    """Prints IR nodes as matrix algebra; ``None`` where there is no plain form.

    Axes map to matrix dimensions in the order of the target: a node laid
    out as ``(n, k)`` is an N x K matrix, ``(k,)`` a column vector.
    """

    def __init__(self, notation: Notation, ranks: dict, printer: ArticleLatex):
        self.notation = notation
        self.ranks = ranks  # variable name -> rank
        self.printer = printer

    def print(self, node: Node, axes: tuple) -> str | None:
        try:
            return self._print(node, tuple(axes))
        except _NoForm:
            return None

    def _print(self, node, axes) -> str:
        if isinstance(node, Leaf):
            return self._leaf(node, axes)
        if isinstance(node, Contract):
            return self._contract(node, axes)
        if isinstance(node, Reduce):
            return self._reduce(node, axes)
        if isinstance(node, Elementwise):
            return self._elementwise(node, axes)
        if isinstance(node, Block) and isinstance(node.arg, Leaf) and len(node.axes) <= 2:
            return self._block(node, axes)
        if isinstance(node, Stack) and len(node.axes) <= 2 and tuple(node.axes) == axes:
            return self._stack(node, axes)
        raise _NoForm

    def _block(self, node: Block, axes) -> str:
        """Block g of stacked weights by its rows: ``{W_{ih}{}}_{[H:2H]}``."""
        tex = self.notation.matrix(node.arg.name, len(node.arg.axes))
        rows = f"{self.printer.doprint(node.start)}:{self.printer.doprint(node.start + node.size)}"
        tex = f"{{{tex}{{}}}}_{{[{rows}]}}"  # the {} keeps TeX from reading \vec{b}_{hh}'s subscript twice
        have = tuple(node.axes)
        if have == axes or len(have) == 1 and len(axes) == 1:
            return tex
        if len(have) == 2 and have == tuple(reversed(axes)):
            return f"{{{tex}}}^{{T}}"
        return self._broadcast(tex, have, axes)

    def _stack(self, node: Stack, axes) -> str:
        """The blocks end to end: one above the other along rows, side by side along columns."""
        separator = r" \\ " if node.position == 0 else " & "
        blocks = separator.join(self._print(b, tuple(b.axes)) for b in node.blocks)
        return rf"\begin{{bmatrix}} {blocks} \end{{bmatrix}}"

    def _leaf(self, node: Leaf, axes) -> str:
        tex = self.notation.matrix(node.name, self.ranks.get(node.name, len(node.axes)))
        have = tuple(node.axes)
        if have == axes or len(have) == 1 and have[0] in axes and len(axes) == 1:
            return tex
        if len(have) == 2 and have == tuple(reversed(axes)):
            return (f"{{{tex}}}" if "^" in tex else tex) + "^{T}"  # δ^{Z} transposed: {δ^{Z}}^{T}
        return self._broadcast(tex, have, axes)

    def _broadcast(self, tex, have, axes) -> str:
        if len(have) == 1 and len(axes) == 2:
            tex = f"{{{tex}}}" if "^" in tex and _atomic(tex) else tex  # b^{(5)} transposed: {b^{(5)}}^{T}
            if have[0] == axes[0]:
                return rf"{tex}\mathbf{{1}}^{{T}}"
            if have[0] == axes[1]:
                return rf"\mathbf{{1}}{tex}^{{T}}"
        if not have:
            return tex
        raise _NoForm

    def _contract(self, node: Contract, axes) -> str:
        out = tuple(node.axes)
        if len({frozenset(a.axes) for a in node.args}) == 1:  # a Hadamard product, then a sum
            whole = tuple(node.args[0].axes)
            keys = [sp.Symbol(f"_c{i}") for i in range(len(node.args))]
            product = Elementwise(whole, sp.Mul(*keys), tuple(zip(keys, node.args)))
            return self._reduce(Reduce(out, "sum", product, sp.S.One), axes)
        if len(node.args) != 2:
            raise _NoForm
        a, b = node.args
        if len(out) == 2 and len(a.axes) == 2 and len(b.axes) == 2:
            left = a if out[0] in a.axes else b
            right = b if left is a else a
            shared = (set(left.axes) & set(right.axes)).pop()
            tex = f"{self._print(left, (out[0], shared))} {self._print(right, (shared, out[1]))}"
            return tex if out == axes else self._reshape(tex, out, axes)
        if len(out) == 1 and {len(a.axes), len(b.axes)} == {1, 2}:
            mat, vec = (a, b) if len(a.axes) == 2 else (b, a)
            shared = vec.axes[0]
            tex = f"{self._print(mat, (out[0], shared))} {self._print(vec, (shared,))}"
            return self._reshape(tex, out, axes)
        raise _NoForm

    def _reduce(self, node: Reduce, axes) -> str:
        if node.kind != "sum" or len(node.arg.axes) != 2 or len(node.axes) != 1:
            raise _NoForm
        child = tuple(node.arg.axes)
        kept = node.axes[0]
        inner = self._print(node.arg, (kept, (set(child) - {kept}).pop()))
        tex = rf"{inner}\mathbf{{1}}" if _atomic(inner) else rf"\left({inner}\right)\mathbf{{1}}"
        return self._reshape(tex, (kept,), axes)

    def _reshape(self, tex, have, axes) -> str:
        if tuple(have) == tuple(axes):
            return tex
        if len(have) == 2 and tuple(have) == tuple(reversed(axes)):
            return rf"\left({tex}\right)^{{T}}"
        return self._broadcast(tex if _atomic(tex) else rf"\left({tex}\right)", tuple(have), tuple(axes))

    def _elementwise(self, node: Elementwise, axes) -> str:
        subs, arrays = {}, set()
        for key, child in node.holes:
            subs[key] = sp.Symbol(self._print(child, axes))
            arrays.add(subs[key].name)
        return _HadamardPrinter(self.printer, arrays).doprint(node.expr.xreplace(subs))


class _NoForm(Exception):
    pass


_ATOM = re.compile(r"^\{?(e\^\{[^{}]*\}|\\vec\{[^{}]*\}|\\boldsymbol\{[^{}]*\}|\\mathbf\{[^{}]*\}|\\?[A-Za-z]+'*)"
                   r"(\^\{[^{}T]*\})?(_\{[^{}]*\})?\}?(\^\{T\})?$")


def _atomic(tex: str) -> bool:
    """A single matrix name, perhaps transposed: needs no parentheses."""
    return bool(_ATOM.match(tex))


class _HadamardPrinter(ArticleLatex):
    """Arithmetic on arrays: array products are Hadamard products, array quotients Hadamard quotients."""

    def __init__(self, base: ArticleLatex, arrays: set):
        super().__init__(base.notation, base.lang)
        self.arrays = arrays

    def _print_Symbol(self, expr, style="plain"):
        return expr.name if expr.name in self.arrays else super()._print_Symbol(expr)

    def _is_array(self, f) -> bool:
        return any(s.name in self.arrays for s in f.free_symbols)

    _has_element = _is_array

    def _wrap(self, f) -> str:
        tex = self._print(f)
        call = isinstance(f, (sp.Function, Iverson)) and not isinstance(f, sp.Piecewise)  # σ(x), [x > 0]: closed
        return tex if _atomic(tex) or tex.startswith("e^") or call else rf"\left({tex}\right)"

    def _print_Mul_positive(self, expr):
        coeff, factors = expr.as_coeff_mul()
        num, den = [], []
        for f in factors:
            if isinstance(f, sp.Pow) and f.exp.is_number and f.exp.is_negative:
                den.append(f.base if f.exp == -1 else sp.Pow(f.base, -f.exp))
            else:
                num.append(f)
        scalar = coeff * sp.Mul(*(f for f in num if not self._is_array(f))) / sp.Mul(*(f for f in den if not self._is_array(f)))
        tex = "" if scalar == 1 else ArticleLatex._print_Mul_positive(self, scalar) if isinstance(scalar, sp.Mul) \
            else self._print(scalar)
        below = [f for f in den if self._is_array(f)]
        body = r" \odot ".join(self._wrap(f) for f in num if self._is_array(f)) or ("" if tex and not below else "1")
        if below:
            quotient = r" \odot ".join(self._wrap(f) for f in below)
            body += r" \oslash " + (quotient if len(below) == 1 else rf"\left({quotient}\right)")
        return f"{tex} {body}".strip() if tex else body

    def _print_Pow(self, expr):
        if self._is_array(expr) and expr.exp == 2:
            base = self._wrap(expr.base)
            grouped = "^" in base and not base.startswith(r"\left(")  # X^{T} squared: {X^{T}}^{\circ 2}
            return rf"{{{base}}}^{{\circ 2}}" if grouped else rf"{base}^{{\circ 2}}"
        if self._is_array(expr) and expr.exp == -1:
            return rf"1 \oslash {self._wrap(expr.base)}"
        return super()._print_Pow(expr)


class VectorLatex(ArticleLatex):
    """Vector form for one row (layer norm) or one channel (batch norm).

    Indices in ``vector`` run along the vector; the others are fixed, so an
    element indexed by them alone is a scalar (``\\mu``, ``\\gamma``).
    A sum over the vector indices is an inner product (``\\vec{g}^T\\hat{\\vec{x}}``)
    or a sum of entries (``\\mathbf{1}^T\\vec{g}``); products of vectors are
    Hadamard products.
    """

    def __init__(self, notation: Notation, lang: str, vector: set, sizes: dict | None = None):
        """``sizes``: each vector index's size, so that a sum over another letter with that range
        (softmax's ``\\sum_j`` beside its ``k``) is read as a sum along the vector too."""
        super().__init__(notation, lang)
        self.vector = {v.name for v in vector}
        self.sizes = {v.name: size for v, size in (sizes or {}).items()}

    def _along(self, index) -> bool:
        """An index the vector runs along, primed or not (``n``, ``n'``)."""
        return isinstance(index, sp.Symbol) and index.name.rstrip("'") in self.vector

    def _is_vector(self, expr) -> bool:
        """Does ``expr`` still run along the vector (a sum over it is a scalar)?"""
        return any(self._along(i) for i in index_symbols(expr))

    def _print_Pow(self, expr):
        if self._is_vector(expr.base) and expr.exp == 2:
            return rf"{self._wrap(expr.base)}^{{\circ 2}}"
        return super()._print_Pow(expr)

    def _print_Indexed(self, expr):
        base = self.notation.element(str(expr.base.label))
        if not any(self._along(i) for i in expr.indices):
            return base
        if base.startswith(r"\hat{") or base.startswith(r"\tilde{"):
            accent, inner = base[1:].split("{", 1)
            return rf"\{accent}{{\vec{{{inner[:-1]}}}}}"
        return rf"\vec{{{base}}}"

    def _print_Sum(self, expr):
        expr = self._renamed_along(expr)
        variables = {v.name.rstrip("'") for v, _, _ in expr.limits}
        if variables != self.vector:
            return super()._print_Sum(expr)
        factors = sp.Mul.make_args(expr.function)
        scalars = [f for f in factors if not self._is_vector(f)]
        vectors = [f for f in factors if self._is_vector(f)]
        head = ArticleLatex._product(self, scalars) + " " if scalars else ""
        if len(vectors) == 1:
            return head + rf"\mathbf{{1}}^{{T}} {self._wrap(vectors[0])}"
        rest = r" \odot ".join(self._wrap(v) for v in vectors[1:])
        rest = rest if len(vectors) == 2 else rf"\left({rest}\right)"
        return head + rf"{self._wrap(vectors[0])}^{{T}} {rest}"

    def _renamed_along(self, expr: sp.Sum) -> sp.Sum:
        """A sum whose letter runs over a vector index's whole range, renamed to that index (primed if taken)."""
        taken = {s.name for s in expr.free_symbols}
        renames = {}
        for v, lo, hi in expr.limits:
            if self._along(v):
                continue
            along = [u for u, size in self.sizes.items() if lo == 0 and sp.expand(hi - size + 1) == 0]
            if len(along) != 1:
                return expr
            name = along[0]
            while name in taken:
                name += "'"
            taken.add(name)
            renames[v] = sp.Symbol(name, integer=True)
        return rename_bound(expr, renames) if renames else expr

    def _wrap(self, f) -> str:
        tex = self._print(f)
        return rf"\left({tex}\right)" if isinstance(f, (sp.Add, sp.Mul)) else tex

    def _product(self, factors) -> str:
        scalars = [f for f in factors if not self._is_vector(f)]
        vectors = [f for f in factors if self._is_vector(f)]
        head = " ".join(rf"\left({self._print(f)}\right)" if isinstance(f, (sp.Sum, sp.Add)) and vectors
                        else ArticleLatex._product(self, [f]) for f in scalars)
        body = r" \odot ".join(self._wrap(f) if not isinstance(f, sp.Sum) else self._print(f) for f in vectors)
        return f"{head} {body}".strip()

    def _print_Add(self, expr, order=None):
        if not self._is_vector(expr):
            return super()._print_Add(expr)
        terms = sorted(expr.as_ordered_terms(), key=lambda t: t.could_extract_minus_sign())
        tex = ""
        for term in terms:
            negative = term.could_extract_minus_sign()
            body = self._print(-term if negative else term)
            if isinstance(-term if negative else term, sp.Add):
                body = rf"\left({body}\right)"
            if not self._is_vector(term):
                body = rf"{body} \mathbf{{1}}" if " " not in body else rf"\left({body}\right) \mathbf{{1}}"
            tex += (" - " if negative else " + ") + body if tex else ("- " + body if negative else body)
        return tex
