"""``derive verify``: is a formula derived by hand right, and if not, where does it go wrong?

The formula is read (``derive.verifier.reading``: our own grammar, its names
looked up in the op's or chain's table) before anything is derived, then
compared with the machine's derivation (``derive.verifier.quantities``) in
two ways:

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

from derive.define.symbols import FirstMax, Intermediate, IntermediateElement, Iverson, rebuild
from derive.engine import check
from derive.engine.rewrite import canonical_bound, inline, normalize, textbook
from derive.verifier import formula as F
from derive.verifier.meaning import BATCH_INDEX, Meaning, ShapeMismatch, index, index_letters, transform, vector_mode, walk
from derive.verifier.names import Target
from derive.verifier.quantities import PRECISION, World, chain_world, forms, op_world, size_key
from derive.verifier.reading import Reading, _chain_names, _op_names, _resolve, read_formula, source
from derive.verifier.reading import read, symbols  # noqa: F401 (the API, with verify)

POINTS = 2  # random points per size set
EXTRA_POINTS = 2  # further points for the elements a point could not decide
MAX_ELEMENTS = 48  # elements compared per size set
CONFIRM_DIGITS = 2 * PRECISION  # a mismatch must persist with every value computed to twice the digits
MAX_CONFIRMATIONS = 4  # mismatches checked at 100 digits per formula; one not checked decides nothing
AGREEMENT = 1e-30  # |a - b| <= AGREEMENT max(1, |a|, |b|): far below 1e-16, far above the rounding at 50 digits
EVALUATION_SECONDS = 0.5  # one value; a formula slower than that decides nothing numerically
NUMERIC_SECONDS = 2.0  # all of a formula's values together
#: The numbers' own context: differences and ratios of values good to 100 digits are taken to more digits
#: than that (mpmath's shared context, which SymPy and users may set, counts 15).
MP = mpmath.MPContext()
MP.dps = CONFIRM_DIGITS + 20
PROOF_SECONDS = 1.5
HINT_SECONDS = 4.0  # a hint is worth a few seconds; a slower machine must not lose it


# -- the result ------------------------------------------------------------------------

@dataclass(frozen=True)
class Counterexample:
    """Where the formula and the derivation differ: sizes, the element, the inputs, both values."""

    sizes: dict  # size name -> int
    at: dict  # index letter -> int (counting from 0)
    inputs: dict  # tensor name -> value (nested lists of numbers)
    expected: object  # an mpmath number, good to 50 digits (complex(...) for a Python number)
    got: object  # the same, or None: undefined there
    note: str = "indices count from 0"

    def lines(self) -> list[str]:
        sizes = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.sizes.items())
        at = ", ".join(f"{k}={v}" for k, v in self.at.items()) or "-"
        out = [f"  sizes: {sizes}", f"  element: {at} ({self.note})"]
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
    tried: str = ("sign, transposed index, activation derivative, 1/N or another count, sum index, one term missing, "
                  "extra or wrong")  # the typical mistakes the hints try

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
                lines.append(f"hint: none of the typical mistakes ({self.tried}) explains the difference")
        return "\n".join(lines)


# -- the API ---------------------------------------------------------------------------

def verify(formula: str, op=None, wrt: str | None = None, chain=None, syntax: str = "auto",
           seed: int = 0, unroll: bool = False) -> Verdict:
    """Check a hand-derived ``formula`` for a gradient of ``op`` (a name or an ``Op``; ``wrt``: an input,
    e.g. ``"W"``) or of a
    ``chain`` (op names, or ``"article"``; ``wrt``: a quantity such as ``"delta_j"`` or ``"w_kj"``); with
    ``unroll``, of the recurrent cell ``op`` unrolled over T steps (``wrt``: ``"W_hh"``, ``"x"``, ``"h"`` for
    the first state, ``"da"`` or ``"g_h"``; ``derive.verifier.unrolled``).

    ``wrt`` may be left out when the formula names its left-hand side
    (``\\frac{\\partial E}{\\partial w_{kj}} = ...``). Malformed input raises
    ``ValueError`` (``derive.verifier.formula.FormulaError``) naming the position, before anything
    is derived.
    """
    start = time.perf_counter()
    verdict = judge(read_formula(formula, op, wrt, chain, syntax, unroll), seed)
    return dataclasses.replace(verdict, seconds=time.perf_counter() - start)


def judge(reading: Reading, seed: int = 0) -> Verdict:
    """The verdict on a formula read (``derive.verifier.reading.read_formula``): here the derivation starts."""
    start = time.perf_counter()
    if reading.source[0] == "unrolled":
        from derive.verifier.unrolled import judge_unrolled
        return dataclasses.replace(judge_unrolled(reading, seed), seconds=time.perf_counter() - start)
    world = _op_world(reading.source[1]) if reading.source[0] == "op" else _chain_world(reading.source[1])
    target = world.target(reading.quantity.entry)
    verdicts = [_check_part(world, target, reading.letters, part, meaning, reading.sample, reading.text, seed)
                for part, meaning in zip(reading.parts, reading.meanings)]
    verdict = next((v for v in verdicts if not v.equivalent and v.decided), None) or \
        next((v for v in verdicts if not v.decided), verdicts[-1])
    return dataclasses.replace(verdict, seconds=time.perf_counter() - start)


@lru_cache(maxsize=32)
def _op_world(op) -> World:
    return op_world(op, _op_names(op))


@lru_cache(maxsize=32)
def _chain_world(names: tuple) -> World:
    from derive.engine.chain import chain as make_chain
    return chain_world(make_chain(names), _chain_names(names))


def world_of(op, chain) -> World:
    """``op`` or ``chain`` derived, on the same names as ``names_of``."""
    kind, key = source(op, chain)
    return _op_world(key) if kind == "op" else _chain_world(key)


# -- checking one formula -------------------------------------------------------------

def _check_part(world: World, target: Target, letters, part, meaning, sample, text, seed) -> Verdict:
    derived = _derived_tex(world, target, sample)
    form = _form(world, part, sample) + (", one sample" if sample else "")
    base = dict(quantity=f"{target.short(sample)} of {world.title}", derived=derived, formula=text, form=form)
    if isinstance(meaning, ShapeMismatch):
        return Verdict(False, reason=f"{meaning}: the shapes differ", **base)
    study = _Study(world, target, meaning, seed)
    mismatch = study.compare()
    if mismatch is None and not meaning.clashes:
        if study.undecided:  # only an exact proof for all sizes can decide
            proof = _prove(world, target, meaning, study, at_sizes=False)
            if proof.startswith("equal for all sizes"):
                return Verdict(True, proof=proof, numeric=f"{study.evidence()}; undecided {study.undecided_at()}",
                               **base)
            return Verdict(False, decided=False, proof=proof, numeric=study.evidence(), reason=(
                f"cannot decide: {study.undecided_at()}, at every point tried, and no exact proof was found"), **base)
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
        self._unrolled = {}  # (term, run) -> the term at each of the run's elements, unrolled

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
            user_forms = forms(self.meaning.expr, sizes, elements)
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
        start = time.process_time()  # CPU seconds, as the step budget: the same verdict on a busy machine
        value = _evaluate(form, values, digits)
        self._spent += time.process_time() - start
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
        for run, (sizes, elements, points, expected, got) in enumerate(self.runs):
            at_elements = self._forms(expr, run)
            for p, values in enumerate(points):
                for e, form in enumerate(at_elements):
                    if _state((got if yours else expected)[p][e], _evaluate(form, values)) != "agrees":
                        return False
        return True

    def _forms(self, expr: sp.Expr, run: int) -> list:
        """``forms`` of ``expr`` at a run's elements, term by term: the hints try sums that share
        most of their terms (your formula plus one of the derivation's), and unrolling is the cost."""
        sizes, elements = self.runs[run][:2]
        parts = []
        for term in sp.Add.make_args(expr):
            if (term, run) not in self._unrolled:
                self._unrolled[term, run] = forms(term, sizes, elements)
            parts.append(self._unrolled[term, run])
        return [sp.Add(*at) for at in zip(*parts)]

    def evidence(self) -> str:
        sets = "; ".join(self.world.describe(sizes) for sizes, *_ in self.runs)
        points = sum(len(points) for _, _, points, _, _ in self.runs)
        where = f"{self.compared} element values" if self.agreed == self.compared else \
            f"{self.agreed} of {self.compared} element values, the others undecided"
        return (f"equal within {AGREEMENT:g} (every value computed to {PRECISION} digits) at {points} random "
                f"points ({where}) at sizes {sets}")

    def undecided_at(self) -> str:
        """Where and why the numbers decide nothing: the first such element."""
        sizes, at, why = self.undecided[0]
        element = ", ".join(f"{k}={v}" for k, v in at.items() if not (self.sample and k == BATCH_INDEX)) or "-"
        more = f" (and {len(self.undecided) - 1} more elements)" if len(self.undecided) > 1 else ""
        return f"at sizes {self.world.describe(sizes, self.sample)}, element {element}{more}, {why}"

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
    return any(e.value == base and e.batch_axis is not None for e in world.table.entries)


def _input_name(base, world, sample) -> str:
    entry = next((e for e in world.table.entries if e.value == base), None)
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
            found = form.xreplace(values)
            found = found.xreplace(values) if found.has(sp.Indexed) else found  # weight[t[n]] once t[n] is known
            number = sp.N(found, digits, strict=True, maxn=8 * digits)
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
    for difference in forms(target.expr - meaning.expr, sizes, elements):
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
    deadline = time.perf_counter() + HINT_SECONDS
    found = _ratio_hints(world, target, study) or \
        _swapped_letters(world, target, letters, meaning, part, sample, text, study, deadline) or \
        _left_out(world, target, study) or _hyper_hint(world, target, meaning, study) or \
        _outside(world, meaning, study) or _factor_left_out(world, target, study, deadline)
    if found:
        return found
    terms = _Terms(world, target, meaning, study) if not meaning.clashes else None
    found = terms.one_off() if terms else []
    if found:
        return found
    for description, variant in _variants(world, part, meaning, target, sample):
        if time.perf_counter() > deadline:
            return []
        if _right(world, target, letters, variant, sample, text, study) is not None:
            return [description]
    return terms.replaced(deadline) if terms else []


def _right(world, target, letters, variant, sample, text, study) -> Meaning | None:
    """A changed formula's meaning, if it is right: at the points drawn, or at fresh ones where the change
    ties other sizes together."""
    try:
        changed = _resolve(world, target, letters, variant, sample, text)
    except (F.FormulaError, ShapeMismatch):
        return None
    if changed.clashes or not set(changed.free) <= set(target.letters(sample)):
        return None
    drawn = [sizes for sizes, *_ in study.runs]
    if world.size_sets(changed.tied, sample)[:len(drawn)] == drawn:
        right = study.matches(changed.expr)
    else:
        fresh = _Study(world, target, changed, study.seed)
        right = fresh.compare() is None and not fresh.undecided
    return changed if right else None


def _swapped_letters(world, target, letters, meaning, part, sample, text, study, deadline) -> list[str]:
    """Two index letters swapped throughout (``\\delta_j y_k`` for ``\\delta_k y_j``, a window's ``p`` and ``q``),
    one of them free: the formula with them exchanged is right."""
    used = sorted(index_letters(part) & (set(world.table.index_letters) | set(target.letters(sample))
                                         | {c for c in index_letters(part) if c.rstrip("'").isalpha()}))
    free = set(target.letters(sample)) | set(meaning.free)
    for a, b in itertools.combinations(used, 2):
        if time.perf_counter() > deadline:
            return []
        if a not in free and b not in free:  # two summed letters exchanged: the same formula
            continue
        changed = _right(world, target, letters, _swap(part, a, b), sample, text, study)
        if changed is not None:
            from derive.engine.chain import sample_form
            tex = world.printer.doprint(sample_form(changed.expr) if sample else changed.expr)
            return [f"the index letters {a} and {b} are swapped: with them exchanged your formula is right "
                    f"({tex})"]
    return []


def _swap(tree, a: str, b: str):
    """``tree`` with the index letters ``a`` and ``b`` exchanged: in subscripts, in sums, and in index
    arithmetic and range brackets (where ``i s + p`` spells letters), never in a tensor's name."""
    swapped = {a: b, b: a}

    def letters(word: str) -> str:
        parts = []
        F.split_letters(word, parts)
        return "".join(swapped.get(c, c) for c in parts)

    def visit(node, in_index: bool):
        if not isinstance(node, F.Node):
            return node
        if isinstance(node, F.Name):
            indices = node.indices and tuple(swapped.get(i, i) if isinstance(i, str) else visit(i, True)
                                             for i in node.indices)
            word = letters(node.word) if in_index and node.indices is None and node.layer is None \
                and not node.decorated and node.word.replace("'", "").isalpha() else node.word
            return dataclasses.replace(node, word=word, indices=indices)
        inside = in_index or isinstance(node, (F.IndexExpr, F.Iverson, F.Compare, F.All))
        changes = {}
        for name in node.__dataclass_fields__:
            child = getattr(node, name)
            if isinstance(child, F.Node):
                changes[name] = visit(child, inside)
            elif name == "indices" and isinstance(node, F.Sum):
                changes[name] = tuple(swapped.get(i, i) for i in child)
            elif isinstance(child, tuple):
                changes[name] = tuple(visit(c, inside) if isinstance(c, F.Node) else
                                      tuple(visit(x, inside) for x in c) if isinstance(c, tuple) else c
                                      for c in child)
        return dataclasses.replace(node, **changes)

    return visit(tree, False)


def _hyper_hint(world, target, meaning, study) -> list[str]:
    """Right at other test values of a hyper-parameter than the counterexample's (the full-convolution
    form of a convolution's input gradient, right at stride 1 only): which."""
    if not world.hyper_cases or study.first_run is None or meaning.clashes or \
            not set(meaning.free) <= set(target.letters(study.sample)):
        return []
    wrong_at = study.runs[study.first_run][0]
    constants = {e.value: e for e in world.table.entries if e.kind == "constant"}
    paired = {s for pair in world.pairs for s in pair}
    groups = [pair for pair in world.pairs if set(pair) <= set(world.hyper_cases[0])] \
        + [(s,) for s in world.hyper_cases[0] if s not in paired]  # a pair's symbols (s_H, s_W) vary together
    groups = sorted(groups, key=lambda g: str(g[0]))
    # one hyper-parameter at another test value, then two together (stride and dilation both at 1)
    for group in groups + [a + b for a, b in itertools.combinations(groups, 2)]:
        wrong = tuple(wrong_at[s] for s in group)
        values = sorted({tuple(case[s] for s in group) for case in world.hyper_cases} - {wrong},
                        key=lambda v: [float(x) for x in v])
        for value in values:  # the counterexample's hyper-parameters but this one, at the first sizes where
            sizes = next((trial for trial in ({**s, **{h: wrong_at[h] for h in world.hyper_cases[0]},
                                               **dict(zip(group, value))}
                                              for s in study.size_sets) if _every_axis_long(world, trial)), None)
            if sizes is None:  # no axis but the batch has length 1 (a sum over it says nothing)
                continue
            again = _Study(world, target, meaning, study.seed, [sizes])
            if again.compare() is None and not again.undecided:
                doc = "; ".join(dict.fromkeys(constants[s].meaning.split(" (default")[0] for s in group))
                at = ", ".join(f"{world.label(s)} = {v}" for s, v in zip(group, value))
                was = ", ".join(f"{world.label(s)} = {v}" for s, v in zip(group, wrong))
                return [f"right only at {at} ({doc}): at sizes {world.describe(sizes)} your formula "
                        f"agrees with the derivation, with {was} (the counterexample) it does not"]
    return []


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
    def reads(expr, group, plain):  # in the indices and brackets, not in the sums' ranges (the sizes)
        return expr.replace(lambda e: isinstance(e, (sp.Indexed, Iverson)) and e.free_symbols & set(group),
                            lambda e: e.xreplace({symbol: plain for symbol in group}))

    used = target.expr.free_symbols & set(constants)
    paired = {s for pair in world.pairs for s in pair}
    groups = [pair for pair in world.pairs if used & set(pair)] + [(s,) for s in used if s not in paired]
    for group in sorted(groups, key=lambda g: str(g[0])):  # a pair (s_H, s_W) left out on both axes
        for plain in (1, 0):
            try:
                explained = study.matches(reads(target.expr, group, plain), yours=True)
            except (TypeError, ValueError, ZeroDivisionError):
                explained = False
            if explained:
                names = ", ".join(tex(s) for s in group)
                return [f"your formula is the derivation with {' = '.join(tex(s) for s in group)} = {plain} in its "
                        f"indices: is {names} ({constants[group[0]].meaning.split(' (default')[0]}) left out?"]
    switches = {a for a in sp.preorder_traversal(target.expr)
                if isinstance(a, Iverson) or isinstance(a, sp.Indexed) and isinstance(a.base, Intermediate)
                and isinstance(a.base.definition, FirstMax)}
    for switch in sorted(switches, key=str):
        if study.matches(target.expr.xreplace({switch: sp.S.One}), yours=True):
            return [f"the factor {tex(switch)} is missing: it is 1 only where "
                    + ("its condition holds" if isinstance(switch, Iverson) else "the window has its maximum")]
    return []


def _factor_left_out(world, target, study, deadline) -> list[str]:
    """The derivation with one factor of a product left out (anywhere, inside a sum too) gives your
    values: an activation's or a gate's derivative forgotten (``1 - h'^2`` of an RNN cell, ``o(1 - o)``).
    Only factors of the forward's own values count (no input, no gradient, no sum): a derivative."""
    if study.matches(sp.S.Zero, yours=True):
        return []
    tex = world.printer.doprint
    given = {base for base, _ in world.independent} | set(world.named)

    def derivative_like(factor):
        return not factor.has(sp.Sum) and any(isinstance(e, sp.Indexed) for e in sp.preorder_traversal(factor)) \
            and not any(isinstance(e, sp.Indexed) and e.base in given for e in sp.preorder_traversal(factor))

    for expr in dict.fromkeys((target.expr, target.expanded)):
        products = [m for m in sp.preorder_traversal(expr) if isinstance(m, sp.Mul)]
        for product in sorted(products, key=sp.default_sort_key):
            factors = [f for f in product.args if not isinstance(f, sp.Indexed) and derivative_like(f)]
            factors += [f for f in product.args if isinstance(f, sp.Indexed) and derivative_like(f)
                        and any(f in sp.preorder_traversal(o) for o in factors)]  # o of o(1 - o)
            for factor in factors + [a * b for a, b in itertools.combinations(factors, 2)]:
                if time.perf_counter() > deadline:
                    return []
                if study.matches(expr.xreplace({product: product / factor}), yours=True):
                    return [f"missing the factor {tex(factor)} (an activation's or a gate's derivative): "
                            f"{target.short(study.sample)} has it where your formula has none"]
    return []


def _every_axis_long(world, sizes) -> bool:
    """Whether every tensor's axis but the batch has length 2 or more at ``sizes`` (a stride can shrink one)."""
    return all(int(sp.sympify(n).xreplace(sizes)) >= 2 for e in world.table.entries for n in e.shape
               if n != world.table.batch_size)


def _outside(world, meaning, study) -> list[str]:
    """Where the derivation has a value and the formula none: an element read outside its tensor? Told at
    the counterexample's own sizes."""
    if study.first_run is None:
        return []
    sizes, elements, points, expected, got = study.runs[study.first_run]
    for p, e in itertools.product(range(len(points)), range(len(elements))):
        if got[p][e] is None and _state(expected[p][e], 0) != "undecided":
            form = forms(meaning.expr, sizes, [elements[e]])[0]
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
                if _state(a, b) == "undecided" or b is None or abs(b) < 1e-9 or abs(a) < 1e-9:  # no number: no ratio
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
    quotient = _quotient(target, meaning)  # exact by construction; the points confirm it
    if quotient is not None and _fits(quotient, ratios, cache):
        tex = world.printer.doprint(quotient)
        return [f"missing the factor {tex}: {name} is your formula times it"]
    return fitting[:1]


def _quotient(target, meaning):
    """The derivation divided by the formula, where that is a product of no fractions (SiLU's
    ``1 + x (1 - σ(x))`` for ``g σ(x)``, x taken for a constant): the factor the formula left out."""
    if target.expr.has(sp.Sum) or meaning.expr.has(sp.Sum) or meaning.expr == 0:
        return None
    ratio = sp.cancel(inline(target.expr) / meaning.expr)
    if ratio.is_number or sp.fraction(ratio)[1] != 1:
        return None
    return textbook(ratio)


def _multipliers(world, target, name, sample):
    """(hint, m) with derived = yours * m: the activation derivatives, the hyper-parameters, then the derived
    product's factors."""
    from derive.engine.chain import sample_form
    for local, tex in world.activations:
        letters = {str(i) for i in local.free_symbols if i.is_integer and not i.is_positive}
        if letters <= set(str(i) for i in target.index):
            yield f"missing the activation derivative {tex}: {name} is your formula times it", local
            yield f"an extra activation-derivative factor {tex}: your formula is {name} times it", 1 / local
            yield f"missing the activation derivative {tex}, and the sign is flipped", -local
    for symbol in sorted((c for c in world.constants if not c.is_integer), key=str):  # softplus's 1/β forgotten
        tex = world.printer.doprint(symbol)
        yield f"missing a factor {tex}: {name} is your formula times {tex}", symbol
        yield f"a factor {tex} too many: your formula is {name} times {tex}", 1 / symbol
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
        key = (multiplier, tuple(sizes.items()), tuple(at.items()))
        if key not in cache:
            cache[key] = forms(multiplier, sizes, [at])[0]
        value = _evaluate(cache[key], values)
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
            # all indices reversed, and for a stack of matrices (attention's p_{nls}) its last two: P for P^T
            orders = {tuple(reversed(node.indices)), tuple(node.indices[:-2]) + tuple(reversed(node.indices[-2:]))}
            for order in sorted(orders, key=lambda o: o != tuple(reversed(node.indices))):
                swapped = dataclasses.replace(node, indices=order)
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


