"""A recurrent cell's generated statements split by what they read, to run the cell over a sequence.

Unrolled over T steps, most of a cell needs no recurrence: whatever reads the per-step inputs and the
weights but no state (an LSTM's ``x W_ih^T``) can run once for every step, with time folded into the
batch (``(T N, ...)``: step t's samples are rows ``t N`` to ``t N + N - 1``); and in the backward pass,
only the states' gradients pass from step to step: the rest (``dx``, the weights' gradients) can run
once after the last step, on every step's error terms stacked alike. A sum over the samples n then runs
over (t, n): for a weight, the sum over the steps of the cell's dE/dW, which is backpropagation through
time's (``derive.engine.unroll``).

That holds when the batch index is a pure batch index: each sample's values read that sample alone,
and a sum over n appears only in the weights' gradients, linearly. ``refusal`` checks it on the
derivation; the split itself works on the statements the cell's module prints (``module_context``),
by the names each reads and writes, so the code over a sequence is the cell's own code.
"""
from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import dataclass, field

import sympy as sp

from derive.engine.backprop import upstream_of
from derive.engine.derivation import Derivation
from derive.engine.rewrite import nodes

STATIC, FOLDED, STEP = 0, 1, 2  # a weight's, a per-step input's (all steps at once), a state's (step by step)


# -- the condition, on the derivation ------------------------------------------------------------

def refusal(d: Derivation, batch: sp.Symbol, weights: set) -> str | None:
    """Why the cell's batch index is no pure batch index (the construct, in a few words); None if it is."""
    op = d.op
    batched = {i.tensor for i in op.inputs if batch in i.shape} | {n for n in op.intermediates if batch in n.shape}
    for i in op.inputs:
        if batch in i.shape[1:] or (i.name not in weights and tuple(i.shape[:1]) != (batch,)):
            return f"{i.name} has no batch axis {batch} first"
    for node in op.intermediates:
        if batch in node.shape[1:]:
            return f"{node.name} has no batch axis {batch} first"
        why = _mixed(node.definition, node.index[0] if batch in node.shape else None, batched, batch)
        if why:
            return f"{node.name} {why}"
    reads = batched | {a.tensor for a in d.adjoints} | {upstream_of(op, y) for y in op.outputs}
    for a in d.adjoints:
        why = _mixed(a.expr, a.index[0], reads, batch)
        if why:
            return f"the error term of {a.node.name} {why}"
    for g in list(d.backprop) + (list(d.gradients) if d.written_out else []):
        if g.input.name in weights:
            why = _summed_over_samples(g.expr, reads, batch)
        else:
            why = _mixed(g.expr, g.index[0], reads, batch)
        if why:
            return f"the gradient of {g.input.name} {why}"
    return None


def _mixed(expr, sample, batched, batch) -> str | None:
    """Whether ``expr`` (sample ``sample``'s value; None: a weight's) reads other samples."""
    for e in nodes(expr):
        if isinstance(e, sp.Sum) and any(hi - lo + 1 == batch for _, lo, hi in e.limits):
            return "sums over the samples"
        if isinstance(e, sp.Indexed) and e.base in batched and (sample is None or e.indices[0] != sample):
            return "reads another sample" if sample is not None else "reads the samples"
    if batch in expr.free_symbols:
        return f"reads the batch size {batch}"
    return None


def _summed_over_samples(expr, batched, batch) -> str | None:
    """Whether a weight's gradient is a sum over the samples of each sample's own terms, linearly."""
    sums = {e for e in nodes(expr) if isinstance(e, sp.Sum) and any(hi - lo + 1 == batch for _, lo, hi in e.limits)}
    atoms = {s: sp.Dummy(f"sum{k}") for k, s in enumerate(sorted(sums, key=sp.default_sort_key))}
    for total in atoms:
        over = [v for v, lo, hi in total.limits if hi - lo + 1 == batch]
        if len(over) > 1:
            return "sums over pairs of samples"
        (sample,) = over
        inner = sp.Sum(total.function, *[lim for lim in total.limits if lim[0] != sample]) \
            if len(total.limits) > 1 else total.function
        why = _mixed(inner, sample, batched, batch)
        if why:
            return why
    outer = expr.xreplace(atoms)
    if _mixed(outer, None, batched, batch):
        return "reads the samples outside a sum over them"
    if any(sp.diff(outer, s).has(*atoms.values()) for s in atoms.values()) or outer.xreplace(
            {s: 0 for s in atoms.values()}) != 0:
        return "is no sum over the samples of their own terms"
    return None


