"""``derive verify``: is a formula derived by hand right, and if not, where does it go wrong?

The formula is read by our own grammar (``derive.verifier.formula``), its names
looked up in the op's or chain's table (``derive.verifier.meaning``) before
anything is derived, and compared with the machine's derivation
(``derive.verifier.quantities``) in two ways:

* numerically, at random inputs (exact two-decimal numbers, every value
  evaluated to 50 digits by SymPy's adaptive evalf on mpmath) and at several
  small sizes, over every element: the two sides agree when both are finite
  and differ by at most 1e-30 of their size; a mismatch, confirmed at 100
  digits, is a concrete counterexample; a value that cannot be computed to
  that precision decides nothing;
* symbolically: first for all sizes at once (the index forms agree once
  their sums are normalised), else exactly at small explicit sizes (the
  difference cancels element by element, as ``check.brute_force`` does),
  with a time limit.

Where the numbers cannot decide and no proof is found, the verdict says so
(UNDECIDED). A wrong formula is then tried against the typical mistakes (a
flipped sign, a transposed index or two letters swapped, a missing
activation derivative, a missing or extra 1/N, a sum over the wrong index,
a formula right only at some hyper-parameter values) by changing one thing
at a time and checking again.
"""
from __future__ import annotations

import dataclasses
import itertools
import re
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import mpmath
import numpy as np
import sympy as sp
from sympy.core.evalf import PrecisionExhausted

from derive.engine import check
from derive.verifier import formula as F
from derive.verifier.meaning import (BATCH_INDEX, Meaning, Resolver, ShapeMismatch, canonical, index, index_letters, sample_mode,
                      transform, vector_mode, walk)
from derive.verifier.quantities import (PRECISION, Target, World, at as at_index, chain_world, op_world, size_key,
                                       unroll)
from derive.engine.rewrite import canonical_bound, normalize
from derive.define.symbols import FirstMax, Intermediate, IntermediateElement, Iverson, rebuild, substitute_indices

ARTICLE = ("linear", "sigmoid", "linear", "sigmoid", "half_sse")
POINTS = 2  # random points per size set
EXTRA_POINTS = 2  # further points for the elements a point could not decide
MAX_ELEMENTS = 48  # elements compared per size set
CONFIRM_DIGITS = 2 * PRECISION  # a mismatch must persist with every value computed to twice the digits
MAX_CONFIRMATIONS = 4  # mismatches checked so per formula; the others decide nothing
AGREEMENT = 1e-30  # |a - b| <= AGREEMENT max(1, |a|, |b|): far below 1e-16, far above the rounding at 50 digits
EVALUATION_SECONDS = 0.5  # one value; a formula slower than that decides nothing numerically
NUMERIC_SECONDS = 2.0  # all of a formula's values together
#: The numbers' own context: differences and ratios of values good to 100 digits are taken to more digits
#: than that (mpmath's shared context, which SymPy and users may set, counts 15).
MP = mpmath.MPContext()
MP.dps = CONFIRM_DIGITS + 20
PROOF_SECONDS = 1.5
HINT_SECONDS = 1.5


# -- the result ------------------------------------------------------------------------

@dataclass(frozen=True)
class Counterexample:
    """Where the formula and the derivation differ: sizes, the element, the inputs, both values."""

    sizes: dict  # size name -> int
    at: dict  # index letter -> int (counting from 0)
    inputs: dict  # tensor name -> value (nested lists of numbers)
    expected: object  # an mpmath number, good to 50 digits (complex(...) for a Python number)
    got: object  # the same, or None: undefined there

    def lines(self) -> list[str]:
        sizes = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.sizes.items())
        at = ", ".join(f"{k}={v}" for k, v in self.at.items()) or "-"
        out = [f"  sizes: {sizes}", f"  element: {at} (indices count from 0)"]
        for name, value in self.inputs.items():
            out.append(f"  {name} = {value}")
        digits = _digits_to_tell(self.expected, self.got)
        out.append(f"  derived: {_number(self.expected, digits)}")
        out.append(f"  yours:   {_number(self.got, digits) if self.got is not None else 'undefined (a division by zero, or an element outside its tensor)'}")
        return out


@dataclass(frozen=True)
class Verdict:
    """The answer: equivalent or not (or undecided), how that was shown, and for a wrong formula a
    counterexample and hints."""

    equivalent: bool
    quantity: str  # what was checked, e.g. "dE/dw_{kj} of linear"
    derived: str  # the machine's formula, LaTeX
    formula: str  # what the user typed
    form: str  # "index form", "matrix form", "one sample"...
    proof: str = ""  # the symbolic proof, or why there is none
    numeric: str = ""  # the numeric evidence
    counterexample: Counterexample | None = None
    hints: tuple = ()
    reason: str = ""  # why not equivalent (or undecided), when there is no counterexample or more to say
    seconds: float = 0.0
    decided: bool = True  # False: neither the numbers nor a proof could tell (``equivalent`` is then False)

    @property
    def exit_code(self) -> int:
        """0 equivalent, 1 not equivalent, 3 undecided."""
        return 0 if self.equivalent else 1 if self.decided else 3

    def report(self) -> str:
        head = "EQUIVALENT" if self.equivalent else "NOT EQUIVALENT" if self.decided else "UNDECIDED"
        lines = [f"{head}: {self.quantity} ({self.form})", f"  derived: {self.derived}"]
        if self.equivalent:
            lines += [f"  symbolic: {self.proof}", f"  numeric: {self.numeric}"]
        elif not self.decided:
            lines += [f"  {self.reason}", f"  symbolic: {self.proof}", f"  numeric: {self.numeric}"]
        else:
            if self.reason:
                lines.append(f"  {self.reason}")
            if self.counterexample is not None:
                lines.append("counterexample:")
                lines += self.counterexample.lines()
            for hint in self.hints:
                lines.append(f"hint: {hint}")
            if not self.hints:
                lines.append("hint: none of the typical mistakes (sign, transposed index, activation derivative, "
                             "1/N or another count, sum index, one term missing, extra or wrong) explains the "
                             "difference")
        return "\n".join(lines)


# -- the API ---------------------------------------------------------------------------

def verify(formula: str, op: str | None = None, wrt: str | None = None, chain=None, syntax: str = "auto",
           seed: int = 0) -> Verdict:
    """Check a hand-derived ``formula`` for a gradient of ``op`` (``wrt``: an input, e.g. ``"W"``) or of a
    ``chain`` (op names, or ``"article"``; ``wrt``: a quantity such as ``"delta_j"`` or ``"w_kj"``).

    ``wrt`` may be left out when the formula names its left-hand side
    (``\\frac{\\partial E}{\\partial w_{kj}} = ...``). Malformed input raises
    ``ValueError`` (``derive.verifier.formula.FormulaError``) naming the position.
    """
    start = time.perf_counter()
    world = world_of(op, chain)
    tree = canonical(world.table, F.parse(formula, syntax))
    sample = sample_mode(world.table, tree)
    designators = []
    formulas = []
    for position, part in enumerate(tree.parts):
        found = _designator(world, part, sample, formula) if position < len(tree.parts) - 1 and not formulas \
            else None
        if found is None:
            formulas.append(part)
        else:
            designators.append(found)
    target, letters = _choose_target(world, wrt, designators, sample, formula)
    verdicts = [_check_part(world, target, letters, part, sample, formula, seed) for part in formulas]
    verdict = next((v for v in verdicts if not v.equivalent and v.decided), None) or \
        next((v for v in verdicts if not v.decided), verdicts[-1])
    return dataclasses.replace(verdict, seconds=time.perf_counter() - start)


