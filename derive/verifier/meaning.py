"""What a parsed formula means: its names looked up in a symbol table, the result as SymPy index form.

A table lists the names a formula may use for one op (``x_{nj}``,
``w_{kj}``, ``b_k``, the upstream ``\\delta_{nk}``, the sizes) or for a
chain (``w_{kj}`` of the output layer, ``w_{ji}`` of the hidden layer,
``\\delta_j``, ``y_k``...; there the article's index letters tell the
layers apart). Index form and matrix form both end up as index form:
``\\boldsymbol{\\delta}^T X`` becomes ``sum_n g[n, k] x[n, j]``.

Index ranges are inferred from where each letter is used. A letter used
where two different sizes meet (``\\sum_k \\delta_{nk} w_{jk}``: k runs over
M in one and over D in the other) is recorded as a clash: such a formula
is only defined when the sizes agree, which is the tell-tale of a
transposed index.
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field

import sympy as sp

from derive.define.functions import NormalPdf, Phi, Sigmoid, Softplus
from derive.verifier import formula as F
from derive.define.symbols import Iverson

MAX_SUMS = 32
MAX_SUM_DEPTH = 8
MAX_EXPONENT = 16
ONE = sp.S.One


def index(letter: str) -> sp.Symbol:
    return sp.Symbol(letter, integer=True)


BATCH_INDEX = index("n")


@dataclass(frozen=True)
class Entry:
    """A name a formula may use: a tensor (by element or as a whole), a size or a constant."""

    value: object  # IndexedBase for arrays, Symbol for scalars
    names: tuple  # the words that refer to it ("w", "W", "\\hat{x}", "sigma^2")
    shape: tuple = ()  # size symbols (batch form)
    letters: tuple = ()  # the article's index letter for each axis
    meaning: str = ""
    kind: str = "input"  # input, upstream, intermediate, error term, size, constant, objective
    batch_axis: int | None = None
    layer: int | None = None  # in a chain: the number in W_2, y_1, \delta_2
    written: str = ""  # its name as the printed derivation writes it (TeX), if not name_tex(names[0])

    @property
    def rank(self) -> int:
        return len(self.shape)

    def element(self, idx) -> sp.Expr:
        return self.value[tuple(idx)] if idx else self.value

    def shape_in(self, sample: bool) -> tuple:
        return tuple(s for p, s in enumerate(self.shape) if not (sample and p == self.batch_axis))

    def letters_in(self, sample: bool) -> tuple:
        return tuple(c for p, c in enumerate(self.letters) if not (sample and p == self.batch_axis))

    def head(self) -> str:
        """Its name in TeX, without indices."""
        from codegen.latex.notation import name_tex
        return self.written or name_tex(self.names[0])

    def tex(self, sample: bool = False) -> str:
        head = self.head()
        letters = self.letters_in(sample)
        return f"{head}_{{{''.join(letters)}}}" if letters else head


@dataclass
class Table:
    """The names of one op or chain, and how index letters relate to sizes."""

    title: str
    entries: list
    #: For a chain, the article's letters name layers: letter -> size (i -> I). None for one op.
    letter_sizes: dict | None = None
    default_sample: bool = False
    batch_size: sp.Symbol | None = None
    #: The letters the vector form runs along, outer first (batch norm: n and s, one channel's values).
    vector_letters: tuple = ()
    #: For one op, the range of each letter its definition sums over (pooling's p < K): the range of
    #: a sum over that letter when nothing in the formula says it.
    sum_ranges: dict = field(default_factory=dict)
    #: The ops that make a sample's result depend on its batch (batch norm): with any, a formula
    #: without the batch index has no meaning, and the single-sample form is refused.
    coupled_by: tuple = ()
    #: An unrolled cell's time letter and the steps it runs over, ``("t", 1, T)``: a sum over it runs over the
    #: steps as written (``\\sum_{t=1}^{T}``, ``\\sum_{t=1}^{T-1}``; ``\\sum_t`` all of them), and its
    #: indices are steps (``h_{t-1}``, ``h_{0}``), not counted from 0.
    time: tuple | None = None

    def named(self, word: str) -> list:
        return [e for e in self.entries if word in e.names]

    @property
    def index_letters(self) -> set:
        """The letters this notation indexes with: a chain's (the article's i, j, k, n), or an op's
        tensors' and the letters its definition sums over."""
        if self.letter_sizes is not None:
            return set(self.letter_sizes)
        return {c for e in self.entries for c in e.letters} | set(self.sum_ranges)

    @property
    def sizes(self) -> list:
        return [e.value for e in self.entries if e.kind == "size"]


# -- resolved values ------------------------------------------------------------

@dataclass(frozen=True)
class Value:
    """A scalar (``axes == ()``) or a 2-D array: each axis (index symbol or None for a unit axis, class).

    In the vector form (``vec``: ``"col"`` or ``"row"``) a value runs along the
    table's vector letters, which stay free in ``expr`` until an inner
    product sums over them.
    """

    expr: sp.Expr
    axes: tuple = ()
    vec: str | None = None

    @property
    def is_array(self) -> bool:
        return bool(self.axes)


@dataclass
class Meaning:
    """A resolved formula: index form whose free indices are the letters it leaves free."""

    expr: sp.Expr
    free: tuple  # free index letters (the batch index of the single-sample form excluded)
    sample: bool
    clashes: list  # messages: where two different sizes meet
    tied: list = field(default_factory=list)  # groups of sizes the formula forces to be equal
    ranges: dict = field(default_factory=dict)  # free letter -> size


class ShapeMismatch(Exception):
    """A matrix formula whose result has another number of axes than the gradient: wrong, not malformed."""


