"""Options that select between forward definitions: each value is a form, derived on its own.

A loss's ``reduction`` changes what the forward computes (a mean, a sum, one loss per
sample), and a layer without its bias has no bias to differentiate: neither is a
hyper-parameter inside one definition. An op file writes a function that returns the
``Op`` for given option values, and ``forms`` calls it for every combination::

    def mse(reduction):
        ...
        return Op(name="mse", ..., output=Intermediate("E", ..., total))

    OP = forms(mse, Option("reduction", ("mean", "sum", "none"), doc="..."))

The result is the default form (each option's first choice) carrying the others
(``Op.forms``); ``op.form(reduction="sum")`` picks one. Every form is derived and
checked like any op; the generated module has one ``forward`` taking the option as a
keyword, which runs the code generated for the form chosen and records it in the cache
for ``backward``. An option with ``input=True`` is an input that may be left out
(``linear(x, W, b=None)``): its choices are ``"given"`` and ``None``, and the form
without it has no such input at all (the default form, with ``given_by_default=False``:
a cross-entropy's ``weight``). An option with ``read`` is chosen by what the call passes, as
PyTorch chooses (``F.cross_entropy`` takes integer targets as class labels): ``read=("t", "integer")``
picks the second choice when the argument ``t`` holds integers, ``read=("label_smoothing", "nonzero")``
when the hyper-parameter is not 0 (``read=("t", "integer", "unnormalized")``: the second, else the third,
else the first); the generated ``forward`` has no keyword for it.

An ``Axis`` is not a choice between forms: a row op (softmax) is the same along any
axis, so it is derived once, along the last, and the generated ``forward`` takes the
axis as a keyword (``dim=-1``) and moves it last on the way in and back on the way out.
``RowAxes`` is likewise no choice: a row of D values may be laid out on several trailing axes (layer
norm's ``normalized_ndim``); the generated ``forward`` flattens them into D on the way in, and the
inputs of a row's shape (a scale, a shift) with them, and gives every result its shape back.
``ClassAxis`` neither: a loss per sample over K classes, derived on ``z[N, K]``, takes ``z[N, K, d...]``
as PyTorch's losses do (class axis 1, the axes after it more samples); the generated ``forward`` moves
the class axis last and flattens the samples, and gives each result and gradient its shape back.
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

GIVEN = "given"

#: How an option with ``read`` tells its choices apart, by the argument it reads.
READINGS = {
    "integer": "an array of integers",
    "nonzero": "a number other than 0",
    "unnormalized": "an array whose rows do not each sum to 1",
}


@dataclass(frozen=True)
class Option:
    """One choice between forms; the first choice is the default (PyTorch's)."""

    name: str
    choices: tuple = ()
    doc: str = ""
    #: An input that may be left out: the choices are ``"given"`` and ``None``; ``None`` first (the default
    #: form without it) where ``given_by_default`` is False (a weight PyTorch takes as None).
    input: bool = False
    given_by_default: bool = True
    #: ``(argument, reading, ...)``: the choice read from an input or hyper-parameter, not passed: one reading
    #: (``READINGS``) per choice after the first; the first choice whose reading holds, else the first.
    read: tuple = ()

    def __post_init__(self):
        if self.input:
            object.__setattr__(self, "choices", (GIVEN, None) if self.given_by_default else (None, GIVEN))
        if len(self.choices) < 2 or len(set(self.choices)) != len(self.choices):
            raise ValueError(f"{self.name}: an option needs two or more distinct choices, got {self.choices!r}")
        if self.read and (len(self.read) != len(self.choices) or not set(self.read[1:]) <= set(READINGS)
                          or self.input):
            raise ValueError(f"{self.name}: read is (argument, one of {sorted(READINGS)} for each choice after the "
                             f"first), got {self.read!r}")

    @property
    def default(self):
        return self.choices[0]

    def check(self, value) -> None:
        """A ValueError naming the option and its choices, unless ``value`` is one of them."""
        if not any(value is c or (type(value) is type(c) and value == c) for c in self.choices):
            listed = ", ".join(repr(c) for c in self.choices)
            raise ValueError(f"{self.name}: expected one of {listed}, got {value!r}")


@dataclass(frozen=True)
class Axis:
    """A keyword naming the axis of an input that a per-row op runs along (softmax's ``dim``). Not a
    form: the op is derived once, along the last axis, and the generated ``forward`` moves the axis
    chosen there (``backward`` moves the gradient back); ``cases`` are the axes the checks try."""

    name: str
    of: str
    default: int = -1
    cases: tuple = (-1, 0)
    doc: str = ""


@dataclass(frozen=True)
class RowAxes:
    """A keyword counting the trailing axes of an input that make one row of a row op (layer norm's
    ``normalized_ndim``). Not a form: the op is derived over rows of D values, and the generated
    ``forward`` flattens that many last axes into D, checks that each input of shape (D,) has their
    shape and flattens it too; ``backward`` gives each gradient its input's shape back."""

    name: str
    of: str
    default: int = 1
    doc: str = ""


@dataclass(frozen=True)
class ClassAxis:
    """A loss per sample over K classes (``z[N, K]``, labels ``t[N]``) that takes more axes after the class
    axis as more samples, as PyTorch's cross-entropy does (``z[N, K, d...]``, ``t[N, d...]``). Not a form
    and no keyword: the generated ``forward`` reads it from the first input's shape, moves the class axis
    of every per-sample input last and flattens the samples to ``N d...`` rows; ``reduction="none"`` gives
    ``(N, d...)`` and each gradient its input's shape."""

    of: str

    @property
    def name(self) -> str:
        return f"{self.of}'s class axis"


def gradient_option(name: str) -> Option:
    """``<name>_grad``: an input whose gradient only some callers want (a loss's target, which PyTorch
    differentiates where it requires grad), a form with it and the default form without it."""
    return Option(f"{name}_grad", (False, True),
                  doc=f"whether backward also returns d{name}, as PyTorch does for a {name} that requires grad "
                      f"(False: the form without it, which costs nothing)")


class NoForm(Exception):
    """Raised by a definition for option values that make no form (integer labels have no gradient): the
    generated ``forward`` refuses them with this message, a ValueError."""


def forms(define, *options):
    """The op ``define(**values)`` returns for every combination of the ``Option`` values, as one op:
    the default form, with the others in ``forms`` (an ``Axis`` is no choice between forms: ``define``
    does not see it). Forms share their name, hyper-parameters and shape kind (the generated
    ``forward`` takes one set of keywords)."""
    if not options:
        raise ValueError("options: forms() needs at least one Option or Axis")
    names = [o.name for o in options]
    if len(set(names)) != len(names):
        raise ValueError(f"options: duplicate option names {names}")
    choosing = [o for o in options if isinstance(o, Option)]
    made, absent = [], []
    for values in itertools.product(*(o.choices for o in choosing)):
        chosen = tuple(zip([o.name for o in choosing], values))
        try:
            op = define(**dict(chosen))
        except NoForm as why:
            absent.append((chosen, str(why)))
            continue
        made.append(dataclasses.replace(op, options=tuple(options), chosen=chosen))
    head, *others = made
    if dict(head.chosen) != {o.name: o.default for o in choosing}:
        raise ValueError(f"{head.name}: the default options {[o.default for o in choosing]} must make a form")
    for op in others:
        for what in ("name", "shape_kind"):
            if getattr(op, what) != getattr(head, what):
                raise ValueError(f"{head.name}: the form {dict(op.chosen)} has another {what} ({getattr(op, what)!r})")
        if [h.name for h in op.hyper] != [h.name for h in head.hyper]:
            raise ValueError(f"{head.name}: the form {dict(op.chosen)} has other hyper-parameters")
    for axis in options:
        if isinstance(axis, (Axis, RowAxes)) and (head.shape_kind != "leading" or head.inputs[0].name != axis.of):
            raise ValueError(f"{head.name}: the axis {axis.name!r} is for an op on rows (shape_kind 'leading') "
                             f"of its first input {axis.of!r}")
    for classes in options:
        if isinstance(classes, ClassAxis) and (head.inputs[0].name != classes.of or head.inputs[0].tensor.rank != 2
                                               or any(len(op.output.shape) > 1 for op in made)):
            raise ValueError(f"{head.name}: the class axis is for a loss per sample over classes, its first input "
                             f"{classes.of!r} of shape (N, K)")
    rows = [o for o in options if isinstance(o, RowAxes)]
    if rows and (len(rows) > 1 or any(isinstance(o, Axis) for o in options)
                 or any(op.output.shape != op.inputs[0].shape for op in made)):
        raise ValueError(f"{head.name}: the row axes {rows[0].name!r} are for an op whose output has its first "
                         f"input's shape, with no other axis keyword")
    for option in options:
        if isinstance(option, Option) and option.read and not any(
                option.read[0] in {i.name for i in op.inputs} | {h.name for h in op.hyper} for op in made):
            raise ValueError(f"{head.name}: the option {option.name!r} reads {option.read[0]!r}, which no form has")
        if isinstance(option, Option) and option.input:
            if not any(i.name == option.name for op in made for i in op.inputs):
                raise ValueError(f"{head.name}: the option {option.name!r} is an input, but no form has it")
        elif any(option.name in {i.name for i in op.inputs} | {h.name for h in op.hyper} for op in made):
            raise ValueError(f"{head.name}: the option {option.name!r} has the name of an input or hyper-parameter")
    return dataclasses.replace(head, forms=tuple(others), absent=tuple(absent))


def keywords(op, case: int = 0) -> dict:
    """The options a call of this form's ``forward`` passes as keywords (not those that leave an input
    out or are read from an argument), and the ``case``-th test value of each axis."""
    inputs = {o.name for o in op.options if isinstance(o, Option) and (o.input or o.read)}
    found = {name: value for name, value in op.chosen if name not in inputs}
    found.update({a.name: a.cases[case % len(a.cases)] for a in op.options if isinstance(a, Axis)})
    return found


def case_count(op) -> int:
    """How many test cases the checks run: the most any hyper-parameter or axis has (at least 1)."""
    counts = [len(h.cases) for h in op.hyper] + [len(a.cases) for a in op.options if isinstance(a, Axis)]
    return max(counts, default=1) or 1


def form_label(op) -> str:
    """The form in words, for names and headings: ``reduction_sum``, ``without_b`` (``rows``: no choice)."""
    parts = []
    for option, (_, value) in zip([o for o in op.options if isinstance(o, Option)], op.chosen):
        if option.input:
            parts.append(f"with_{option.name}" if value == GIVEN else f"without_{option.name}")
        else:
            parts.append(f"{option.name}_{value}")
    return "__".join(parts) or "rows"