def symbols(op: str | None = None, chain=None) -> str:
    """The names a formula may use for ``op`` or ``chain``, with their meaning and index ranges."""
    world = world_of(op, chain)
    table = world.table
    sample = table.default_sample
    lines = [f"Symbols for {world.title}" + (" (the article's single-sample form; add the batch index n "
                                              "for the batch form)" if sample else "") + ":"]
    for e in table.entries:
        if e.kind in ("size", "constant", "objective"):
            continue
        ranges = ", ".join(f"{c} < {s}" for c, s in zip(e.letters_in(sample), e.shape_in(sample)))
        whole = _array_name(e, sample, table)
        lines.append(f"  {e.tex(sample):16} {e.meaning}; {ranges}" + (f"; as a whole: {whole}" if whole else ""))
    sizes = [e for e in table.entries if e.kind == "size"]
    lines.append("  sizes: " + "; ".join(f"{e.names[0]} ({e.meaning})" for e in sizes))
    consts = [e for e in table.entries if e.kind == "constant"]
    if consts:
        lines.append("  constants: " + "; ".join(f"{e.names[0]} ({e.meaning})" for e in consts))
    if table.vector_letters:
        along = ", ".join(table.vector_letters)
        lines.append(f"Vector form (as `derive latex {world.title} --form matrix` prints it): a whole name runs "
                     f"along {along} if it has {'that index' if len(table.vector_letters) == 1 else 'those indices'}, "
                     f"else it is a scalar; \\vec{{a}}^{{T}} \\vec{{b}} and \\mathbf{{1}}^{{T}} \\vec{{a}} sum along "
                     f"{along}; \\odot is elementwise.")
    lines.append("Quantities (--wrt): " + ", ".join(_wrt_name(t, sample) for t in world.targets))
    if table.coupled_by:
        lines.append(f"No one-sample form: {', '.join(table.coupled_by)} couples the samples of a batch, "
                     "so every batched quantity keeps its batch index n.")
    elif not sample and table.batch_size is not None:
        lines.append("One sample: leave out the batch index n everywhere (x_{j}, \\delta_{k}); then N = 1.")
    lines.append("Functions: \\exp or e^{...}, \\log, \\ln, \\tanh, \\sigma (the sigmoid; \\sigma^{2}_{c} is a name), "
                 "\\sqrt; [x > 0] and [0 \\le a \\le K - 1] are 1 where they hold, else 0.")
    lines.append("Plain syntax: delta[k]*y[j], sum(delta[k]*w[k,j], k), delta.T @ X, sum(delta, axis=0).")
    return "\n".join(lines)


@lru_cache(maxsize=32)
def _op_world(name: str) -> World:
    from derive.define.registry import get
    return op_world(get(name))


@lru_cache(maxsize=32)
def _chain_world(names: tuple) -> World:
    from derive.engine.chain import chain as make_chain
    return chain_world(make_chain(names))


def world_of(op, chain) -> World:
    if op == "article" and chain is None:
        chain, op = ARTICLE, None
    if (op is None) == (chain is None):
        raise ValueError("op: give an op name or a chain, not both and not neither")
    if op is not None:
        return _op_world(op)
    if chain == "article":
        chain = ARTICLE
    if isinstance(chain, str):
        chain = [n.strip() for n in chain.split(",") if n.strip()]
    return _chain_world(tuple(chain))


def _array_name(entry, sample, table) -> str:
    """How the article writes the whole array: W, X, \\boldsymbol{\\delta}, \\vec{b}, W_2, \\vec{y}_1; in the
    vector form of a per-row or per-channel op, \\hat{\\vec{x}} along the vector or \\gamma, a scalar."""
    rank = len(entry.shape_in(sample))
    if table.vector_letters:
        along = set(entry.letters_in(sample)) & set(table.vector_letters)
        return (_decorated(entry.head(), r"\vec") if along else entry.head()) if rank else ""
    shared = sum(1 for e in table.entries if set(e.names) & set(entry.names)) > 1
    layer = f"_{entry.layer}" if entry.layer is not None and shared else ""
    upper = next((w for w in entry.names if len(w) == 1 and w.isupper()), None)
    if rank == 2:
        return f"{upper}{layer}" if upper else _decorated(entry.head(), r"\boldsymbol") + layer
    if rank == 1:
        return _decorated(entry.head(), r"\vec") + layer
    return ""


def _decorated(tex: str, command: str) -> str:
    """``command`` around a printed name, inside its accent and before its superscript:
    ``\\vec{\\sigma}^{2}``, ``\\hat{\\vec{x}}``, ``\\vec{y}^{(3)}``."""
    base, sup = re.fullmatch(r"(.+?)((?:\^\{[^{}]*\})?)", tex).groups()
    accent = re.fullmatch(r"\\(hat|tilde|bar)\{(.+)\}", base)
    if accent:
        return rf"\{accent[1]}{{{command}{{{accent[2]}}}}}{sup}"
    return f"{command}{{{base}}}{sup}"


def _wrt_name(target: Target, sample: bool) -> str:
    """What --wrt accepts for a target: the op's input name, or the chain's quantity (delta_j, w_kj)."""
    entry = target.entry
    letters = "".join(target.letters(sample))
    if entry.layer is None and hasattr(entry.value, "label") and target.is_gradient:
        name = str(entry.value.label)
        return f"{name} ({entry.names[0]}_{letters})" if name != entry.names[0] else f"{name}_{letters}"
    return f"{entry.names[0]}_{letters}"


# -- choosing the quantity -----------------------------------------------------------

def _designator(world: World, part: F.Node, sample: bool, text: str):
    """``\\frac{\\partial E}{\\partial w_{kj}}`` or an error term ``\\delta_j`` on the left: (entry, letters)."""
    resolver = Resolver(world.table, sample, text)
    if isinstance(part, F.Frac) and isinstance(part.num, F.Partial) and isinstance(part.den, F.Partial):
        if not (isinstance(part.num.arg, F.Name) and part.num.arg.word == "E"):
            raise F.FormulaError("the left-hand side must be a derivative of E", part.pos or None, text)
        wrt = part.den.arg
        if not isinstance(wrt, F.Name):
            raise F.FormulaError("differentiate by one tensor element, such as w_{kj}", part.pos or None, text)
        entry = resolver.lookup(wrt)
        if entry is None:
            raise F.FormulaError(f"unknown symbol {wrt.word!r}", wrt.pos or None, text)
        return entry, wrt.indices, wrt
    if isinstance(part, F.Name) and part.word in ("delta",):
        entries = world.table.named(part.word)
        if entries and all(e.kind == "error term" for e in entries):
            return resolver.lookup(part), part.indices, part
    return None