class _Classes:
    """Union-find over index ranges: sizes, and unknown ranges that products and letters tie together."""

    def __init__(self):
        self.parent = {}
        self.seen = {}  # root -> [(size, where)]
        self.counter = itertools.count()

    def new(self) -> int:
        key = next(self.counter)
        self.parent[key] = key
        self.seen[key] = []
        return key

    def of_size(self, size, where: str) -> int:
        key = self.new()
        self.seen[key].append((size, where))
        return key

    def find(self, key):
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if rb < ra:
                ra, rb = rb, ra
            self.parent[rb] = ra
            self.seen[ra] += self.seen.pop(rb)
        return ra

    def sizes(self, key) -> list:
        out = []
        for size, _ in self.seen[self.find(key)]:
            if size not in out:
                out.append(size)
        return out


class Resolver:
    """Turns one syntax tree into SymPy for a table: names to tensors, letters to indices, arrays to index form."""

    def __init__(self, table: Table, sample: bool, text: str = "", free_sizes: dict | None = None,
                 derivatives: bool = False, quantity: str = "the gradient", vector: bool = False,
                 strict: bool = False):
        """``strict``: a free index that is neither the quantity's (``free_sizes``) nor one of the table's
        letters is refused, wherever it stands (``w_{kq}`` and ``\\delta_q`` alike)."""
        self.table = table
        self.quantity = quantity
        self.strict = strict
        self.sample = sample
        self.vector = table.vector_letters if vector else ()
        self.text = text
        self.classes = _Classes()
        self.free = {}  # free letter -> class
        self.scopes: list[dict] = []
        self.placeholders = {}  # placeholder symbol -> class
        self.fresh = itertools.count()
        self.derivatives = derivatives
        self.sums = 0
        self.letters = None  # the letters the formula uses as indices (set at the first resolve)
        for letter, size in (free_sizes or {}).items():
            self.free[letter] = self.classes.of_size(size, f"{letter} in {quantity}")
        self.own = tuple(self.free)  # the quantity's letters

    # -- errors and bookkeeping --

    def error(self, message: str, node: F.Node):
        return F.FormulaError(message, node.pos or None, self.text)

    def _class_of(self, letter: str, node) -> int:
        for scope in reversed(self.scopes):
            if letter in scope:
                return scope[letter]
        if self.sample and letter == BATCH_INDEX.name and self.table.batch_size is not None:
            raise self.error("n is the batch index: the single-sample form leaves it out everywhere", node)
        if letter not in self.free:
            if self._foreign(letter):
                raise self._foreign_error(letter, node)
            self.free[letter] = self._letter_class(letter)
        return self.free[letter]

    def _foreign(self, letter: str) -> bool:
        """A free index the quantity lacks, and no letter of this notation either (not a missing sum)."""
        return self.strict and letter not in self.free and letter.rstrip("'") not in self.table.index_letters \
            and not any(letter in scope for scope in self.scopes)

    def _foreign_error(self, letter: str, node) -> F.FormulaError:
        own = ", ".join(self.own)
        known = ", ".join(sorted(self.table.index_letters))
        return self.error(f"free index {letter}: {self.quantity} has {'index' if len(self.own) == 1 else 'indices'} "
                          f"{own}, and {letter} is none of the letters here ({known}); write {own}, or sum over "
                          f"{letter}", node)

    def _letter_class(self, letter: str) -> int:
        base = letter.rstrip("'")
        sizes = self.table.letter_sizes
        if sizes is not None and base in sizes:
            return self.classes.of_size(sizes[base], f"the article's {base}")
        return self.classes.new()

    def _placeholder(self, key) -> sp.Symbol:
        symbol = sp.Symbol(f"_size{next(self.fresh)}", integer=True, positive=True)
        self.placeholders[symbol] = key
        return symbol

    def _axis(self, key, index_symbol=None) -> tuple:
        if index_symbol is None:
            index_symbol = sp.Symbol(f"_a{next(self.fresh)}", integer=True)
        return (index_symbol, key)

    # -- the walk --

    def resolve(self, node: F.Node) -> Value:
        if self.letters is None:
            self.letters = index_letters(node) | set(self.free)
        for kind in type(node).__mro__:
            method = getattr(self, "_" + kind.__name__, None)
            if method is not None:
                return method(node)
        raise self.error(f"cannot use {type(node).__name__} here", node)

    def _Num(self, node: F.Num) -> Value:
        return Value(sp.Rational(node.value.numerator, node.value.denominator))

    def _Name(self, node: F.Name) -> Value:
        if node.word == "pi" and node.indices is None and not self.table.named("pi"):
            return Value(sp.pi)
        scalar = self._subscripted_scalar(node)
        if scalar is not None:
            return Value(scalar.value)
        whole = self.subscripted_whole(node)
        if whole is not None:
            return self._whole(whole, F.Name(node.pos, name_key_of(node)))
        entry = self.lookup(node)
        if entry is None:  # several letters written together: a product (ty_k is t y_k)
            return self._split(node)
        if entry.rank == 0:
            if node.indices:
                raise self.error(f"{node.word} takes no index", node)
            return Value(entry.value)
        rank = len(entry.shape_in(self.sample))
        if node.indices is None:
            if self.vector:  # the vector form: the letters are implicit, the vector ones run along it
                letters = entry.letters_in(self.sample)
                value = self._element(entry, F.Name(node.pos, node.word, letters), letters)
                return Value(value.expr, vec="col" if set(letters) & set(self.vector) else None)
            return self._whole(entry, node)
        if len(node.indices) != rank:
            expected = "".join(entry.letters_in(self.sample))
            raise self.error(f"{F.name_text(node.word)} takes {rank} {'index' if rank == 1 else 'indices'} "
                             f"(like {entry.head()}_{{{expected}}}), got {len(node.indices)}", node)
        return self._element(entry, node, node.indices)

    def _element(self, entry: Entry, node: F.Name, indices) -> Value:
        """One element; a letter's range is the axis's size, an index expression (``i s + p``) ties nothing."""
        idx = []
        for item, size in zip(indices, entry.shape_in(self.sample)):
            if isinstance(item, str) and item.isdigit():  # a fixed step, h_{0,nj}
                idx.append(sp.Integer(item))
                continue
            if isinstance(item, str) and item not in self.table.index_letters \
                    and any(e.kind == "size" for e in self.table.named(item)):  # the last step, h_{T,nj}
                idx.append(self._index_expr(F.Name(node.pos, item)))
                continue
            if isinstance(item, F.IndexExpr):
                idx.append(self._index_expr(item.expr))
                continue
            key = self._class_of(item, node)
            self.classes.union(key, self.classes.of_size(size, f"{item} in {self._written(node)}"))
            idx.append(index(item))
        return Value(entry.element(self._with_batch(entry, idx)))

    def _subscripted_scalar(self, node) -> Entry | None:
        """``K_H``: a size or constant whose printed name has a subscript, not K indexed by H."""
        key = name_key_of(node) if isinstance(node, F.Name) and node.indices else None
        found = [e for e in self.table.named(key) if e.rank == 0] if key else []
        return found[0] if found else None

    def subscripted_whole(self, node) -> Entry | None:
        """``W_{ih}``: an array whose matrix name has a subscript (an RNN's input weights), where the
        bare word names nothing, not W indexed by i and h."""
        if not isinstance(node, F.Name) or not node.indices or self.table.named(node.word):
            return None
        key = name_key_of(node)
        found = [e for e in self.table.named(key) if e.rank] if key else []
        return found[0] if len(found) == 1 else None

    def _index_expr(self, node: F.Node) -> sp.Expr:
        """Index arithmetic: letters, numbers, sizes and constants (a stride), added and multiplied; divided
        and taken modulo (a dilated offset, ``\\frac{h + P - i s}{d}``, ``(h + P - i s) \\bmod d``)."""
        if isinstance(node, F.Num):
            return sp.Rational(node.value.numerator, node.value.denominator)
        scalar = self._subscripted_scalar(node)
        if scalar is not None:
            return scalar.value
        if isinstance(node, F.Name) and node.indices is None and node.layer is None and not node.decorated:
            scalars = [e for e in self.table.named(node.word) if e.rank == 0]
            if scalars:
                return scalars[0].value
            letters = []
            F.split_letters(node.word, letters)
            if all(c.rstrip("'").isalpha() and len(c.rstrip("'")) == 1 for c in letters) \
                    and "".join(letters).replace("'", "") == node.word.replace("'", ""):
                out = ONE
                for letter in letters:
                    found = [e for e in self.table.named(letter) if e.rank == 0]
                    if found:
                        out *= found[0].value
                    else:
                        self._class_of(letter, node)
                        out *= index(letter)
                return out
        if isinstance(node, F.Neg):
            return -self._index_expr(node.arg)
        if isinstance(node, F.Add):
            left, right = self._index_expr(node.left), self._index_expr(node.right)
            return left - right if node.minus else left + right
        if isinstance(node, F.Frac):
            return sp.expand(self._index_expr(node.num) / self._divisor(node.den))
        if isinstance(node, F.Product) and all(op in ("juxt", "cdot", "times", "emul", "div", "mod") for op in node.ops):
            out = self._index_expr(node.factors[0])
            for op, factor in zip(node.ops, node.factors[1:]):
                value = self._divisor(factor) if op in ("div", "mod") else self._index_expr(factor)
                out = sp.expand(out / value) if op == "div" else sp.Mod(out, value) if op == "mod" else out * value
            return out
        raise self.error("an index is a letter, or letters, sizes and numbers added and multiplied "
                         "(x_{n, c, i s + p})", node)

    def _divisor(self, node: F.Node) -> sp.Expr:
        """What an index is divided by or taken modulo: a size or constant (a dilation), never a number
        (``x_{i + \\frac{1}{2}}`` reads no element)."""
        value = self._index_expr(node)
        if value.is_number:
            raise self.error("an index is divided only by a size or constant (a dilation d), not a number", node)
        return value

    def _with_batch(self, entry: Entry, idx: list) -> list:
        if self.sample and entry.batch_axis is not None:
            idx = list(idx)
            idx.insert(entry.batch_axis, BATCH_INDEX)
        return idx

    def _written(self, node: F.Name) -> str:
        word = F.name_text(node.word)
        return f"{word}_{{{''.join(map(F.index_text, node.indices))}}}" if node.indices else word

    def _whole(self, entry: Entry, node) -> Value:
        """A tensor as a whole (matrix form): rank 2 as is, rank 1 as a column."""
        shape = entry.shape_in(self.sample)
        if len(shape) > 2:
            raise self.error(f"{node.word} has {len(shape)} axes: write it with indices", node)
        axes = [self._axis(self.classes.of_size(s, f"axis {p + 1} of {node.word}")) for p, s in enumerate(shape)]
        if len(axes) == 1:
            axes.append((None, self.classes.of_size(ONE, "a column vector")))
        return Value(entry.element(self._with_batch(entry, [a for a, _ in axes if a is not None])), tuple(axes))

    def _split(self, node: F.Name) -> Value:
        word = node.word
        parts = [F.Name(node.pos + p, c) for p, c in enumerate(word[:-1])]
        parts.append(F.Name(node.pos + len(word) - 1, word[-1], node.indices, node.decorated, node.layer))
        values = [self.resolve(p) for p in parts]
        out = values[0]
        for v in values[1:]:
            out = self._product(out, v, node)
        return out

    def lookup(self, node: F.Name) -> Entry | None:
        """The entry ``node`` names, chosen by layer number or index letters; None for a product of letters."""
        candidates = self.table.named(node.word)
        if not candidates:
            if self._letters_named(node.word):
                return None
            raise self.error(f"unknown symbol {F.name_text(node.word)}; 'derive verify ... --symbols' lists "
                             "the names", node)
        if node.layer is not None:
            layered = [e for e in candidates if e.layer == node.layer]
            if not layered:
                have = sorted({e.layer for e in candidates if e.layer is not None})
                hint = f" (layers: {', '.join(map(str, have))})" if have else \
                    "; a digit subscript names a layer (W_2): write indices as letters"
                raise self.error(f"{F.name_text(node.word)}_{node.layer}: no such layer{hint}", node)
            candidates = layered
        if len(candidates) == 1:
            return candidates[0]
        if node.indices is None:
            word = F.name_text(node.word)
            layers = ", ".join(f"{word}_{e.layer}" for e in candidates)
            raise self.error(f"{word} is ambiguous here: write {layers}, or give indices", node)
        return self._by_letters(node, candidates)

    def _letters_named(self, word: str) -> bool:
        """Several letters written together, each a name: a product (``ty_k`` is ``t y_k``)."""
        return len(word) > 1 and word.isalpha() and all(self.table.named(c) for c in word)

    def _by_letters(self, node: F.Name, candidates) -> Entry:
        """In a chain the letters say the layer: w_{kj} is the output layer's, w_{ji} the hidden one's."""
        written = tuple(F.index_text(i).rstrip("'") for i in node.indices)
        fitting = [e for e in candidates if len(e.letters_in(self.sample)) == len(written)]
        exact = [e for e in fitting if e.letters_in(self.sample) == written]
        if len(exact) == 1:
            return exact[0]
        reversed_ = [e for e in fitting if tuple(reversed(e.letters_in(self.sample))) == written]
        if len(reversed_) == 1 and not exact:
            return reversed_[0]  # a transposed index: the size clash reports it
        known = self.table.letter_sizes or {}
        partial = [e for e in fitting
                   if all(w == c or w not in known for w, c in zip(written, e.letters_in(self.sample)))]
        if len(partial) == 1:
            return partial[0]
        foreign = next((i for i in node.indices if isinstance(i, str) and self._foreign(i)), None)
        if foreign is not None:  # \delta_q: the letter, not the name, is what is wrong
            raise self._foreign_error(foreign, node)
        letters = " (use the article's letters i (input), j (hidden), k (output))" if known else ""
        if not fitting:
            raise self.error(f"{self._written(node)}: {len(written)} {'index' if len(written) == 1 else 'indices'}, "
                             f"but {F.name_text(node.word)} is {self._forms(candidates)}{letters}", node)
        repeated = next((c for c in written if written.count(c) > 1), None)
        twice = f"; it names {repeated} twice" if repeated else ""
        raise self.error(f"{self._written(node)}: cannot tell which one is meant: {self._forms(candidates)}"
                         f"{twice}{letters}", node)

    def _forms(self, candidates) -> str:
        """``y_{j}, y_{k}``; where the table has both forms, the one-sample and the batch ones, each said."""
        def forms(sample):
            return ", ".join(f"{e.head()}_{{{''.join(e.letters_in(sample))}}}" for e in candidates)
        if self.table.batch_size is None or not any(e.batch_axis is not None for e in candidates) \
                or self.table.coupled_by:
            return forms(self.sample)
        return f"{forms(True)} for one sample, or {forms(False)} with the batch index n"

    def _Ones(self, node: F.Ones) -> Value:
        if self.vector:
            return Value(ONE, vec="col")
        return Value(ONE, (self._axis(self.classes.new()), (None, self.classes.of_size(ONE, "a column vector"))))

    def _Add(self, node: F.Add) -> Value:
        a, b = self.resolve(node.left), self.resolve(node.right)
        return self._elementwise(a, b, (lambda x, y: x - y) if node.minus else (lambda x, y: x + y), node)

    def _Neg(self, node: F.Neg) -> Value:
        v = self.resolve(node.arg)
        return Value(-v.expr, v.axes, v.vec)

    def _Product(self, node: F.Product) -> Value:
        factors, ops = list(node.factors), list(node.ops)
        out = None
        p = 0
        while p < len(factors):
            factor = factors[p]
            if self._is_operator(factor):  # \frac{\partial}{\partial x} applied to what follows
                if p + 1 >= len(factors):
                    raise self.error("a derivative operator needs something to act on", factor)
                value = self._derivative(factors[p + 1], factor.den.arg, factor)
                op = ops[p - 1] if p else None
                p += 2
            else:
                value = self.resolve(factor)
                op = ops[p - 1] if p else None
                p += 1
            out = value if out is None else self._combine(op, out, value, factor)
        return out

    def _is_operator(self, node) -> bool:
        return isinstance(node, F.Frac) and isinstance(node.num, F.Partial) and node.num.arg is None \
            and isinstance(node.den, F.Partial)

    def _combine(self, op: str, a: Value, b: Value, node) -> Value:
        if op in ("juxt", "cdot", "times", "matmul"):
            return self._product(a, b, node)
        if op in ("emul", "odot"):
            return self._elementwise(a, b, lambda x, y: x * y, node)
        if op in ("div", "oslash"):
            return self._divide(a, b, node)
        if op == "mod":
            raise self.error(r"\bmod is for index arithmetic, [(h + P - i s) \bmod d = 0]", node)
        raise self.error(f"unknown operator {op}", node)  # pragma: no cover - the grammar has no other

    def _product(self, a: Value, b: Value, node) -> Value:
        """Scalar times anything, or a matrix product: the inner axes are summed over."""
        if a.vec and b.vec:
            return self._inner(a, b, node)
        if not a.is_array or not b.is_array:
            return Value(a.expr * b.expr, a.axes or b.axes, a.vec or b.vec)
        (a0, ka0), (a1, ka1) = a.axes
        (b0, kb0), (b1, kb1) = b.axes
        if (a1 is None) != (b0 is None):
            raise self.error(f"cannot multiply a {self._shape(a)} array by a {self._shape(b)} one", node)
        self.classes.union(ka1, kb0)
        if a1 is None:  # an outer product
            expr = a.expr * b.expr
        else:
            expr = sp.Sum(a.expr * b.expr.xreplace({b0: a1}), (a1, 0, self._placeholder(ka1) - 1))
        axes = ((a0, ka0), (b1, kb1))
        if a0 is None and b1 is None:
            return Value(expr)
        return Value(expr, axes)

    def _inner(self, a: Value, b: Value, node) -> Value:
        """Vector form: a row times a column is an inner product, a sum over the vector letters."""
        if (a.vec, b.vec) != ("row", "col"):
            raise self.error("two vectors side by side: write \\odot for the elementwise product, "
                             "or a^{T} b for the inner product", node)
        expr = a.expr * b.expr
        letters = [c for c in self.vector if index(c) in expr.free_symbols]
        if not letters:
            raise self.error("an inner product of two vectors of ones: write the count", node)
        for letter in reversed(letters):  # nested as \sum_n \sum_s would be
            expr = sp.Sum(expr, (index(letter), 0, self._placeholder(self._class_of(letter, node)) - 1))
        return Value(expr)

    def _shape(self, v: Value) -> str:
        return "x".join("1" if i is None else "n" for i, _ in v.axes) or "scalar"

    def _elementwise(self, a: Value, b: Value, fn, node) -> Value:
        if a.vec and b.vec and a.vec != b.vec:
            raise self.error("a row vector and a column vector: transpose one of them", node)
        if not a.is_array or not b.is_array:
            return Value(fn(a.expr, b.expr), a.axes or b.axes, a.vec or b.vec)
        renames = {}
        for (ai, ka), (bi, kb) in zip(a.axes, b.axes):
            if (ai is None) != (bi is None):
                raise self.error(f"the shapes differ: a {self._shape(a)} array and a {self._shape(b)} one", node)
            self.classes.union(ka, kb)
            if bi is not None:
                renames[bi] = ai
        return Value(fn(a.expr, b.expr.xreplace(renames)), a.axes)

    def _divide(self, a: Value, b: Value, node) -> Value:
        return self._elementwise(a, b, lambda x, y: x / y, node)

    def _Pow(self, node: F.Pow) -> Value:
        exponent = self.resolve(node.exp)
        if exponent.expr.is_number and abs(exponent.expr) > MAX_EXPONENT:
            raise self.error(f"exponent too large (at most {MAX_EXPONENT})", node.exp)
        if isinstance(node.base, F.Name) and node.base.word == "e" and node.base.indices is None \
                and not self.table.named("e"):  # elementwise, like \exp: e^{\vec{x}}
            return Value(sp.exp(exponent.expr), exponent.axes, vec=exponent.vec)
        if exponent.is_array:
            raise self.error("an exponent must be a number or a scalar", node.exp)
        if exponent.vec:
            raise self.error("an exponent must be a number or a scalar", node.exp)
        if isinstance(node.base, F.Name) and isinstance(node.exp, F.Num) and not self.table.named(node.base.word) \
                and not self._letters_named(node.base.word):  # \sigma^{2}: a name, though not of this op
            raise self.error(f"unknown symbol {F.name_text(f'{node.base.word}^{node.exp.value}')}; "
                             "'derive verify ... --symbols' lists the names", node)
        base = self.resolve(node.base)
        return Value(base.expr ** exponent.expr, base.axes, base.vec)

    def _Transpose(self, node: F.Transpose) -> Value:
        v = self.resolve(node.arg)
        if v.vec:
            return Value(v.expr, (), "row" if v.vec == "col" else "col")
        return Value(v.expr, tuple(reversed(v.axes))) if v.is_array else v

    def _Call(self, node: F.Call) -> Value:
        v = self.resolve(node.arg)
        functions = {"exp": sp.exp, "log": sp.log, "tanh": sp.tanh, "sqrt": sp.sqrt, "erf": sp.erf,
                     "abs": sp.Abs, "sign": sp.sign, "sigma": Sigmoid, "softplus": Softplus, "Phi": Phi,
                     "phi": NormalPdf}
        expr = functions[node.func](v.expr)
        if node.power is not None:
            power = self.resolve(node.power)
            if power.is_array or (power.expr.is_number and abs(power.expr) > MAX_EXPONENT):
                raise self.error("the power of a function must be a small number", node.power)
            expr = expr ** power.expr
        return Value(expr, v.axes, v.vec)

    def _Frac(self, node: F.Frac) -> Value:
        if isinstance(node.num, F.Partial) or isinstance(node.den, F.Partial):
            if not (isinstance(node.num, F.Partial) and isinstance(node.den, F.Partial)) or node.num.arg is None:
                raise self.error("write a derivative as \\frac{\\partial E}{\\partial x}", node)
            return self._derivative(node.num.arg, node.den.arg, node)
        return self._divide(self.resolve(node.num), self.resolve(node.den), node)

    def _derivative(self, of: F.Node, by: F.Node, node) -> Value:
        if not self.derivatives:
            raise self.error("a derivative on the right-hand side: write its value "
                             "(a derivative may only name the quantity, on the left)", node)
        a, b = self.resolve(of), self.resolve(by)
        if a.is_array or b.is_array:
            raise self.error("a derivative of arrays: write it by element", node)
        return Value(sp.Derivative(a.expr, b.expr, evaluate=False))

    def _Partial(self, node: F.Partial) -> Value:
        raise self.error("\\partial belongs in a derivative \\frac{\\partial E}{\\partial x}", node)

    def _Sum(self, node: F.Sum) -> Value:
        self.sums += 1
        if self.sums > MAX_SUMS:
            raise self.error(f"too many sums (at most {MAX_SUMS})", node)
        if sum(map(len, self.scopes)) + len(node.indices) > MAX_SUM_DEPTH:
            raise self.error(f"too many sums inside each other (at most {MAX_SUM_DEPTH})", node)
        scope, steps = {}, None
        for letter in node.indices:
            if letter in scope:
                raise self.error(f"the sum names {letter} twice", node)
            scope[letter] = self._letter_class(letter)
        if self.table.time is not None and node.indices == (self.table.time[0],):
            steps = self._steps(node)
        elif node.upper is not None:
            self._limits(node, scope)
        self.scopes.append(scope)
        try:
            body = self.resolve(node.body)
        finally:
            self.scopes.pop()
        for letter, key in scope.items():
            size = self.table.sum_ranges.get(letter.rstrip("'"))
            if not self.classes.sizes(key) and size is not None:
                self.classes.union(key, self.classes.of_size(size, f"the range of {letter} in {self.table.title}"))
        expr = body.expr
        if steps is not None:
            return Value(sp.Sum(expr, (index(node.indices[0]), *steps)), body.axes, body.vec)
        for letter in reversed(node.indices):
            expr = sp.Sum(expr, (index(letter), 0, self._placeholder(scope[letter]) - 1))
        return Value(expr, body.axes, body.vec)

    def _steps(self, node: F.Sum) -> tuple:
        """A sum over the time letter: the steps it runs over, as written (numbers and T), else all of them."""
        _, first, last = self.table.time
        if node.upper is None:
            return first, last
        return tuple(self._index_expr(limit) for limit in (node.lower, node.upper))

    def _limits(self, node: F.Sum, scope: dict):
        """``\\sum_{k=1}^{K}`` or ``\\sum_{k=0}^{K-1}``: the full range, written out."""
        if len(node.indices) != 1:
            raise self.error("give limits for one index at a time", node)
        lower = self.resolve(node.lower).expr
        upper = self.resolve(node.upper).expr
        sizes = set(self.table.sizes)
        size = upper + 1 if lower == 0 else upper
        if lower not in (0, 1) or size not in sizes:
            raise self.error("a sum runs over a full range: \\sum_{k=1}^{K}, \\sum_{k=0}^{K-1} or \\sum_{k}", node)
        letter = node.indices[0]
        self.classes.union(scope[letter], self.classes.of_size(size, f"the limits of the sum over {letter}"))

    def _AxisSum(self, node: F.AxisSum) -> Value:
        v = self.resolve(node.arg)
        if not v.is_array:
            raise self.error("sum(A, axis=...) needs an array", node)
        (i, ki), kept = v.axes[node.axis], v.axes[1 - node.axis]
        if i is None:
            return Value(v.expr, (kept, (None, self.classes.of_size(ONE, "a column vector"))))
        expr = sp.Sum(v.expr, (i, 0, self._placeholder(ki) - 1))
        if kept[0] is None:
            return Value(expr)
        return Value(expr, (kept, (None, self.classes.of_size(ONE, "a column vector"))))

    def _Iverson(self, node: F.Iverson) -> Value:
        delta = self._Iverson_of_indices(node.condition)
        if delta is not None:
            return Value(delta)
        return self._condition(node.condition, lambda rel: Iverson(rel))

    def _Iverson_of_indices(self, compare: F.Node):
        """``[k = k']`` compares two index letters (running over the same range), ``[h = i s + p - P]``
        index arithmetic: a Kronecker delta, as the derivation prints it."""
        if not isinstance(compare, F.Compare) or compare.op != "=":
            return None
        sides = (compare.left, compare.right)
        if all(self._is_letter(s) for s in sides):
            self.classes.union(*(self._class_of(s.word, s) for s in sides))  # two indices of the same axis
            return sp.KroneckerDelta(index(sides[0].word), index(sides[1].word))
        if all(self._is_index_arithmetic(s) for s in sides):
            return sp.KroneckerDelta(self._index_expr(sides[0]), self._index_expr(sides[1]))
        return None

    def _is_letter(self, node) -> bool:
        return isinstance(node, F.Name) and node.indices is None and node.layer is None \
            and len(node.word.rstrip("'")) == 1 and (not self.table.named(node.word) or node.word in self.letters)

    def _is_index_arithmetic(self, node) -> bool:
        """A side of a condition on indices (``h + P - i s``): index letters (``w`` too, where the formula
        uses it as an index, though the weights are called w), sizes, constants and numbers."""
        letters = False
        for sub in walk(node):
            if isinstance(sub, F.Name):
                if self._subscripted_scalar(sub) is not None:
                    continue
                if sub.indices is not None or sub.layer is not None or sub.decorated:
                    return False
                if any(e.rank == 0 for e in self.table.named(sub.word)):
                    continue
                chars = []
                F.split_letters(sub.word, chars)
                for char in chars:
                    if any(e.rank == 0 for e in self.table.named(char)):
                        continue
                    if self.table.named(char) and char not in self.letters:
                        return False
                    letters = True
            elif not isinstance(sub, (F.Num, F.Add, F.Neg, F.Product, F.IndexExpr, F.Frac)):
                return False
        return letters

    def _side(self, node) -> Value:
        return Value(self._index_expr(node)) if self._is_index_arithmetic(node) else self.resolve(node)

    def _relation(self, cond: F.Node) -> Value:
        """A comparison, or a chain of them (``0 \\le a \\le K - 1``), as a SymPy condition."""
        if isinstance(cond, F.All):
            out = None
            for part in cond.parts:
                value = self._relation(part)
                out = value if out is None else self._elementwise(out, value, lambda a, b: sp.And(a, b), cond)
            return out
        relations = {">": sp.Gt, "<": sp.Lt, ">=": sp.Ge, "<=": sp.Le, "=": sp.Eq, "!=": sp.Ne}
        return self._elementwise(self._side(cond.left), self._side(cond.right),
                                 lambda a, b: relations[cond.op](a, b), cond)

    def _condition(self, cond: F.Node, wrap) -> Value:
        value = self._relation(cond)
        return Value(wrap(value.expr), value.axes, value.vec)

    def _Cases(self, node: F.Cases) -> Value:
        """Each row counts where its condition holds and no earlier one did: a sum of Iverson brackets."""
        total, earlier = None, None
        for value_node, cond in node.rows:
            value = self.resolve(value_node)
            if cond is None:
                if earlier is None:
                    raise self.error("a case 'otherwise' needs a case before it", node)
                active = Value(sp.Not(earlier.expr), earlier.axes, earlier.vec)
            else:
                condition = self._relation(cond)
                active = condition if earlier is None else self._elementwise(
                    condition, earlier, lambda c, e: sp.And(c, sp.Not(e)), node)
                earlier = condition if earlier is None else self._elementwise(
                    earlier, condition, lambda e, c: sp.Or(e, c), node)
            term = self._elementwise(value, active, lambda v, c: v * Iverson(c), node)
            total = term if total is None else self._elementwise(total, term, lambda a, b: a + b, node)
        return total

    def _Equation(self, node: F.Equation) -> Value:
        raise self.error("one formula at a time", node)

    # -- the result --

    def finish(self, value: Value, target_axes: tuple | None = None) -> Meaning:
        """Sizes in place of placeholders; a matrix result laid onto the target's axes ``(index, size)``."""
        expr = value.expr
        if value.vec == "row":
            raise ShapeMismatch("the formula is a row vector, the gradient a column vector")
        if value.is_array:
            expr = self._onto(value, target_axes)
        unknown = [s for s, key in self.placeholders.items() if not self.classes.sizes(key)]
        if unknown:
            loose = [c for c, key in self.free.items() if not self.classes.sizes(key)]
            raise F.FormulaError(f"cannot tell the range of {', '.join(loose) or 'a sum'}: "
                                 "use it as an index of a tensor, or give the sum limits")
        representative = {s: self.classes.sizes(key)[0] for s, key in self.placeholders.items()}
        expr = expr.xreplace(representative)
        clashes, tied = [], []
        for root in sorted(self.classes.seen):
            sizes = self.classes.sizes(root)
            if len(sizes) > 1:
                tied.append(sizes)
                where = {}
                for size, place in self.classes.seen[root]:
                    where.setdefault(size, place)
                clashes.append(" = ".join(f"{size} ({place})" for size, place in where.items()))
        for letter, key in self.free.items():
            if not self.classes.sizes(key):
                raise F.FormulaError(f"cannot tell the range of the index {letter}")
        free = tuple(sorted(c for c in self.free if index(c) in expr.free_symbols))
        ranges = {c: self.classes.sizes(self.free[c])[0] for c in free}
        return Meaning(expr, free, self.sample, clashes, tied, ranges)

    def _onto(self, value: Value, target_axes):
        """Rename a matrix result's axes to the target's indices, unifying sizes; vectors may be rows or columns."""
        if target_axes is None:
            raise F.FormulaError("a matrix formula needs to know the gradient's shape")
        axes = [(i, k) for i, k in value.axes if i is not None]
        if len(axes) != len(target_axes):
            kinds = {0: "a scalar", 1: "a vector", 2: "a matrix"}
            raise ShapeMismatch(f"the formula is {kinds.get(len(axes), 'an array')}, "
                                f"the gradient {kinds.get(len(target_axes), 'an array')}")
        renames = {}
        for (i, key), (symbol, size) in zip(axes, target_axes):
            self.classes.union(key, self.classes.of_size(size, f"the result's axis {symbol}"))
            renames[i] = symbol
        return value.expr.xreplace(renames)