# -- the statements, by the names they read and write --------------------------------------------

@dataclass(frozen=True)
class Line:
    text: str
    reads: frozenset
    writes: frozenset


def line(text: str) -> Line:
    """A printed statement with the names it reads and the names it binds or changes in place (a bare
    call, ``np.exp(a, out=a)``, is taken to change everything it reads)."""
    reads, writes = set(), set()
    for stmt in ast.parse(text).body:
        loaded = {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        reads |= loaded
        if isinstance(stmt, (ast.Assign, ast.AugAssign)):
            for target in stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]:
                bound = {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
                writes |= bound
                if isinstance(stmt, ast.AugAssign) or not isinstance(target, (ast.Name, ast.Tuple)):
                    reads |= bound  # changed in place
        else:
            called = {n.func.id for n in ast.walk(stmt) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
            writes |= loaded - called - {"np"}
    return Line(text, frozenset(reads), frozenset(writes))


def renamed(text: str, names: dict) -> str:
    """``text`` with each variable in ``names`` renamed (attributes and keyword names left alone); a key
    ``W.T`` renames that transpose."""
    tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    rows = text.split("\n")
    for pos in range(len(tokens) - 1, -1, -1):
        tok = tokens[pos]
        before = tokens[pos - 1].string if pos else ""
        after = tokens[pos + 1].string if pos + 1 < len(tokens) else ""
        end = tok.end
        key = tok.string
        if after == "." and pos + 2 < len(tokens) and f"{key}.{tokens[pos + 2].string}" in names:
            key, end = f"{key}.{tokens[pos + 2].string}", tokens[pos + 2].end
        elif after == "=":  # a keyword argument's name
            continue
        if tok.type == tokenize.NAME and key in names and before != ".":
            (row, start), (_, stop) = tok.start, end
            rows[row - 1] = rows[row - 1][:start] + names[key] + rows[row - 1][stop:]
    return "\n".join(rows)


def _terms(expr: ast.expr, source: str, sign: int = 1) -> list:
    """A sum's terms as (sign, the term as written, its node)."""
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.Add, ast.Sub)):
        return _terms(expr.left, source, sign) + _terms(expr.right, source,
                                                        sign if isinstance(expr.op, ast.Add) else -sign)
    if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.USub):
        return _terms(expr.operand, source, -sign)
    text = ast.get_source_segment(source, expr)
    if isinstance(expr, (ast.IfExp, ast.Compare, ast.BoolOp, ast.Lambda, ast.NamedExpr, ast.UnaryOp)):
        text = f"({text})"  # an operand of + as the line wrote it, in its parentheses
    return [(sign, text, expr)]


def _joined(terms) -> str:
    """Terms (sign, text, node) as one sum."""
    text = ""
    for sign, part, _ in terms:
        text += (" - " if sign < 0 else " + ") + part if text else ("-" if sign < 0 else "") + part
    return text


@dataclass
class _Statement:
    """One printed line, or a sum accumulated over several (``a = A; a += B``): its (sign, text, node) terms."""

    lines: list
    name: str | None = None
    terms: list = field(default_factory=list)


def _statements(texts: list) -> list:
    """The lines, a sum and the lines that add to it in place taken as one statement."""
    out = []
    for text in texts:
        body = ast.parse(text).body
        stmt = body[0] if len(body) == 1 else None
        last = out[-1] if out else None
        if isinstance(stmt, ast.AugAssign) and isinstance(stmt.op, (ast.Add, ast.Sub)) \
                and isinstance(stmt.target, ast.Name) and last is not None and last.name == stmt.target.id \
                and stmt.target.id not in _names(stmt.value):
            sign = 1 if isinstance(stmt.op, ast.Add) else -1
            last.lines.append(text)
            last.terms += _terms(stmt.value, text, sign)
        elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name) \
                and stmt.targets[0].id not in _names(stmt.value):
            out.append(_Statement([text], stmt.targets[0].id, _terms(stmt.value, text)))
        else:
            out.append(_Statement([text]))
    return out