def _choose_target(world: World, wrt, designators, sample, text):
    """The quantity (from ``wrt`` and/or the left-hand side) and the letters the formula writes it with."""
    chosen = []
    if wrt is not None:
        chosen.append(_wrt_target(world, wrt, sample) + (None,))
    for entry, letters, node in designators:
        chosen.append((_target_of(world, entry), letters, node))
    if not chosen:
        raise ValueError("wrt: say which gradient the formula is for (--wrt, e.g. "
                         f"{', '.join(_wrt_name(t, sample) for t in world.targets)}), or write its left-hand side")
    target = chosen[0][0]
    for other, letters, node in chosen[1:]:
        if other is not target:
            raise F.FormulaError(f"the left-hand side names {other.short(sample)}, not {target.short(sample)}",
                                 node.pos if node else None, text)
    letters = next((l for _, l, _ in chosen if l is not None), None)
    if letters is not None:
        if not all(isinstance(l, str) for l in letters):
            raise F.FormulaError("the left-hand side's indices must be letters", None, text)
        expected = target.letters(sample)
        if len(letters) != len(expected):
            raise F.FormulaError(f"{target.short(sample)} takes {len(expected)} indices", None, text)
        if world.table.letter_sizes is not None and tuple(l.rstrip("'") for l in letters) != expected:
            raise F.FormulaError(f"the left-hand side writes {''.join(letters)}; in the article's notation it is "
                                 f"{target.short(sample)} (the later layer's node first)", None, text)
    return target, letters


def _lookup_either_form(world, node, sample, text):
    """--wrt may name a chain's quantity as the article does (delta_j) even for a formula in batch form."""
    try:
        return Resolver(world.table, sample, text).lookup(node)
    except F.FormulaError:
        if sample or world.table.batch_size is None:
            raise
        return Resolver(world.table, True, text).lookup(node)


def _target_of(world: World, entry) -> Target:
    if entry.kind == "intermediate" and entry.names[0] == "net":  # dE/dnet_j is the error term delta_j
        for t in world.targets:
            if not t.is_gradient and t.entry.layer == entry.layer:
                return t
    return world.target(entry)


def _wrt_target(world: World, wrt: str, sample: bool):
    if not isinstance(wrt, str) or not wrt.strip():
        raise ValueError("wrt: expected a name such as W, x, delta_j or w_kj")
    text = wrt.strip()
    for t in world.targets:  # an op input by name: W, x, b
        if text in (t.entry.value.name if hasattr(t.entry.value, "name") else "",) and t.entry.layer is None:
            return t, None
    import re
    match = re.fullmatch(r"(\\?[A-Za-z]+)_([A-Za-z']+)", text)
    if match:
        text = f"{match.group(1)}_{{{match.group(2)}}}"
    try:
        tree = F.parse(text, "latex")
    except F.FormulaError as error:
        raise ValueError(f"wrt: {str(error).removeprefix('formula: ')}") from None
    part = tree.parts[0]
    if len(tree.parts) != 1:
        raise ValueError("wrt: name one quantity")
    known = ", ".join(_wrt_name(t, sample) for t in world.targets)
    try:
        if isinstance(part, F.Frac):
            found = _designator(world, F.Equation(1, (part, F.Num(0, 0))).parts[0], sample, text)
            entry, letters = found[0], found[1]
        elif isinstance(part, F.Name):
            entry, letters = _lookup_either_form(world, part, sample, text), part.indices
    except F.FormulaError as error:  # about the --wrt text, not the formula
        raise ValueError(f"wrt: {error.message.split(';')[0]}; the quantities are {known}") from None
    if isinstance(part, (F.Frac, F.Name)):
        if entry is None:
            raise ValueError(f"wrt: unknown quantity {wrt!r}; the quantities are {known}")
    else:
        raise ValueError(f"wrt: expected a name such as W, x, delta_j or w_kj, got {wrt!r}")
    target = _target_of(world, entry)
    if letters is not None and world.table.letter_sizes is not None:
        written = tuple(l.rstrip("'") for l in letters)
        if written not in (target.letters(True), target.letters(False)):
            raise ValueError(f"wrt: {wrt} is {target.short(sample)} in the article's notation")
        letters = None
    return target, letters


# -- checking one formula -------------------------------------------------------------

def _check_part(world: World, target: Target, letters, part, sample, text, seed) -> Verdict:
    derived = _derived_tex(world, target, sample)
    form = _form(world, part, sample) + (", one sample" if sample else "")
    base = dict(quantity=f"{target.short(sample)} of {world.title}", derived=derived, formula=text, form=form)
    try:
        meaning = _resolve(world, target, letters, part, sample, text)
    except ShapeMismatch as error:
        return Verdict(False, reason=f"{error}: the shapes differ", **base)
    study = _Study(world, target, meaning, seed)
    mismatch = study.compare()
    if mismatch is None and not meaning.clashes:
        if study.undecided:  # only an exact proof for all sizes can decide
            proof = _prove(world, target, meaning, study, at_sizes=False)
            if proof.startswith("equal for all sizes"):
                return Verdict(True, proof=proof, numeric=study.evidence() + "; " + study.why_undecided().replace(
                    ", and no exact proof was found", "").replace("cannot decide: ", "undecided "), **base)
            return Verdict(False, decided=False, reason=study.why_undecided(), proof=proof,
                           numeric=study.evidence(), **base)
        proof = _prove(world, target, meaning, study)
        return Verdict(True, proof=proof, numeric=study.evidence(), **base)
    hints = _hints(world, target, letters, meaning, part, sample, text, study)
    reasons = []
    if meaning.clashes:
        reasons.append("the formula is only defined when some sizes agree: " + "; ".join(meaning.clashes))
    extra = [c for c in meaning.free if c not in target.letters(sample)]
    if extra:
        reasons.append(f"free {'index' if len(extra) == 1 else 'indices'} {', '.join(extra)} not in "
                       f"{target.short(sample)}")
    return Verdict(False, counterexample=mismatch, hints=tuple(hints), reason="; ".join(reasons), **base)


def _form(world, part, sample) -> str:
    if vector_mode(world.table, part, sample):
        return "vector form"
    return "matrix form" if _is_matrix(world, part) else "index form"


def _is_matrix(world, part) -> bool:
    letters = index_letters(part)  # a bracket's w is the column index, not the weights
    for node in walk(part):
        if isinstance(node, (F.Transpose, F.Ones, F.AxisSum)):
            return True
        if isinstance(node, F.Name) and node.indices is None and node.word != "e" and node.word not in letters:
            entries = world.table.named(node.word)
            if entries and entries[0].rank:
                return True
    return False


def _derived_tex(world: World, target: Target, sample: bool) -> str:
    from derive.engine.chain import sample_form
    expr = sample_form(target.expr) if sample else target.expr
    return f"{target.name(sample)} = {world.printer.doprint(expr)}"