def sample_mode(table: Table, tree: F.Node) -> bool:
    """Whether the formula is in the single-sample form: batched tensors written without the batch index."""
    found = set()
    for node in walk(tree):
        if isinstance(node, F.Name) and node.indices is not None:
            entries = table.named(node.word)
            batched = [e for e in entries if e.batch_axis is not None]
            if batched and len(batched) == len(entries):
                ranks = {e.rank for e in batched}
                if len(node.indices) in ranks:
                    found.add(("batch", node))
                elif len(node.indices) + 1 in ranks:
                    found.add(("sample", node))
    kinds = {k for k, _ in found}
    if kinds == {"batch", "sample"}:
        sample = next(n for k, n in found if k == "sample")
        batch = next(n for k, n in found if k == "batch")
        raise F.FormulaError(f"mixes the single-sample form ({_written(sample)}) and the batch form "
                             f"({_written(batch)})", sample.pos or None)
    if kinds == {"sample"} and table.coupled_by:
        sample = next(n for _, n in found)
        raise F.FormulaError(f"{_written(sample)} leaves out the batch index, but {', '.join(table.coupled_by)} "
                             f"couples the samples of a batch: write the batch index n", sample.pos or None)
    if kinds:
        return kinds == {"sample"}
    return table.default_sample


def _written(node: F.Name) -> str:
    return f"{F.name_text(node.word)}_{{{''.join(map(F.index_text, node.indices))}}}"


