"""Reading a formula: its text, on an op's or a chain's names, to the SymPy index form it stands for.

Nothing is derived here (``derive.verifier.names`` knows the names from the
definitions alone): a malformed formula, an unknown or ambiguous name, a free
index the quantity lacks or an unknown quantity is refused at once, with a
``FormulaError`` (a ``ValueError``) that points at the trouble;
``derive.verifier.verification`` then checks what was read.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import sympy as sp

from derive.define.symbols import substitute_indices
from derive.verifier import formula as F
from derive.verifier.meaning import Meaning, Resolver, ShapeMismatch, canonical, index, sample_mode, vector_mode
from derive.verifier.names import Names, Target, chain_names, op_names

ARTICLE = ("linear", "sigmoid", "linear", "sigmoid", "half_sse")
MAX_STEPS = 6  # an unrolled cell checked at a given number of steps: every element of every step


@dataclass(frozen=True)
class Reading:
    """A formula read: what it is about, and what each part to check (``a = b``: ``b``) means."""

    text: str
    source: tuple  # ("op", name) or ("chain", names): see ``source``
    names: Names
    quantity: Target  # without expressions: ``World.target(quantity.entry)`` is the derived one
    letters: tuple | None  # the letters a left-hand side writes the quantity with, if it does
    sample: bool  # the one-sample form
    parts: tuple  # the syntax trees to check
    meanings: tuple  # for each part, its Meaning, or the ShapeMismatch that makes it wrong
    steps: tuple = ()  # an unrolled cell: the numbers of steps to check at (empty: unroll.CHECKED_STEPS)


def read_formula(formula: str, op: str | None = None, wrt: str | None = None, chain=None,
                 syntax: str = "auto", unroll=False) -> Reading:
    """Read ``formula`` for a gradient of ``op`` or of ``chain`` (as ``verify`` takes them), or of the
    recurrent cell ``op`` unrolled over the steps (``unroll``: True, or a number of steps to check at), or
    refuse it."""
    if unroll is not True and unroll is not False and not (isinstance(unroll, int) and 1 <= unroll <= MAX_STEPS):
        raise ValueError(f"unroll: True (T steps, checked at T = 2 and 3) or a number of steps from 1 to {MAX_STEPS}, "
                         f"got {unroll!r}")
    tree = F.parse(formula, syntax)  # malformed text first: it needs no names
    where = source(op, chain, unroll)
    names = _names(where)
    tree = canonical(names.table, tree)
    sample = sample_mode(names.table, tree)
    designators, parts = [], []
    for position, part in enumerate(tree.parts):
        found = _designator(names, part, sample, formula) if position < len(tree.parts) - 1 and not parts \
            else None
        if found is None:
            parts.append(part)
        else:
            designators.append(found)
    quantity, letters = _choose_target(names, wrt, designators, sample, formula)
    meanings = tuple(_reading(names, quantity, letters, part, sample, formula) for part in parts)
    steps = (unroll,) if unroll is not True and unroll is not False else ()
    return Reading(formula, where, names, quantity, letters, sample, tuple(parts), meanings, steps)


def source(op, chain, unroll: bool = False) -> tuple:
    """``("op", Op)``, ``("unrolled", Op)`` or ``("chain", (names...))``: what a formula is about (``article``
    is the article's chain; ``op`` is a name or an ``Op``)."""
    if unroll:
        from derive.define.registry import get
        if op is None or chain is not None or op == "article":
            raise ValueError("unroll: give one recurrent cell (rnn_cell, gru_cell, lstm_cell), not a chain")
        return "unrolled", get(op)
    if op == "article" and chain is None:
        chain, op = ARTICLE, None
    if (op is None) == (chain is None):
        raise ValueError("op: give an op name or a chain, not both and not neither")
    if op is not None:
        from derive.define.registry import get
        return "op", get(op)  # the Op itself: a user's op and a built-in one never share a cache entry
    if chain == "article":
        chain = ARTICLE
    if isinstance(chain, str):
        chain = [n.strip() for n in chain.split(",") if n.strip()]
    return "chain", tuple(chain)


def names_of(op, chain, unroll: bool = False) -> Names:
    """The names and quantities of ``op`` or ``chain`` (or of the cell ``op`` unrolled), nothing derived."""
    return _names(source(op, chain, unroll))


def _names(where) -> Names:
    kind, key = where
    if kind == "unrolled":
        from derive.verifier.unrolled import names_of_unrolled
        return names_of_unrolled(key)
    return _op_names(key) if kind == "op" else _chain_names(key)


def symbols(op: str | None = None, chain=None, unroll: bool = False) -> str:
    """The names a formula may use for ``op`` or ``chain`` (or the cell ``op`` unrolled), with their meaning
    and index ranges."""
    names = names_of(op, chain, unroll)
    table = names.table
    sample = table.default_sample
    lines = [f"Symbols for {names.title}" + (" (the article's single-sample form; add the batch index n "
                                              "for the batch form)" if sample else "") + ":"]
    for e in table.entries:
        if e.kind in ("size", "constant", "objective"):
            continue
        ranges = ", ".join(f"{c} < {s}" for c, s in zip(e.letters_in(sample), e.shape_in(sample)))
        whole = _array_name(e, sample, table)
        plain = plain_element(e, sample)
        tex = e.tex(sample)
        if table.time is not None and e.letters[:1] == (table.time[0],):  # the step first: h_{t,nj}, t = 0..T
            first = 0 if e.kind == "input" and e.value.label in {t.entry.value.label for t in names.targets
                                                                 if t.index[:1] == (0,)} else 1
            tex = f"{e.head()}_{{t,{''.join(e.letters_in(sample)[1:])}}}"
            ranges = ranges.replace(f"t < {table.time[2]}", f"t = {first}..{table.time[2]}")
        lines.append(f"  {tex:16} {e.meaning}; {ranges}" + (f"; as a whole: {whole}" if whole else "")
                     + (f"; plain: {plain}" if plain else ""))
    sizes = [e for e in table.entries if e.kind == "size"]
    lines.append("  sizes: " + "; ".join(f"{e.names[0]} ({e.meaning})" for e in sizes))
    consts = [e for e in table.entries if e.kind == "constant"]
    if consts:
        lines.append("  constants: " + "; ".join(f"{e.names[0]} ({e.meaning})" for e in consts))
    if table.vector_letters:
        along = ", ".join(table.vector_letters)
        lines.append(f"Vector form (as `derive latex {names.title} --form matrix` prints it): a whole name runs "
                     f"along {along} if it has {'that index' if len(table.vector_letters) == 1 else 'those indices'}, "
                     f"else it is a scalar; \\vec{{a}}^{{T}} \\vec{{b}} and \\mathbf{{1}}^{{T}} \\vec{{a}} sum along "
                     f"{along}; \\odot is elementwise.")
    lines.append("Quantities (--wrt): " + ", ".join(_wrt_name(t, sample) for t in names.targets))
    if table.time is not None:
        lines.append("Steps: t is the step (1 to T); write the time index first, as the derivation prints it: "
                     "h_{t-1,nj}, \\delta^{a}_{t+1,nk}, h_{0,nj} (plain: h[t-1, n, j], da[t+1, n, k], by the plain "
                     "words above); "
                     "\\sum_{t=1}^{T} (plain: sum(..., t)) sums over the steps; an element beyond the last step "
                     "(\\delta^{a}_{T+1,nk}, f_{T+1,nk}) is 0.")
    if table.coupled_by:
        lines.append(f"No one-sample form: {', '.join(table.coupled_by)} couples the samples of a batch, "
                     "so every batched quantity keeps its batch index n.")
    elif not sample and table.batch_size is not None:
        lines.append("One sample: leave out the batch index n everywhere (x_{j}, \\delta_{k}); then N = 1.")
    lines.append("Functions: \\exp or e^{...}, \\log, \\ln, \\tanh, \\sigma (the sigmoid; \\sigma^{2}_{c} is a name), "
                 "\\sqrt, \\operatorname{erf}, \\Phi and \\varphi (the standard normal's distribution and density), "
                 "\\operatorname{softplus}, \\operatorname{sign}, |x| (or \\left| x \\right|), \\pi; [x > 0] and "
                 "[0 \\le a \\le K - 1] are 1 where they hold, else 0.")
    lines.append("Plain syntax: delta[k]*y[j], sum(delta[k]*w[k,j], k), delta.T @ X, sum(delta, axis=0); a name "
                 "printed with a tag or an accent by its plain word above (W_5[k, j], dy_4[n, f], W_h @ X); "
                 "functions exp, log, tanh, sigmoid, sqrt, erf, Phi, phi, softplus, sign, abs.")
    return "\n".join(lines)


@lru_cache(maxsize=32)
def _op_names(op) -> Names:
    return op_names(op)


@lru_cache(maxsize=32)
def _chain_names(names: tuple) -> Names:
    from derive.engine.chain import chain as make_chain
    return chain_names(make_chain(names, backward=False))


def plain_element(entry, sample: bool) -> str:
    """How the plain syntax writes an element whose printed name it cannot spell (``w^{(5)}_{kj}`` is
    ``W_5[k, j]``, ``\\delta^{y^{(4)}}_{nf}`` is ``dy_4[n, f]``, ``\\hat{x}_{ncs}`` is ``xhat[n, c, s]``): its first
    name that is a plain word; empty where the printed name is one already, or none is."""
    words = [w for w in entry.names if re.fullmatch(F.PLAIN_NAME, w)]
    if not words or re.fullmatch(F.PLAIN_NAME, entry.head()):
        return ""
    letters = entry.letters_in(sample)
    return f"{words[0]}[{', '.join(letters)}]" if letters else words[0]


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
    ``\\vec{\\sigma}^{2}``, ``\\hat{\\vec{x}}``, ``\\vec{y}^{(3)}``, ``\\vec{\\delta}^{\\hat{x}}``."""
    base, sup = re.fullmatch(r"(.+?)((?:\^\{.*\})?)", tex).groups()  # (\delta^{\hat{x}}: nested braces)
    accent = re.fullmatch(r"\\(hat|tilde|bar)\{(.+)\}", base)
    if accent:
        return rf"\{accent[1]}{{{command}{{{accent[2]}}}}}{sup}"
    return f"{command}{{{base}}}{sup}"


def _wrt_name(target: Target, sample: bool) -> str:
    """What --wrt accepts for a target: the op's input name, or the chain's quantity (delta_j, w_kj)."""
    entry = target.entry
    letters = "".join(target.letters(sample))
    if target.steps:  # an unrolled cell's quantity: its name in the code (W_hh, da, g_h, h for h_0)
        word = str(entry.value.label) if target.is_gradient else plain_element(entry, sample).split("[")[0]
        return f"{word or entry.names[0]} ({target.short(sample)})"
    if entry.layer is None and hasattr(entry.value, "label") and target.is_gradient:
        name = str(entry.value.label)
        return f"{name} ({entry.names[0]}_{letters})" if name != entry.names[0] else f"{name}_{letters}"
    return f"{entry.names[0]}_{letters}"


def _designator(names: Names, part: F.Node, sample: bool, text: str):
    """``\\frac{\\partial E}{\\partial w_{kj}}`` or an error term ``\\delta_j`` on the left: (entry, letters)."""
    resolver = Resolver(names.table, sample, text)
    if isinstance(part, F.Frac) and isinstance(part.num, F.Partial) and isinstance(part.den, F.Partial):
        if not (isinstance(part.num.arg, F.Name) and part.num.arg.word == "E"):
            raise F.FormulaError("the left-hand side must be a derivative of E", part.pos or None, text)
        wrt = part.den.arg
        if not isinstance(wrt, F.Name):
            raise F.FormulaError("differentiate by one tensor element, such as w_{kj}", part.pos or None, text)
        whole = resolver.subscripted_whole(wrt)  # W_{ih}: the whole array, not W indexed by i and h
        if whole is not None:
            return whole, None, wrt
        entry = resolver.lookup(wrt)
        if entry is None:
            raise F.FormulaError(f"unknown symbol {wrt.word!r}", wrt.pos or None, text)
        return entry, wrt.indices, wrt
    if isinstance(part, F.Name):
        entries = names.table.named(part.word)
        if entries and all(e.kind == "error term" for e in entries):
            return resolver.lookup(part), part.indices, part
    return None


def _choose_target(names: Names, wrt, designators, sample, text):
    """The quantity (from ``wrt`` and/or the left-hand side) and the letters the formula writes it with."""
    chosen = []
    if wrt is not None:
        chosen.append(_wrt_target(names, wrt, sample) + (None,))
    for entry, letters, node in designators:
        chosen.append((_target_of(names, entry), letters, node))
    if not chosen:
        raise ValueError("wrt: say which gradient the formula is for (--wrt, e.g. "
                         f"{', '.join(_wrt_name(t, sample) for t in names.targets)}), or write its left-hand side")
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
        if names.table.letter_sizes is not None and tuple(l.rstrip("'") for l in letters) != expected:
            raise F.FormulaError(f"the left-hand side writes {''.join(letters)}; in the article's notation it is "
                                 f"{target.short(sample)} (the later layer's node first)", None, text)
    return target, letters


def _lookup_either_form(names, node, sample, text):
    """--wrt may name a chain's quantity as the article does (delta_j) even for a formula in batch form."""
    try:
        return Resolver(names.table, sample, text).lookup(node)
    except F.FormulaError:
        if sample or names.table.batch_size is None:
            raise
        return Resolver(names.table, True, text).lookup(node)


def _target_of(names: Names, entry) -> Target:
    if entry.kind == "intermediate" and entry.names[0] == "net":  # dE/dnet_j is the error term delta_j
        for t in names.targets:
            if not t.is_gradient and t.entry.layer == entry.layer:
                return t
    return names.target(entry)


def _wrt_target(names: Names, wrt: str, sample: bool):
    if not isinstance(wrt, str) or not wrt.strip():
        raise ValueError("wrt: expected a name such as W, x, delta_j or w_kj")
    text = wrt.strip()
    for t in names.targets:  # an op input by name: W, x, b
        if text in (t.entry.value.name if hasattr(t.entry.value, "name") else "",) and t.entry.layer is None:
            return t, None
    for t in names.targets:  # a quantity by its plain word: da, g_h, dy_4
        if text in t.entry.names and re.fullmatch(F.PLAIN_NAME, text) and t.entry.layer is None:
            return t, None
    match = re.fullmatch(r"(\\?[A-Za-z]+)_([A-Za-z']+)", text)
    if match:
        text = f"{match.group(1)}_{{{match.group(2)}}}"
    try:
        tree = F.parse(text, "latex")
    except F.FormulaError as error:
        raise ValueError(f"wrt: {str(error).removeprefix('formula: ')}") from None
    part = canonical(names.table, tree).parts[0]
    if len(tree.parts) != 1:
        raise ValueError("wrt: name one quantity")
    known = ", ".join(_wrt_name(t, sample) for t in names.targets)
    try:
        if isinstance(part, F.Frac):
            found = _designator(names, F.Equation(1, (part, F.Num(0, 0))).parts[0], sample, text)
            entry, letters = found[0], found[1]
        elif isinstance(part, F.Name):
            entry, letters = _lookup_either_form(names, part, sample, text), part.indices
    except F.FormulaError as error:  # about the --wrt text, not the formula
        raise ValueError(f"wrt: {error.message.split(';')[0]}; the quantities are {known}") from None
    if isinstance(part, (F.Frac, F.Name)):
        if entry is None:
            raise ValueError(f"wrt: unknown quantity {wrt!r}; the quantities are {known}")
    else:
        raise ValueError(f"wrt: expected a name such as W, x, delta_j or w_kj, got {wrt!r}")
    target = _target_of(names, entry)
    if letters is not None and names.table.letter_sizes is not None:
        written = tuple(l.rstrip("'") for l in letters)
        if written not in (target.letters(True), target.letters(False)):
            raise ValueError(f"wrt: {wrt} is {target.short(sample)} in the article's notation")
        letters = None
    return target, letters


def _reading(names: Names, quantity: Target, letters, part, sample, text):
    """The formula's meaning, or the ``ShapeMismatch`` that makes it wrong; a malformed formula or an
    unknown name raises, before anything is derived."""
    try:
        return _resolve(names, quantity, letters, part, sample, text)
    except ShapeMismatch as error:
        return error


def _resolve(names, target, letters, part, sample, text) -> Meaning:
    """The formula's meaning, its free letters renamed to the target's (by the left-hand side, if given)."""
    want = target.letters(sample)
    axes = target.axes(sample)
    written = tuple(letters) if letters is not None else want
    free_sizes = {u: size for u, (_, size) in zip(written, axes)}
    resolver = Resolver(names.table, sample, text, free_sizes, quantity=target.short(sample),
                        vector=vector_mode(names.table, part, sample), strict=True)
    meaning = resolver.finish(resolver.resolve(part), axes)
    if written != want:
        renames = {index(u): index(t) for u, t in zip(written, want)}
        meaning.expr = substitute_indices(meaning.expr, renames)
        mapping = dict(zip(written, want))
        meaning.free = tuple(sorted(mapping.get(c, c) for c in meaning.free))
        meaning.ranges = {mapping.get(c, c): s for c, s in meaning.ranges.items()}
    return meaning


def read(formula: str, op: str | None = None, wrt: str | None = None, chain=None, syntax: str = "auto",
         derivatives: bool = False) -> sp.Expr:
    """The SymPy index form a formula stands for, in the op's or chain's names (one sample: as ``chain.sample_form``).

    With ``wrt`` the free indices are that gradient's and a matrix formula is
    laid onto its axes; ``derivatives`` keeps ``\\frac{\\partial a}{\\partial b}``
    as an unevaluated ``Derivative`` (for reading back what the tool printed).
    """
    from derive.engine.chain import sample_form
    names = names_of(op, chain)
    tree = canonical(names.table, F.parse(formula, syntax))
    if len(tree.parts) != 1:
        raise F.FormulaError("read one expression at a time")
    part = tree.parts[0]
    sample = sample_mode(names.table, part)
    axes, free_sizes = None, {}
    if wrt is not None:
        target, _ = _wrt_target(names, wrt, sample)
        axes = target.axes(sample)
        free_sizes = {t: size for t, (_, size) in zip(target.letters(sample), axes)}
    resolver = Resolver(names.table, sample, formula, free_sizes, derivatives=derivatives,
                        vector=vector_mode(names.table, part, sample))
    expr = resolver.finish(resolver.resolve(part), axes).expr
    return sample_form(expr) if sample else expr