def _resolve(world, target, letters, part, sample, text) -> Meaning:
    """The formula's meaning, its free letters renamed to the target's (by the left-hand side, if given)."""
    want = target.letters(sample)
    axes = target.axes(sample)
    written = tuple(letters) if letters is not None else want
    free_sizes = {u: size for u, (_, size) in zip(written, axes)}
    resolver = Resolver(world.table, sample, text, free_sizes, quantity=target.short(sample),
                        vector=vector_mode(world.table, part, sample))
    meaning = resolver.finish(resolver.resolve(part), axes)
    if written != want:
        renames = {index(u): index(t) for u, t in zip(written, want)}
        meaning.expr = substitute_indices(meaning.expr, renames)
        mapping = dict(zip(written, want))
        meaning.free = tuple(sorted(mapping.get(c, c) for c in meaning.free))
        meaning.ranges = {mapping.get(c, c): s for c, s in meaning.ranges.items()}
    return meaning


class _Study:
    """The numeric comparison: size sets, random points, every element; kept for the hints.

    Each element at each point agrees, differs, or is undecided (a value that
    cannot be computed to the precision, or the derivation undefined there);
    an undecided element gets further points. A mismatch counts only once
    confirmed with every value computed to ``CONFIRM_DIGITS``.
    """

    def __init__(self, world: World, target: Target, meaning: Meaning, seed: int, size_sets=None):
        self.world, self.target, self.meaning = world, target, meaning
        self.sample = meaning.sample
        self.size_sets = size_sets or world.size_sets(meaning.tied, meaning.sample)
        self.seed = seed
        self.runs = []  # (sizes, elements [(at, unrolled target)], points [values], expected[p][e], got[p][e])
        self.compared = 0
        self.wrong_off_kinks = False  # a mismatch at a random point, not only at a kink
        self.undecided = []  # (sizes, element, why) where no point decided
        self.first_run = None  # the run the counterexample comes from
        self._slow = ""  # why the formula is not evaluated again (it took too long)
        self._spent = 0.0  # seconds spent evaluating the formula
        self._confirmations = 0
        self.agreed = 0  # element values at which both sides agree

    def ranges(self) -> list:
        """(index symbol, size) for every index to run over: the target's and the formula's own free ones."""
        out = list(zip(self.target.index, self.target.entry.shape))
        for letter in self.meaning.free:
            symbol = index(letter)
            if symbol not in self.target.index:
                out.append((symbol, self.meaning.ranges[letter]))
        return out

    def elements(self, sizes):
        ranges = [(s, int(sp.sympify(n).xreplace(sizes))) for s, n in self.ranges()]
        every = list(itertools.product(*(range(n) for _, n in ranges)))
        if len(every) > MAX_ELEMENTS:
            picked = np.random.default_rng([self.seed, size_key(sizes)]).choice(len(every), MAX_ELEMENTS,
                                                                                  replace=False)
            every = [every[p] for p in sorted(picked)]
        fixed = {BATCH_INDEX: 0} if self.sample else {}  # one sample: n = 0
        return [{**fixed, **dict(zip((s for s, _ in ranges), idx))} for idx in every]

    def compare(self) -> Counterexample | None:
        """The first element where the formula and the derivation differ, confirmed, or None."""
        first = None
        for sizes in self.size_sets:
            elements = self.elements(sizes)
            user_all = unroll(self.meaning.expr, sizes)
            user_forms = [at_index(user_all, at) for at in elements]
            points, expected, got = [], [], []
            kinks = [False] * POINTS + ([True] if self.world.has_kinks and not self.runs else [])
            undecided = {e: "" for e in range(len(elements))}  # element -> why, until a point decides it
            for point, at_kink in enumerate(kinks + [False] * EXTRA_POINTS):
                extra = point >= len(kinks)  # a further point, for the elements still undecided
                if extra and (first is not None or not undecided):
                    break
                values, exp, yours = self._at_point(sizes, elements, user_forms, point, at_kink)
                if not extra:
                    points.append(values)
                    expected.append(exp)
                    got.append(yours)
                    self.compared += len(elements)
                for e in sorted(undecided) if extra else range(len(elements)):
                    state = _state(exp[e], yours[e])
                    if state == "differs":
                        self.wrong_off_kinks |= not at_kink
                        if first is not None:
                            undecided.pop(e, None)
                        elif self._confirmed(sizes, elements[e], user_forms[e], point, at_kink, exp[e], yours[e]):
                            first = self._counterexample(sizes, elements[e], values, exp[e], yours[e])
                            self.first_run = len(self.runs)
                            undecided.pop(e, None)
                        elif e in undecided:
                            undecided[e] = (f"your formula's value changes when every value is computed to "
                                            f"{CONFIRM_DIGITS} digits")
                    elif state == "agrees":
                        self.agreed += not extra
                        undecided.pop(e, None)
                    elif e in undecided:
                        undecided[e] = _why_undecided(exp[e], yours[e])
            self.undecided += [(sizes, elements[e], why) for e, why in undecided.items()]
            self.runs.append((sizes, elements, points, expected, got))
            if first is not None and len(self.runs) >= 2:
                break
        return first

    def _at_point(self, sizes, elements, user_forms, point, at_kink):
        """The point's values, and the derivation's and the formula's value at each element."""
        values = self.world.point(sizes, self.seed, point, at_kink)
        expected = self.world.expected(self.target, sizes, elements, values, lambda form: _evaluate(form, values))
        return values, expected, [self._yours(form, values, PRECISION) for form in user_forms]

    def _yours(self, form, values, digits):
        """The formula's value; once one value took too long, or all of them together, no more."""
        if self._slow:
            return _Unknown(self._slow)
        start = time.perf_counter()
        value = _evaluate(form, values, digits)
        self._spent += time.perf_counter() - start
        if isinstance(value, _Unknown) and value.slow:
            self._slow = value.why
        elif self._spent > NUMERIC_SECONDS:
            self._slow = f"takes over {NUMERIC_SECONDS} s to evaluate at the elements compared"
        return value

    def _confirmed(self, sizes, at, user_form, point, at_kink, expected, got) -> bool:
        """Whether a mismatch is real: with every value computed to ``CONFIRM_DIGITS`` both sides keep
        their values (SymPy's evalf can misjudge its accuracy, as in log(e^A + y) - A) and still differ."""
        if self._confirmations >= MAX_CONFIRMATIONS:
            return False
        self._confirmations += 1
        values = self.world.point(sizes, self.seed, point, at_kink, CONFIRM_DIGITS)
        derived = self.world.expected(self.target, sizes, [at], values,
                                      lambda form: _evaluate(form, values, CONFIRM_DIGITS))[0]
        yours = self._yours(user_form, values, CONFIRM_DIGITS)
        kept = _state(expected, derived) == "agrees" and (got is yours is None or _state(got, yours) == "agrees")
        return kept and _state(derived, yours) == "differs"

    def matches(self, expr: sp.Expr, yours: bool = False) -> bool:
        """Whether ``expr`` equals the target (or, with ``yours``, the formula) at every element and
        point already drawn."""
        for sizes, elements, points, expected, got in self.runs:
            whole = unroll(expr, sizes)
            forms = [at_index(whole, at) for at in elements]
            for p, values in enumerate(points):
                for e, form in enumerate(forms):
                    if _state((got if yours else expected)[p][e], _evaluate(form, values)) != "agrees":
                        return False
        return True

    def evidence(self) -> str:
        sets = "; ".join(self.world.describe(sizes) for sizes, *_ in self.runs)
        points = sum(len(points) for _, _, points, _, _ in self.runs)
        where = f"{self.compared} element values" if self.agreed == self.compared else \
            f"{self.agreed} of {self.compared} element values, the others undecided"
        return (f"equal within {AGREEMENT:g} (every value computed to {PRECISION} digits) at {points} random "
                f"points ({where}) at sizes {sets}")

    def why_undecided(self) -> str:
        sizes, at, why = self.undecided[0]
        element = ", ".join(f"{k}={v}" for k, v in at.items() if not (self.sample and k == BATCH_INDEX)) or "-"
        more = f" (and {len(self.undecided) - 1} more elements)" if len(self.undecided) > 1 else ""
        return (f"cannot decide: at sizes {self.world.describe(sizes, self.sample)}, element {element}{more}, "
                f"{why}, at every point tried, and no exact proof was found")

    def _counterexample(self, sizes, at, values, expected, got) -> Counterexample:
        inputs = {}
        for base, _ in self.world.independent:
            shape = [int(sp.sympify(s).xreplace(sizes)) for s in base.shape]
            sample = self.sample and _batched(base, self.world)
            array = np.empty(shape, dtype=object)
            for idx in np.ndindex(*shape):
                array[idx] = float(values[base[idx] if idx else base])
            if sample:
                array = array[0]
            inputs[_input_name(base, self.world, self.sample)] = _nested(array)
        shown = {str(k): v for k, v in at.items() if not (self.sample and k == BATCH_INDEX)}
        size_names = {self.world.label(k): (int(v) if k in self.world.sizes else float(v)) for k, v in sizes.items()
                      if not (self.sample and k == self.world.table.batch_size)}
        return Counterexample(size_names, shown, inputs, expected, got)