def vector_mode(table: Table, tree: F.Node, sample: bool) -> bool:
    """Whether the formula is in the vector form (``\\vec{g}^{T} \\hat{\\vec{x}}``) of a per-row or
    per-channel op: a tensor of two or more axes written whole, as a vector (or of three, at all)."""
    if not table.vector_letters:
        return False
    letters = index_letters(tree)
    for node in walk(tree):
        if isinstance(node, F.Name) and node.indices is None and node.layer is None and node.word not in letters:
            entries = table.named(node.word)
            if entries and all(set(e.letters_in(sample)) & set(table.vector_letters) for e in entries):
                rank = min(len(e.shape_in(sample)) for e in entries)
                if rank >= 3 or (rank == 2 and node.arrow):
                    return True
    return False


def name_key(tex: str) -> str | None:
    """The word a printed name is read as (``\\hat{x}``, ``sigma^2`` for ``\\sigma^{2}``), or None."""
    try:
        node = F.parse(tex, "latex").parts[0]
    except F.FormulaError:
        return None
    if isinstance(node, F.Pow) and isinstance(node.exp, F.Num) and not node.elementwise:
        inner = name_key_of(node.base)
        return f"{inner}^{node.exp.value}" if inner else None
    if isinstance(node, F.Pow) and not node.elementwise:  # w^{ih}, \delta^{a}: a name with a superscript tag
        inner, tag = name_key_of(node.base), _tag(node.exp)
        return f"{inner}^{tag}" if inner and tag else None
    return name_key_of(node)