def _names(expr: ast.AST) -> set:
    return {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)}


# -- the forward pass ----------------------------------------------------------------------------

@dataclass
class Forward:
    hoisted: list  # lines run once, on every step at once
    step: list  # lines run at each step, the hoisted arrays they read as this step's rows (``<name>_t``)
    rows: dict  # hoisted array -> the name of its step's rows in ``step``
    kinds: dict  # name -> STATIC, FOLDED or STEP


def split_forward(texts: list, kinds: dict, batch: str, sliceable, taken: set) -> Forward:
    """The forward lines as what runs once (reading no state) and what runs at each step.

    ``kinds`` gives the inputs' kinds; ``sliceable(name)``: whether an array has the batch axis first
    (a hoisted array read at each step is sliced by rows). A sum with terms of both kinds (``a = h U^T
    + x W^T + b``) is split: its terms that read no state are added up once (``a_x``), for every step.
    """
    statements = _statements(texts)
    demoted: set = set()
    while True:
        hoisted, step, known, writers, parts = [], [], dict(kinds), {}, {}
        names = set(taken)
        for pos, st in enumerate(statements):
            kind, part, lines = _placed(st, known, pos in demoted, names)
            placed = [(t, kind) for t in lines]
            if part:  # a sum's terms that read no state, added up once: laid out as the sum is
                parts[part[0]] = st.name
                placed.insert(0, (part[1], FOLDED))
            for text, of in placed:
                for name in line(text).writes:
                    known[name] = of
                    writers.setdefault(name, set()).add(pos)
                (step if of == STEP else hoisted).append((pos, text))
        wrong = _forward_hazards(hoisted, step, known, writers, batch, lambda n: sliceable(parts.get(n, n)))
        if not wrong - demoted:
            break
        demoted |= wrong
    rows = {}
    for _, text in step:
        for name in sorted(line(text).reads):
            if known.get(name) == FOLDED and name not in rows:
                rows[name] = free_name(f"{name}_t", names)
    step = [renamed(t, rows) for _, t in step]
    # a weight's transpose a step reads, laid out once: a matrix product reads it contiguous
    transposed = {n: free_name(f"{n}_T", names) for t in step for n in sorted(_transposes(t))
                  if known.get(n, STATIC) == STATIC and n in kinds}
    taken |= names
    return Forward([t for _, t in hoisted] + [f"{t} = np.ascontiguousarray({n}.T)" for n, t in transposed.items()],
                   [renamed(t, {f"{n}.T": tn for n, tn in transposed.items()}) for t in step], rows, known)


def _transposes(text: str) -> set:
    """The names read transposed in ``text`` (``W.T``)."""
    return {n.value.id for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Attribute) and n.attr == "T"
            and isinstance(n.value, ast.Name)}


def _placed(st: _Statement, known: dict, demoted: bool, taken: set):
    """(kind, (name, hoisted line) or None, the lines of that kind) for a statement: a sum with terms of
    both kinds is split in two, the terms that read no state added up once, under a name of their own."""
    kind = max((known.get(n, STATIC) for text in st.lines for n in line(text).reads), default=STATIC)
    if demoted or kind != STEP or st.name is None:
        return (STEP if demoted else kind), None, st.lines
    read = [max((known.get(n, STATIC) for n in _names(node)), default=STATIC) for _, _, node in st.terms]
    free = [t for t, k in zip(st.terms, read) if k != STEP]
    kept = [t for t, k in zip(st.terms, read) if k == STEP]
    if FOLDED not in read:
        return STEP, None, st.lines
    part = free_name(f"{st.name}_x", taken)
    (sign, first, node), rest = kept[0], kept[1:]
    if sign > 0 and not isinstance(node, (ast.Name, ast.Subscript, ast.Attribute)):  # a new array: add in place
        lines = [f"{st.name} = {first}", f"{st.name} += {part}"]
    else:
        lines = [f"{st.name} = {part} {'-' if sign < 0 else '+'} {first}"]
    lines += [f"{st.name} {'-=' if s < 0 else '+='} {text}" for s, text, _ in rest]
    return STEP, (part, f"{part} = {_joined(free)}"), lines