@dataclass(frozen=True)
class _Unknown:
    """A value that could not be computed to the digits asked for: why."""

    why: str
    slow: bool = False


def _state(expected, got) -> str:
    """agrees, differs (the formula undefined where the derivation is defined differs too), or undecided."""
    if expected is None or isinstance(expected, _Unknown) or isinstance(got, _Unknown):
        return "undecided"
    if got is None:
        return "differs"
    return "agrees" if abs(expected - got) <= AGREEMENT * max(1, abs(expected), abs(got)) else "differs"


def _why_undecided(expected, got) -> str:
    if isinstance(got, _Unknown):
        return f"your formula {got.why}"
    if isinstance(expected, _Unknown):
        return f"the derivation {expected.why}"
    return "the derivation is undefined"


def _batched(base, world) -> bool:
    return any(e.value is base and e.batch_axis is not None for e in world.table.entries)


def _input_name(base, world, sample) -> str:
    entry = next((e for e in world.table.entries if e.value is base), None)
    if entry is None:
        return str(base)
    layer = f" (layer {entry.layer})" if entry.layer is not None else ""
    return f"{entry.tex(sample)}{layer}"


def _nested(array):
    if not isinstance(array, np.ndarray):
        return round(float(array), 6)
    if array.ndim == 0:
        return round(float(array[()]), 6)
    return [_nested(a) for a in array]


def _evaluate(form: sp.Expr, values: dict, digits: int = PRECISION):
    """``form``'s value at ``values`` as an mpmath number good to ``digits`` digits (SymPy's evalf raises
    its working precision where terms cancel); None where it is undefined (a division by zero, an
    element outside its tensor); an ``_Unknown`` where it cannot be computed so precisely, or in time."""
    try:
        with time_limit(EVALUATION_SECONDS):
            number = sp.N(form.xreplace(values), digits, strict=True, maxn=8 * digits)
    except _Timeout:
        return _Unknown(f"takes over {EVALUATION_SECONDS} s to evaluate", slow=True)
    except PrecisionExhausted:
        return _Unknown(f"cannot be computed to {digits} digits")
    except (ArithmeticError, ValueError, TypeError, RecursionError) as error:  # a number too large to write
        return _Unknown(f"cannot be computed ({type(error).__name__})")
    if number.free_symbols or number.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
        return None
    value = MP.convert(number._to_mpmath(int(digits * 3.33) + 16))
    return value if MP.isfinite(value) else None


def _close(a, b) -> bool:
    """Two numbers equal as the verdict counts equal (a hint's ratio and a count, say)."""
    return _state(a, b) == "agrees"


def _same_ratio(a, b) -> bool:
    """Two ratios equal relative to their size (two tiny ratios are not one constant)."""
    return abs(a - b) <= AGREEMENT * max(abs(a), abs(b))


def _number(z, digits: int = 6) -> str:
    if z is None:
        return "undefined"
    z = MP.mpc(z)
    if abs(z.imag) > 1e-12 * max(1, abs(z.real)):
        return f"{_real(z.real, digits)}{'+' if z.imag >= 0 else '-'}{_real(abs(z.imag), digits)}i"
    return _real(z.real, digits)


def _real(x, digits: int) -> str:
    """``digits`` digits; beyond about 10^(10^6) only the size (writing out its exponent takes minutes)."""
    bits = MP.mag(x) if x else 0
    if abs(bits) < 3_000_000:
        return MP.nstr(x, digits)
    sign, tiny = "-" if x < 0 else "", "-" if bits < 0 else ""
    if abs(bits).bit_length() >= 1000:
        return f"{'below' if tiny else 'beyond'} {sign}10^{{{tiny}10^{{300}}}} in size"
    return f"about {sign}10^{{{tiny}{abs(bits) * 0.30103:.3g}}}"


def _digits_to_tell(a, b) -> int:
    """Enough digits to show that two close numbers differ (6 at least, 50 at most)."""
    if a is None or b is None:
        return 6
    a, b = MP.mpc(a), MP.mpc(b)
    if a == b or not abs(a) or abs(MP.mag(a - b) - MP.mag(a)) > 3_000_000:
        return 6
    apart = -int(MP.floor(MP.log10(abs(a - b) / abs(a))))
    return max(6, min(PRECISION, apart + 2))


# -- the proof ------------------------------------------------------------------------

class _Timeout(Exception):
    pass