def _tag(node) -> str | None:
    """A superscript that names (``a`` of ``\\delta^{a}``, ``\\sigma^{2}`` of the variance's gradient,
    ``a^z`` of a gate's ``\\delta^{a^{z}}``)."""
    if isinstance(node, F.Name) and node.indices is None:
        return name_key_of(node)
    if isinstance(node, F.Pow) and isinstance(node.exp, F.Num) and not node.elementwise:
        inner = name_key_of(node.base)
        return f"{inner}^{node.exp.value}" if inner else None
    if isinstance(node, F.Pow) and not node.elementwise and isinstance(node.base, F.Name) \
            and node.base.indices is None:
        inner, tag = name_key_of(node.base), _tag(node.exp)
        return f"{inner}^{tag}" if inner and tag else None
    return None


def name_key_of(node) -> str | None:
    """A name's word; a printed subscript is part of it (``K_H``, a kernel's height)."""
    if isinstance(node, F.Name) and node.layer is None:
        if node.indices is None:
            return node.word
        if all(isinstance(i, str) for i in node.indices):
            return f"{node.word}_{''.join(node.indices)}"
    return None


def canonical(table: Table, tree: F.Node) -> F.Node:
    """``\\sigma^{2}_{c}`` as the name ``sigma^2`` (the variance) where the table has such a name and
    no ``sigma``, ``\\delta^{a}_{nk}`` as the name ``delta^a`` (a named gradient), ``W_5`` as the name
    ``W_5`` where no layer 5 has a ``W`` (a network's tensor); anything else stays as written."""
    def visit(node):
        if isinstance(node, F.Pow) and not node.elementwise and isinstance(node.exp, F.Num) \
                and isinstance(node.base, F.Name) and not table.named(node.base.word):
            word = f"{node.base.word}^{node.exp.value}"
            if table.named(word):
                return dataclasses.replace(node.base, word=word)
        if isinstance(node, F.Pow) and not node.elementwise and isinstance(node.base, F.Name) and _tag(node.exp):
            word = f"{node.base.word}^{_tag(node.exp)}"  # \delta^{a}: the gradient arriving at a
            if table.named(word):
                return dataclasses.replace(node.base, word=word)
        if isinstance(node, F.Name) and node.layer is not None:
            word = f"{node.word}_{node.layer}"  # a network's tensor by its code name: W_5, dy_4, y_1
            if table.named(word) and not any(e.layer == node.layer for e in table.named(node.word)):
                return dataclasses.replace(node, word=word, layer=None)
        return node
    return transform(tree, visit)


