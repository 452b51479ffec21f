"""What an op is: its inputs, hyper-parameters and forward definition. Nothing else.

An op module under ``derive/ops/`` builds one ``Op``; the registry collects
them, and derivation, LaTeX, code and tests all follow from it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import sympy as sp

from derive.define.forms import Option
from derive.define.symbols import Intermediate, Tensor

#: How an input's test values are drawn (and what the generated code may assume).
DOMAINS = {
    "real": "any real number",
    "nonzero": "a real number away from the kink at 0",
    "positive": "a positive number",
    "probability": "a probability in (0, 1)",
    "simplex": "a probability vector per row, summing to 1 (checked)",
    "mask": "0 or 1",
    "index": "an integer index into the axis of another input it selects from (no gradient)",
}

#: What the first size of an input stands for in the generated code.
SHAPE_KINDS = {
    "fixed": "every axis is one size symbol",
    "flat": "the only size symbol counts all elements (any shape)",
    "leading": "the first size symbol covers any number of leading axes",
    "channels": "(N, C, ...): the last size symbol covers any number of trailing axes",
}


@dataclass(frozen=True)
class Input:
    """One forward argument: a tensor, whether it gets a gradient, where its values lie."""

    tensor: Tensor
    differentiable: bool = True
    domain: str = "real"
    #: How the article writes one element (``w`` for ``W``) and the whole array.
    element: str | None = None
    matrix: str | None = None
    #: For an integer input: the hyper-parameter whose value it may also hold, out of range (PyTorch's
    #: ``ignore_index``), where a bracket of the definition (``[t_n != ignore_index]``) drops what it selects.
    outside: str = ""

    def __post_init__(self):
        if self.domain not in DOMAINS:
            raise ValueError(f"domain: unknown {self.domain!r}, expected one of {sorted(DOMAINS)}")
        if self.outside and self.domain != "index":
            raise ValueError(f"outside: {self.name} is no integer input (domain 'index'), got {self.outside!r}")

    @property
    def name(self) -> str:
        return self.tensor.name

    @property
    def shape(self) -> tuple:
        return tuple(self.tensor.shape)


def pair(name: str, **assumptions) -> tuple[sp.Symbol, sp.Symbol]:
    """The two integer symbols ``name_h`` and ``name_w`` of a hyper-parameter given per image axis (a
    convolution's stride): ``Hyper((sh, sw), 1)`` takes an int for both or an (h, w) pair, as PyTorch."""
    return tuple(sp.Symbol(f"{name}_{axis}", integer=True, **assumptions) for axis in "hw")


@dataclass(frozen=True)
class Hyper:
    """A keyword-only hyper-parameter with its default and the values tests try.

    ``symbol`` is one symbol, or the pair from ``pair()`` (a value per image axis, height first): the
    keyword then takes an int (both axes) or an (h, w) pair, and its cases may be either."""

    symbol: sp.Symbol | tuple
    default: float | int
    cases: tuple = ()
    doc: str = ""
    #: The values allowed, as a Python condition on the name (``"0 <= p < 1"``); generated code checks it
    #: (each of a pair's values). It may name hyper-parameters listed before it (``"2 * padding <= kernel"``):
    #: of a pair, the same axis's value.
    valid: str = ""
    #: For a default of None: the hyper-parameter whose value it takes (pooling's stride is its kernel).
    default_to: str = ""

    @property
    def is_pair(self) -> bool:
        return isinstance(self.symbol, tuple)

    @property
    def symbols(self) -> tuple:
        """The symbols the definition uses: the pair's two, or the one."""
        return self.symbol if self.is_pair else (self.symbol,)

    @property
    def name(self) -> str:
        return self.symbol[0].name[:-2] if self.is_pair else self.symbol.name

    def bind(self, value) -> dict:
        """Each symbol's value: an int stands for both of a pair's symbols, a pair gives each its own."""
        if not self.is_pair:
            return {self.symbol: value}
        both = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
        if len(both) != 2:
            raise ValueError(f"{self.name}: expected an int or a pair of ints, got {value!r}")
        return dict(zip(self.symbol, both))

    def named_in_valid(self, hypers) -> tuple:
        """The other hyper-parameters among ``hypers`` that ``valid`` names."""
        words = set(re.findall(r"[A-Za-z_]\w*", self.valid))
        return tuple(h for h in hypers if h.name in words and h.name != self.name)

    @property
    def kind(self) -> str:
        """``int``, ``float`` or ``bool``, from the default; generated code converts to it. A ``bool`` is 0 or 1
        in the definition (attention's ``causal`` selects its mask) and, like an ``int``, shapes what is summed."""
        sample = self.default if self.default is not None else next((c for c in self.cases if c is not None), 0)
        if isinstance(sample, tuple):
            sample = sample[0]
        if isinstance(sample, bool):
            return "bool"
        return "int" if isinstance(sample, int) else "float"

    @property
    def whole(self) -> bool:
        """A whole number in the definition (``int`` or ``bool``): checks put it in as an integer."""
        return self.kind in ("int", "bool")


@dataclass(frozen=True)
class Op:
    """A layer type, given by its forward definition alone."""

    name: str
    doc: str
    inputs: tuple[Input, ...]
    #: The output as an intermediate: its definition is the forward pass. A loss has index ().
    output: Intermediate
    #: Outputs besides ``output`` (an LSTM's cell state ``c'``), each with its own upstream gradient:
    #: the forward returns them all, ``(output, *also_outputs)``, and backward takes one gradient each.
    also_outputs: tuple[Intermediate, ...] = ()
    #: Intermediates the forward computes besides those inside ``output``
    #: (such as the probabilities of softmax + cross-entropy), used to fold results.
    extra: tuple[Intermediate, ...] = ()
    hyper: tuple[Hyper, ...] = ()
    shape_kind: str = "fixed"
    #: Intermediates the forward keeps in its cache for the caller (batch norm's mean and variance).
    statistics: tuple[Intermediate, ...] = ()
    #: Conditions on the sizes that the op refuses to run without, each with what it expects, as PyTorch refuses
    #: them (batch norm in training: ``(N * S > 1, "more than 1 value per channel when training")``); the
    #: generated forward checks them.
    requires: tuple[tuple[sp.Expr, str], ...] = ()
    #: Identities the derivation may use, proven from the definitions first: (lhs, rhs).
    theorems: tuple[tuple[sp.Expr, sp.Expr], ...] = ()
    #: The PyTorch function with the same semantics, for cross-checks.
    pytorch: str = ""
    #: That function, for ``derive bench`` and cross-checks of a user's op: called with the inputs as
    #: tensors and the hyper-parameters, by name (import torch inside it: the file loads without torch).
    #: The built-in ops' are in benchmarks/references.py.
    torch_reference: object = field(default=None, compare=False, repr=False)
    #: How the article names the gradient arriving at the output.
    upstream: str = "g"
    #: The description in Chinese, for Chinese documents: its name, a colon, one sentence (``全连接层：...``).
    doc_zh: str = ""
    #: Sizes for tests and checks, by size symbol, where the defaults do not fit together;
    #: ``small_sizes`` for the exact (brute-force) checks.
    test_sizes: dict = field(default_factory=dict, hash=False, compare=False)
    small_sizes: dict = field(default_factory=dict, hash=False, compare=False)
    #: Realistic sizes for ``derive bench``, by size name (``{"N": 256, "D": 1024}``), plus
    #: hyper-parameters other than their defaults (``"padding": 1``). Empty: not benchmarked.
    bench_sizes: dict = field(default_factory=dict, hash=False, compare=False)
    #: Sizes that follow from a size and a hyper-parameter, as ``{size: numerator / hyper}`` (group norm's
    #: ``K = C / groups`` channels per group): the derivation takes them as sizes, the checks give them
    #: that value, and the generated code computes them, refusing a hyper-parameter that does not divide.
    derived_sizes: dict = field(default_factory=dict, hash=False, compare=False)
    #: Where the definition came from, for headers and messages (a user's file, a --def line);
    #: empty for a built-in op, whose definition is ``derive/ops/<name>.py``.
    origin: str = field(default="", compare=False)
    #: Options that select between forward definitions (``derive.define.forms``): every op of the
    #: family has them; ``chosen`` is this form's value of each, ``forms`` (the default form only) the others.
    options: tuple = ()
    chosen: tuple[tuple[str, object], ...] = ()
    forms: tuple = field(default=(), compare=False, hash=False, repr=False)
    #: Option values that make no form, with why (``derive.define.forms.NoForm``): refused.
    absent: tuple = field(default=(), compare=False, hash=False, repr=False)

    def __post_init__(self):
        if self.shape_kind not in SHAPE_KINDS:
            raise ValueError(f"shape_kind: unknown {self.shape_kind!r}")
        names = [i.name for i in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: duplicate input names {names}")
        if self.also_outputs and not self.output.index or any(not o.index for o in self.also_outputs):
            raise ValueError(f"also_outputs: {self.name} has several outputs; a loss (index ()) has one")
        hypers = {s for h in self.hyper for s in h.symbols}
        for pos, h in enumerate(self.hyper):
            for other in h.named_in_valid(self.hyper):
                if other not in self.hyper[:pos] or other.is_pair and not h.is_pair:
                    raise ValueError(f"valid: {self.name}'s {h.name} may name only hyper-parameters before it (a "
                                     f"pair only in a pair's condition), got {other.name} in {h.valid!r}")
        for size, rule in self.derived_sizes.items():
            numerator, denominator = sp.fraction(rule)
            if denominator not in hypers or numerator.free_symbols & hypers:
                raise ValueError(f"derived_sizes: {self.name}'s {size} = {rule} must be a size over a hyper-parameter")

    def __getstate__(self):
        """Pickled (the derivation cache) without ``torch_reference``: a function of the user's
        program, which another process could not import, and no part of the derivation."""
        return {**self.__dict__, "torch_reference": None}

    @property
    def all_forms(self) -> tuple:
        """This op and its other forms (the default form first); an op without options is its only form."""
        return (self, *self.forms)

    def form(self, **values) -> "Op":
        """The form with these option values (the others at their defaults): ``op.form(reduction="sum")``,
        ``op.form(b=None)``; a ValueError names an unknown option or value and the choices."""
        known = {o.name: o for o in self.options if isinstance(o, Option)}  # an Axis chooses no form
        for name, value in values.items():
            if name not in known:
                have = f"its options are {', '.join(known)}" if known else "it has none"
                raise ValueError(f"option: {self.name} has no option {name!r}; {have}")
            known[name].check(value)
        wanted = dict(self.chosen, **values)
        for candidate in self.all_forms:
            if dict(candidate.chosen) == wanted:
                return candidate
        for chosen, why in self.absent:
            if dict(chosen) == wanted:
                raise ValueError(why)
        raise ValueError(f"option: {self.name} has no form {wanted}")  # forms() makes every combination

    @property
    def names(self) -> set:
        """Every name the definition uses: inputs, intermediates, sizes, hyper-parameters."""
        return {i.name for i in self.inputs} | {n.name for n in self.intermediates if n is not self.output} \
            | {s.name for s in self.sizes} | {h.name for h in self.hyper}

    @property
    def objective(self) -> str:
        """What the objective is called in print: ``E``, unless the definition uses that name."""
        return next(n for n in ("E", "L", "J", "Q") if n not in self.names)

    @property
    def upstream_label(self) -> str:
        """The upstream gradient's name: ``g``, unless the definition uses it (then ``gbar``, ``\\bar{g}``)."""
        return "g" if "g" not in self.names else "gbar"

    @property
    def is_builtin(self) -> bool:
        return not self.origin

    @property
    def definition_source(self) -> str:
        """Where the definition is written: ``derive/ops/<name>.py``, a user's file, a --def line."""
        return self.origin or f"derive/ops/{self.name}.py"

    @property
    def outputs(self) -> tuple[Intermediate, ...]:
        return (self.output, *self.also_outputs)

    @property
    def is_loss(self) -> bool:
        return not self.output.index

    @property
    def differentiable(self) -> tuple[Input, ...]:
        return tuple(i for i in self.inputs if i.differentiable)

    def input(self, name: str) -> Input:
        for i in self.inputs:
            if i.name == name:
                return i
        raise ValueError(f"input: {self.name} has no input {name!r}; it has {[i.name for i in self.inputs]}")

    @property
    def intermediates(self) -> tuple[Intermediate, ...]:
        """Every intermediate, in an order where each comes after those it uses."""
        order: list[Intermediate] = []

        def visit(node):
            for sub in sp.preorder_traversal(node.definition):
                if isinstance(sub, Intermediate) and sub not in order and sub != node:
                    visit(sub)
            if node not in order:
                order.append(node)

        for node in (*self.extra, *self.also_outputs, self.output):
            visit(node)
        return tuple(order)

    @property
    def couples_samples(self) -> bool:
        """Whether a sample's result depends on the other samples of the batch (batch norm's
        statistics sum over ``N``); a loss's sum over the batch adds results and does not count."""
        batch = next((s for s in self.sizes if s.name == "N"), None)
        nodes = [n for n in self.intermediates if not (self.is_loss and n is self.output)]
        return batch is not None and any(
            isinstance(sub, sp.Sum) and any(hi - lo + 1 == batch for _, lo, hi in sub.limits)
            for n in nodes for sub in sp.preorder_traversal(n.definition))

    @property
    def sizes(self) -> tuple[sp.Symbol, ...]:
        """The size symbols, in order of first appearance."""
        seen: list[sp.Symbol] = []
        for shape in [i.shape for i in self.inputs] + [node.shape for node in self.intermediates]:
            for s in shape:
                for sym in sorted(sp.sympify(s).free_symbols, key=str):
                    if sym not in seen and sym not in {s for h in self.hyper for s in h.symbols} and sym not in self.derived_sizes:
                        seen.append(sym)
        return tuple(seen)

    def assumptions(self) -> tuple[tuple[sp.Expr, sp.Expr], ...]:
        """Identities that the inputs' domains guarantee (a simplex sums to 1)."""
        found = []
        for inp in self.inputs:
            if inp.domain == "simplex":
                *lead, last = inp.shape
                idx = [sp.Symbol(f"a{i}", integer=True) for i in range(len(lead))]
                k = sp.Symbol("a_last", integer=True)
                found.append((sp.Sum(inp.tensor[(*idx, k)], (k, 0, last - 1)), sp.S.One))
        return tuple(found)