@contextmanager
def time_limit(seconds: float):
    """Raise ``_Timeout`` after ``seconds`` (SIGALRM, main thread only; elsewhere no limit but the budget)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def alarm(signum, frame):
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _prove(world: World, target: Target, meaning: Meaning, study: _Study, at_sizes: bool = True) -> str:
    """The strongest symbolic statement reached in the time limit (``at_sizes``: also exactly at small sizes)."""
    try:
        with time_limit(PROOF_SECONDS):
            if _equal_for_all_sizes(world, target, meaning):
                return "equal for all sizes (the index forms agree once their sums are normalised)"
            if not at_sizes:
                return "not shown for all sizes"
            sizes = study.size_sets[0]
            level = _equal_at(world, target, meaning, sizes, study)
            names = world.describe(sizes, meaning.sample)
            if level is None:
                return (f"not shown: SymPy did not reduce the exact difference at sizes {names} to 0 "
                        "(numeric evidence only)")
            how = {"opaque": "", "named": ", with the error terms written out",
                   "full": ", with every intermediate written in terms of the inputs"}[level]
            return f"exact at sizes {names}: the difference cancels at every element{how}"
    except _Timeout:
        return f"not reached within {PROOF_SECONDS} s (numeric evidence only)"


def _one_sample_sizes(expr, world, sample):
    if not sample or world.table.batch_size is None:
        return expr
    expr = expr.xreplace({world.table.batch_size: sp.S.One})
    expr = expr.replace(lambda e: isinstance(e, sp.Sum) and any(lo == hi for _, lo, hi in e.limits), _collapse)
    return expr.xreplace({BATCH_INDEX: sp.S.Zero})


def _collapse(s: sp.Sum) -> sp.Expr:
    body, limits = s.function, []
    for v, lo, hi in s.limits:
        if lo == hi:
            body = body.xreplace({v: lo})
        else:
            limits.append((v, lo, hi))
    return sp.Sum(body, *limits) if limits else body


def _equal_for_all_sizes(world, target, meaning) -> bool:
    """The index forms agree once normalised: as written, with the error terms written out, or with
    every intermediate defined without a sum written out (``\\rho`` as ``1/\\sqrt{\\sigma^2 + \\epsilon}``,
    ``\\hat{x}`` as ``\\tilde{x} \\rho``), sums such as ``\\mu`` and ``\\sigma^2`` kept by name."""
    pairs = [(expr, meaning.expr) for expr in dict.fromkeys((target.expr, target.expanded))]
    pairs.append((_without_local_names(target.expr), _without_local_names(meaning.expr)))
    for derived, yours in pairs:
        difference = _one_sample_sizes(derived, world, meaning.sample) - \
            _one_sample_sizes(yours, world, meaning.sample)
        difference = normalize(sp.expand(normalize(difference)))
        if sp.expand(canonical_bound(_sum_order(difference))) == 0:
            return True
    return False


def _sum_order(expr: sp.Expr) -> sp.Expr:
    """Sums nested over fixed ranges in one order, by range: ``\\sum_n \\sum_s`` and ``\\sum_s \\sum_n`` alike."""
    def visit(node):
        if not node.args or isinstance(node, sp.Indexed):
            return node
        if not isinstance(node, sp.Sum):
            return rebuild(node, (visit(a) for a in node.args))
        limits, body = list(node.limits), node.function
        while isinstance(body, sp.Sum):  # Sum(Sum(f, inner), outer): the first limit is innermost
            limits, body = list(body.limits) + limits, body.function
        variables = {v for v, _, _ in limits}
        if not any((lo.free_symbols | hi.free_symbols) & variables for _, lo, hi in limits):
            limits.sort(key=lambda limit: (str(limit[2]), str(limit[1])))
        return sp.Sum(visit(body), *limits)
    return visit(expr)


def _without_local_names(expr: sp.Expr) -> sp.Expr:
    def local(e):
        return isinstance(e, IntermediateElement) and not e.base.definition.has(sp.Sum)
    while expr.has(IntermediateElement) and any(local(e) for e in sp.preorder_traversal(expr)):
        expr = expr.replace(local, lambda e: e.base.at(*e.indices))
    return expr


def _equal_at(world, target, meaning, sizes, study) -> str | None:
    """The first level at which the difference cancels at every element: opaque, named, full; else None."""
    constraint = world.constraint(sizes)
    elements = study.elements(sizes)
    levels_used = []
    whole = unroll(target.expr - meaning.expr, sizes)
    for at in elements:
        difference = at_index(whole, at)
        for level in ("opaque", "named", "full"):
            expr = difference if level == "opaque" else difference.xreplace(world.definitions(sizes, level))
            if level == "full":
                expr = expr.xreplace(world.definitions(sizes, "full"))
            expr = expr.xreplace(world.constants).xreplace(constraint)
            if check.is_zero(expr):
                levels_used.append(level)
                break
        else:
            return None
    order = ("opaque", "named", "full")
    return max(levels_used, key=order.index) if levels_used else "opaque"


# -- hints -------------------------------------------------------------------------------

def _hints(world, target, letters, meaning, part, sample, text, study) -> list[str]:
    """The typical mistake that explains the difference, if one does."""
    if not study.wrong_off_kinks and not meaning.clashes:
        return ["right except at the kink (inputs exactly 0), where the derivation follows PyTorch's convention"]
    found = _ratio_hints(world, target, study) or _outside(world, meaning, study) or _left_out(world, target, study)
    if found:
        return found
    deadline = time.perf_counter() + HINT_SECONDS
    terms = _Terms(world, target, meaning, study) if not meaning.clashes else None
    found = terms.one_off() if terms else []
    if found:
        return found
    drawn = [sizes for sizes, *_ in study.runs]
    for description, variant in _variants(world, part, meaning, target, sample):
        if time.perf_counter() > deadline:
            return []
        try:
            changed = _resolve(world, target, letters, variant, sample, text)
        except (F.FormulaError, ShapeMismatch):
            continue
        if changed.clashes or not set(changed.free) <= set(target.letters(sample)):
            continue
        if world.size_sets(changed.tied, sample)[:len(drawn)] == drawn:
            right = study.matches(changed.expr)
        else:  # the change altered which sizes the formula ties together: draw afresh
            right = _Study(world, target, changed, study.seed).compare() is None
        if right:
            return [description]
    return terms.replaced(deadline) if terms else []


class _Terms:
    """The formula and the derivation as sums of terms (products multiplied out at the top level only):
    one term missing, one too many, one with its sign flipped, or one written wrong."""

    MAX_TERMS = 6

    def __init__(self, world, target, meaning, study):
        self.world, self.meaning, self.study = world, meaning, study
        self.derived = _terms(target.expr)
        self.yours = _terms(meaning.expr)

    def tex(self, term) -> str:
        from derive.engine.chain import sample_form
        return self.world.printer.doprint(sample_form(term) if self.study.sample else term)

    def one_off(self) -> list[str]:
        if len(self.derived) > self.MAX_TERMS or len(self.yours) > self.MAX_TERMS:
            return []
        yours = self.meaning.expr
        for term in self.derived if len(self.derived) > 1 else ():
            if self.study.matches(yours + term):
                return [f"a term missing: {self.tex(term)}"]
        for term in self.yours if len(self.yours) > 1 else ():
            if self.study.matches(yours - term):
                return [f"a term too many: {self.tex(term)}"]
            if self.study.matches(yours - 2 * term):
                return [f"the sign of a term is flipped: {self.tex(term)}"]
        for pair in itertools.combinations(self.derived, 2) if len(self.derived) > 2 else ():
            if self.study.matches(yours + sum(pair)):  # batch norm's two batch terms, left out together
                return [f"two terms missing: {self.tex(pair[0])} and {self.tex(pair[1])}"]
        return []

    def replaced(self, deadline) -> list[str]:
        if len(self.derived) < 2 or len(self.derived) > self.MAX_TERMS or len(self.yours) > self.MAX_TERMS:
            return []
        for wrong in self.yours:
            for right in self.derived:
                if time.perf_counter() > deadline:
                    return []
                if self.study.matches(self.meaning.expr - wrong + right):
                    return [f"one term is wrong: {self.tex(wrong)} should be {self.tex(right)}"]
        return []


def _terms(expr: sp.Expr) -> tuple:
    return sp.Add.make_args(sp.expand_mul(expr, deep=False))


def _left_out(world, target, study) -> list[str]:
    """The derivation with one part left out gives your values: a hyper-parameter at 1 or 0 (the
    stride forgotten), or a 0/1 factor as 1 (max pooling's mask, a range bracket)."""
    if study.matches(sp.S.Zero, yours=True):  # a formula that is 0 matches any change that zeroes the derivation
        return []
    constants = {e.value: e for e in world.table.entries if e.kind == "constant"}
    tex = world.printer.doprint
    def reads(expr, symbol, plain):  # in the indices and brackets, not in the sums' ranges (the sizes)
        return expr.replace(lambda e: isinstance(e, (sp.Indexed, Iverson)) and symbol in e.free_symbols,
                            lambda e: e.xreplace({symbol: plain}))

    for symbol in sorted(target.expr.free_symbols & set(constants), key=str):
        for plain in (1, 0):
            try:
                explained = study.matches(reads(target.expr, symbol, plain), yours=True)
            except (TypeError, ValueError, ZeroDivisionError):
                explained = False
            if explained:
                return [f"your formula is the derivation with {tex(symbol)} = {plain} in its indices: is "
                        f"{tex(symbol)} ({constants[symbol].meaning.split(' (default')[0]}) left out?"]
    switches = {a for a in sp.preorder_traversal(target.expr)
                if isinstance(a, Iverson) or isinstance(a, sp.Indexed) and isinstance(a.base, Intermediate)
                and isinstance(a.base.definition, FirstMax)}
    for switch in sorted(switches, key=str):
        if study.matches(target.expr.xreplace({switch: sp.S.One}), yours=True):
            return [f"the factor {tex(switch)} is missing: it is 1 only where "
                    + ("its condition holds" if isinstance(switch, Iverson) else "the window has its maximum")]
    return []


def _outside(world, meaning, study) -> list[str]:
    """Where the derivation has a value and the formula none: an element read outside its tensor?"""
    for sizes, elements, points, expected, got in study.runs:
        for p, e in itertools.product(range(len(points)), range(len(elements))):
            if got[p][e] is None and expected[p][e] is not None:
                form = at_index(unroll(meaning.expr, sizes), elements[e])
                for element in sorted(form.atoms(sp.Indexed), key=str):
                    shape = [int(sp.sympify(n).xreplace(sizes)) for n in element.base.shape]
                    if all(i.is_Integer for i in element.indices) and \
                            any(not 0 <= int(i) < n for i, n in zip(element.indices, shape)):
                        entry = next((t for t in world.table.entries if t.value == element.base), None)
                        name = entry.head() if entry else str(element.base)
                        at = ",".join(str(i) for i in element.indices)
                        return [f"your formula reads {name}_{{{at}}}, outside its range (sizes "
                                f"{world.describe(sizes)}): a range bracket such as [0 \\le h - i s \\le K - 1] "
                                "is missing, or an index is off"]
                return []
    return []


def _ratio_hints(world, target, study) -> list[str]:
    """Sign, a count (1/N, 1/(N S)), an activation derivative or a factor of the derivation (1/(1 - p), 2):
    the ratio derived / yours says which."""
    ratios = []  # (sizes, at, values, ratio)
    for sizes, elements, points, expected, got in study.runs:
        for p, values in enumerate(points):
            for e, at in enumerate(elements):
                a, b = expected[p][e], got[p][e]
                if a is None or b is None or abs(b) < 1e-9 or abs(a) < 1e-9:
                    continue
                ratios.append((sizes, at, values, a / b))
    if len(ratios) < 2:
        return []
    name = target.short(study.sample)
    values_r = [r for *_, r in ratios]
    if all(_close(r, values_r[0]) for r in values_r) and _close(values_r[0], -1):
        return [f"sign flipped: your formula is -1 times {name}"]
    return (_count_hint(world, ratios, name) or _multiplier_hint(world, target, study.meaning, ratios, name, study.sample)
            or _constant_hint(values_r, name))


def _count_hint(world, ratios, name) -> list[str]:
    """A ratio that is constant for each size set and follows a size, or a product of two (N S)."""
    by_set = {}
    for sizes, at, values, r in ratios:
        by_set.setdefault(tuple(sizes.items()), []).append(r)
    if not all(all(_close(r, rs[0]) for r in rs) for rs in by_set.values()):
        return []
    counts = [(size,) for size in world.sizes] + list(itertools.combinations(world.sizes, 2))
    for count in counts:
        def value(key):
            return MP.mpf(int(np.prod([int(dict(key)[s]) for s in count])))
        ok_missing = all(_close(abs(rs[0]), 1 / value(k)) for k, rs in by_set.items())
        ok_extra = all(_close(abs(rs[0]), value(k)) for k, rs in by_set.items())
        sign = " (and the sign is flipped)" if all(rs[0].real < 0 for rs in by_set.values()) else ""
        written = " ".join(str(s) for s in count)
        over = f"1/{written}" if len(count) == 1 else f"1/({written})"
        if ok_missing and not ok_extra:
            return [f"missing a factor {over}{sign}: {name} is your formula divided by {written}"]
        if ok_extra and not ok_missing:
            return [f"an extra factor {over}{sign}: {name} is {written} times your formula"]
    return []


def _multiplier_hint(world, target, meaning, ratios, name, sample) -> list[str]:
    """The ratio is an activation derivative, or one or two factors of the derived product (``\\frac{1}{1 - p}``).

    A multiplier that makes the formula equal symbolically, not only at the
    points drawn, wins: dropout's mask is 0 or 1, so ``mask/(1-p)`` and
    ``1/(1-p)`` fit the same points, but only the second is the mistake.
    """
    fitting = []
    cache = {}
    for message, multiplier in _multipliers(world, target, name, sample):
        if _fits(multiplier, ratios, cache):
            if _exactly(world, target, meaning, multiplier, sample):
                return [message]
            fitting.append(message)
    return fitting[:1]


def _multipliers(world, target, name, sample):
    """(hint, m) with derived = yours * m: the activation derivatives, then the derived product's factors."""
    from derive.engine.chain import sample_form
    for local, tex in world.activations:
        letters = {str(i) for i in local.free_symbols if i.is_integer and not i.is_positive}
        if letters <= set(str(i) for i in target.index):
            yield f"missing the activation derivative {tex}: {name} is your formula times it", local
            yield f"an extra activation-derivative factor {tex}: your formula is {name} times it", 1 / local
            yield f"missing the activation derivative {tex}, and the sign is flipped", -local
    factors = [f for f in sp.Mul.make_args(target.expr) if f not in (sp.S.One, sp.S.NegativeOne)]
    if len(factors) < 2:
        return
    for factor in factors + [a * b for a, b in itertools.combinations(factors, 2)]:
        tex = world.printer.doprint(sample_form(factor) if sample else factor)
        yield f"missing the factor {tex}: {name} is your formula times it", factor
        yield f"missing the factor {tex}, and the sign is flipped", -factor
        yield f"a factor {tex} too many: your formula is {name} times it", 1 / factor
        yield f"a factor {tex} too many, and the sign is flipped", -1 / factor


def _fits(multiplier, ratios, cache) -> bool:
    for sizes, at, values, ratio in ratios:
        key = (multiplier, tuple(sizes.items()))
        if key not in cache:
            cache[key] = unroll(multiplier, sizes)
        value = _evaluate(at_index(cache[key], at), values)
        if value is None or not _close(value, ratio):
            return False
    return True


def _exactly(world, target, meaning, multiplier, sample) -> bool:
    """Whether derived = yours * multiplier once the index forms are normalised."""
    difference = _one_sample_sizes(target.expr, world, sample) - \
        _one_sample_sizes(meaning.expr * multiplier, world, sample)
    return sp.expand(canonical_bound(normalize(sp.expand(normalize(difference))))) == 0


def _constant_hint(values_r, name) -> list[str]:
    if not all(_same_ratio(r, values_r[0]) for r in values_r):
        return []
    c = values_r[0]
    sign = " and the sign is flipped" if c.real < 0 else ""
    for k in (2, 4):
        if _close(abs(c), k):
            return [f"missing a factor {k}{sign}: {name} is {k} times your formula"]
        if _close(abs(c), MP.mpf(1) / k):
            return [f"a factor {k} too many{sign}: your formula is {k} times {name}"]
    if _same_ratio(c, 1):  # equal wherever both are defined: the difference is elsewhere
        return []
    factor = 1 / c
    return [f"a constant factor: your formula is {_number(factor, _digits_to_tell(1, factor))} times {name}"]


def _variants(world, part, meaning, target, sample):
    """One change at a time: (what it means, the changed syntax tree)."""
    letters_used = sorted({i.rstrip("'") for node in walk(part) if isinstance(node, F.Name) and node.indices
                           for i in node.indices if isinstance(i, str)} | set(target.letters(sample)))
    for node in walk(part):
        if isinstance(node, F.Name) and node.indices and len(node.indices) >= 2:
            swapped = dataclasses.replace(node, indices=tuple(reversed(node.indices)))
            yield (f"transposed index: {_name_tex(node)} should be {_name_tex(swapped)}",
                   _replace(part, node, swapped))
    if _is_matrix(world, part):
        yield ("the result is transposed: the gradient has its parameter's shape",
               F.Transpose(part.pos, part))
    for node in walk(part):
        if isinstance(node, F.Transpose):
            yield (f"a transpose too many: drop the ^T on {_describe(node.arg)}", _replace(part, node, node.arg))
        elif isinstance(node, F.Name) and node.indices is None and _rank(world, node) == 2:
            yield (f"a transpose missing: {_describe(node)} should be {_describe(node)}^T",
                   _replace(part, node, F.Transpose(node.pos, node)))
    sizes = [e.names[0] for e in world.table.entries if e.kind == "size"]
    for size in sizes:
        if any(isinstance(node, F.Name) and node.word == size and node.indices is None for node in walk(part)):
            for other in sizes:
                if other != size:
                    yield (f"the count: {size} should be {size} {other} wherever it appears",
                           transform(part, lambda node: F.Product(node.pos, (node, F.Name(node.pos, other)), ("juxt",))
                                     if isinstance(node, F.Name) and node.word == size and node.indices is None
                                     else node))
    extra = [c for c in meaning.free if c not in target.letters(sample)]
    for node in walk(part):
        if isinstance(node, F.Sum) and len(node.indices) == 1:
            for letter in extra + [c for c in letters_used if c not in extra]:
                if letter != node.indices[0]:
                    moved = dataclasses.replace(node, indices=(letter,), lower=None, upper=None)
                    yield (f"sum over the wrong index: \\sum_{{{node.indices[0]}}} should be \\sum_{{{letter}}}",
                           _replace(part, node, moved))
    for letter in extra:
        yield (f"a missing sum over {letter}: {target.short(sample)} is \\sum_{{{letter}}} of your formula",
               F.Sum(part.pos, (letter,), part))
    for node in walk(part):
        if isinstance(node, F.Sum):
            yield (f"a sum too many: drop \\sum_{{{''.join(node.indices)}}}", _replace(part, node, node.body))


def _rank(world, node) -> int:
    entries = world.table.named(node.word)
    return entries[0].rank if entries else 0


def _name_tex(node: F.Name) -> str:
    return f"{F.name_text(node.word)}_{{{''.join(map(F.index_text, node.indices))}}}"


def _describe(node) -> str:
    if isinstance(node, F.Name):
        return F.name_text(node.word) + (f"_{node.layer}" if node.layer else "")
    return "a factor"


def _replace(tree, old, new):
    """``tree`` with the node ``old`` (by identity) replaced by ``new``."""
    if tree is old:
        return new
    if not isinstance(tree, F.Node):
        return tree
    changes = {}
    for name in tree.__dataclass_fields__:
        child = getattr(tree, name)
        if isinstance(child, F.Node):
            replaced = _replace(child, old, new)
            if replaced is not child:
                changes[name] = replaced
        elif isinstance(child, tuple):
            replaced = tuple(_replace(c, old, new) if isinstance(c, F.Node) else
                             tuple(_replace(s, old, new) for s in c) if isinstance(c, tuple) else c
                             for c in child)
            if replaced != child:
                changes[name] = replaced
    return dataclasses.replace(tree, **changes) if changes else tree


# -- reading without checking ------------------------------------------------------------

def read(formula: str, op: str | None = None, wrt: str | None = None, chain=None, syntax: str = "auto",
         derivatives: bool = False) -> sp.Expr:
    """The SymPy index form a formula stands for, in the op's or chain's names (one sample: as ``chain.sample_form``).

    With ``wrt`` the free indices are that gradient's and a matrix formula is
    laid onto its axes; ``derivatives`` keeps ``\\frac{\\partial a}{\\partial b}``
    as an unevaluated ``Derivative`` (for reading back what the tool printed).
    """
    from derive.engine.chain import sample_form
    world = world_of(op, chain)
    tree = canonical(world.table, F.parse(formula, syntax))
    if len(tree.parts) != 1:
        raise F.FormulaError("read one expression at a time")
    part = tree.parts[0]
    sample = sample_mode(world.table, part)
    axes, free_sizes = None, {}
    if wrt is not None:
        target, _ = _wrt_target(world, wrt, sample)
        axes = target.axes(sample)
        free_sizes = {t: size for t, (_, size) in zip(target.letters(sample), axes)}
    resolver = Resolver(world.table, sample, formula, free_sizes, derivatives=derivatives,
                        vector=vector_mode(world.table, part, sample))
    expr = resolver.finish(resolver.resolve(part), axes).expr
    return sample_form(expr) if sample else expr