def transform(node, fn):
    """``node`` rebuilt bottom-up with ``fn`` applied to every syntax node."""
    if not isinstance(node, F.Node):
        return node
    changes = {}
    for name in node.__dataclass_fields__:
        child = getattr(node, name)
        if isinstance(child, F.Node):
            new = transform(child, fn)
        elif isinstance(child, tuple):
            new = tuple(transform(c, fn) if isinstance(c, F.Node) else
                        tuple(transform(x, fn) for x in c) if isinstance(c, tuple) else c for c in child)
        else:
            continue
        if new != child:
            changes[name] = new
    return fn(dataclasses.replace(node, **changes) if changes else node)


def index_letters(tree) -> set:
    """Every letter the formula uses as an index: in subscripts (also inside ``i s + p``) and sums."""
    found = set()
    for node in walk(tree):
        if isinstance(node, F.Name) and node.indices:
            found.update(i for i in node.indices if isinstance(i, str))
        elif isinstance(node, F.IndexExpr):
            for sub in walk(node.expr):
                if isinstance(sub, F.Name) and sub.indices is None:
                    letters = []
                    F.split_letters(sub.word, letters)
                    found.update(letters)
        elif isinstance(node, F.Sum):
            found.update(node.indices)
    return found


def walk(node):
    """Every syntax node under ``node``."""
    yield node
    if isinstance(node, F.Node):
        for name in node.__dataclass_fields__:
            child = getattr(node, name)
            if isinstance(child, F.Node):
                yield from walk(child)
            elif isinstance(child, tuple):
                for item in child:
                    if isinstance(item, F.Node):
                        yield from walk(item)
                    elif isinstance(item, tuple):
                        for sub in item:
                            if isinstance(sub, F.Node):
                                yield from walk(sub)