def _forward_hazards(hoisted, step, known, writers, batch, sliceable) -> set:
    """Statements that must run at each step after all: a hoisted one whose name a step's line reads
    before it or changes after it; one whose array a step reads but cannot slice; a hoisted one that
    reads the batch size beside the steps' arrays (folded, the batch is T N)."""
    wrong = set()
    first_use: dict = {}
    for pos, text in step:
        for name in line(text).reads | line(text).writes:
            first_use.setdefault(name, pos)
    read_by_steps = set().union(*(line(t).reads for _, t in step))
    for pos, text in hoisted:
        parsed = line(text)
        if batch in parsed.reads and any(known.get(n) == FOLDED for n in parsed.reads - {batch}):
            wrong.add(pos)
        for name in parsed.writes:
            if first_use.get(name, pos) < pos or known.get(name) == STEP:
                wrong.add(pos)
            if name in read_by_steps and known.get(name) == FOLDED and not sliceable(name):
                wrong |= writers.get(name, set())
    return wrong


def free_name(name: str, taken: set) -> str:
    """``name``, or with underscores after it until no other name is the same; then taken."""
    while name in taken:
        name += "_"
    taken.add(name)
    return name


# -- the backward pass ---------------------------------------------------------------------------

class Unsplittable(ValueError):
    """The backward lines cannot be split into what recurs and what runs once after the steps."""


@dataclass
class Backward:
    step: list  # lines run at each step, last step first: what the states' gradients need
    after: list  # lines run once after the steps, on every step's arrays stacked
    rows: dict  # hoisted array a step reads -> the name of its step's rows in ``step``
    loaded: list  # arrays the forward kept step by step that a step reads, each at its step
    kept: list  # arrays each step computes (or is given) that ``after`` reads: kept step by step
    stacked: list  # arrays ``after`` reads with every step stacked, (T N, ...)


def split_backward(texts: list, kinds: dict, upstreams: set, recurring: set, once: set, batch: str, stackable,
                   taken: set) -> Backward:
    """The backward lines as what each step needs to pass the states' gradients (``recurring``) back,
    and the rest, run once after the steps (``once``: the weights' and the per-step inputs' gradients,
    which must be among the rest). ``kinds``: the cached arrays' and the upstream gradients' kinds;
    ``upstreams``: the gradients arriving at the outputs, given at each step; ``stackable(name)``: whether
    an array has the batch axis first. An Unsplittable if it cannot."""
    parsed = [line(t) for t in texts]
    needed, at_step = set(recurring), set()
    for pos in range(len(parsed) - 1, -1, -1):
        if parsed[pos].writes & needed:
            at_step.add(pos)
            needed |= parsed[pos].reads
    step = [parsed[p] for p in sorted(at_step)]
    after = [(p, parsed[p]) for p in range(len(parsed)) if p not in at_step]
    computed = set().union(*(s.writes for s in step))
    if computed & once:
        raise Unsplittable(f"each step reads the gradient {sorted(computed & once)[0]}")
    for pos, parsed_line in after:
        changed = {n for q in at_step if q > pos for n in parsed[q].writes} & parsed_line.reads
        if changed:
            raise Unsplittable(f"{sorted(changed)[0]} is read once after the steps but changed at each")
    read_by_step = set().union(*(s.reads for s in step)) - computed
    rows = {n: free_name(f"{n}_t", taken) for n in sorted(read_by_step) if kinds.get(n) == FOLDED}
    loaded = sorted(n for n in read_by_step if kinds.get(n) == STEP and n not in upstreams)
    written, outside = set(), []
    for _, parsed_line in after:
        outside += [n for n in sorted(parsed_line.reads - written) if n not in outside]
        written |= parsed_line.writes
    if batch in outside:
        raise Unsplittable(f"what runs after the steps reads the batch size {batch}")
    kept = [n for n in outside if n in computed or n in upstreams]
    stacked = [n for n in outside if n in computed or n in upstreams or kinds.get(n) == STEP]
    for name in [*rows, *stacked]:
        if not stackable(name):
            raise Unsplittable(f"{name} has no batch axis first")
    return Backward([renamed(s.text, rows) for s in step], [s.text for _, s in after], rows, loaded, kept, stacked)
