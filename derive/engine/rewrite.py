"""The simplification pipeline that brings a raw derivative to textbook form.

Each step is a plain function ``expr -> expr`` with one job: split and
factor sums, fold named intermediates back in (``exp(-x)/(1+exp(-x))^2``
becomes ``y(1-y)``), apply identities (``sum_k t_k = 1``), and put signs
in reading order. ``simplify()`` is never called: it is slow and destroys
the structure we want to keep (../shared/SYMPY-NOTES.md).
"""
from __future__ import annotations

import itertools
from functools import lru_cache

import sympy as sp

from derive.define.functions import Sigmoid
from derive.engine.deltas import make_sum
from derive.define.symbols import Intermediate, IntermediateElement, Iverson, Tensor, index_symbols, iverson_form, rebuild


# -- sums ---------------------------------------------------------------------

def normalize(expr: sp.Expr, split: bool = True) -> sp.Expr:
    """One ``Sum`` per index, factors free of the index pulled out, split over terms if ``split``."""
    def visit(node):
        if not node.args or isinstance(node, (sp.Indexed, sp.IndexedBase, Intermediate)):
            return node
        if isinstance(node, sp.Sum):
            body = visit(node.function)
            for v, lo, hi in node.limits:
                body = split_sum(body, v, lo, hi) if split else make_sum(body, v, lo, hi)
            return body
        return rebuild(node, (visit(a) for a in node.args))
    return visit(expr)


def split_sum(body: sp.Expr, v, lo, hi) -> sp.Expr:
    """``Sum(body, (v, lo, hi))`` distributed over the terms of ``body``."""
    body = sp.expand(body, deep=False, power_base=False, power_exp=False, log=False, multinomial=False) \
        if isinstance(body, sp.Mul) and any(isinstance(f, sp.Add) and v in f.free_symbols
                                            for f in body.args) else body
    return sp.Add(*(make_sum(t, v, lo, hi) for t in sp.Add.make_args(body)))


def drop_empty_sums(expr: sp.Expr) -> sp.Expr:
    return expr.replace(lambda e: isinstance(e, sp.Sum) and e.function == 0, lambda e: sp.S.Zero)


def canonical_bound(expr: sp.Expr, prefix: str = "_b") -> sp.Expr:
    """Name each bound index after its nesting depth, so alpha-equivalent sums are equal."""
    def visit(node, depth):
        if not node.args or isinstance(node, (sp.Indexed, sp.IndexedBase)):
            return node
        if isinstance(node, sp.Sum):
            body = node.function
            limits = []
            for offset, (v, lo, hi) in enumerate(reversed(node.limits)):
                new = sp.Symbol(f"{prefix}{depth + offset}", integer=True)
                body = body.xreplace({v: new})
                limits.append((new, lo, hi))
            body = visit(body, depth + len(limits))
            return sp.Sum(body, *reversed(limits))
        return rebuild(node, (visit(a, depth) for a in node.args))
    return visit(expr, 0)


# -- matching with index wildcards -----------------------------------------

def index_wilds(index) -> dict:
    return {i: sp.Wild(f"w_{i}") for i in index}


def match(pattern: sp.Expr, expr: sp.Expr, wilds) -> dict | None:
    """Match ``expr`` against ``pattern``; sums match whatever their bound index is called."""
    if isinstance(pattern, sp.Sum):
        if not isinstance(expr, sp.Sum) or len(expr.limits) != len(pattern.limits):
            return None
        renames, bounds_p, bounds_e = {}, [], []
        for (pv, plo, phi), (ev, elo, ehi) in zip(pattern.limits, expr.limits):
            if pv in expr.free_symbols:
                return None
            renames[ev] = pv
            bounds_p += [plo, phi]
            bounds_e += [elo, ehi]
        return match(sp.Tuple(pattern.function, *bounds_p),
                     sp.Tuple(expr.function.xreplace(renames), *bounds_e), wilds)
    if isinstance(pattern, sp.Tuple):
        found: dict = {}
        for p, e in zip(pattern, expr):
            m = match(p, e, wilds)
            if m is None:
                return None
            for k, v in m.items():
                if found.setdefault(k, v) != v:
                    return None
        return found
    if pattern.has(sp.Sum):
        if type(pattern) is not type(expr) or len(pattern.args) != len(expr.args):
            return None
        return match(sp.Tuple(*pattern.args), sp.Tuple(*expr.args), wilds)
    m = expr.match(pattern)
    if m is None:
        return None
    return m if set(m) <= set(wilds) else None


def replace_pattern(expr: sp.Expr, pattern: sp.Expr, template: sp.Expr, wilds) -> sp.Expr:
    """Replace every match of ``pattern`` by ``template`` (its wildcards filled in).

    A product pattern also matches some of a longer product's factors (``[s <= l] e^{z}`` inside
    ``dp [s <= l] e^{z} / S``), the other factors staying as they are.
    """
    def found(node):
        return isinstance(node, sp.Basic) and _matching(pattern, node, wilds) is not None

    def value(node):
        found_match, rest = _matching(pattern, node, wilds)
        return template.xreplace(found_match) * rest

    return expr.replace(found, value)


def _matching(pattern, node, wilds):
    """(the wildcards' values, the factors of ``node`` the pattern leaves over), or None."""
    m = match(pattern, node, wilds)
    if m is not None:
        return m, sp.S.One
    if not (isinstance(pattern, sp.Mul) and isinstance(node, sp.Mul)):
        return None
    size, factors = len(pattern.args), node.args
    if len(factors) <= size or len(factors) > 10:
        return None
    for chosen in itertools.combinations(range(len(factors)), size):
        m = match(pattern, sp.Mul(*(factors[i] for i in chosen)), wilds)
        if m is not None:
            return m, sp.Mul(*(f for i, f in enumerate(factors) if i not in chosen))
    return None


# -- folding intermediates ----------------------------------------------------

def inline(expr: sp.Expr) -> sp.Expr:
    """Replace every intermediate by its definition, recursively."""
    while expr.has(IntermediateElement):
        avoid = expr.free_symbols  # once per round: found again for every element, it was most of the time
        expr = expr.replace(lambda e: isinstance(e, IntermediateElement),
                            lambda e: e.base.at(*e.indices, avoid=avoid))
    return expr


def nodes(expr: sp.Expr):
    """Preorder traversal that treats an indexed element as a leaf."""
    yield expr
    if not isinstance(expr, sp.Indexed):
        for a in expr.args:
            yield from nodes(a)


def cost(expr: sp.Expr) -> tuple:
    """What folding minimises: elements of inputs left unnamed (less to cache), then size."""
    leaves = list(nodes(expr))
    raw = sum(1 for n in leaves if isinstance(n, sp.Indexed) and isinstance(n.base, Tensor))
    return raw, len(leaves)


def fold(expr: sp.Expr, intermediates) -> sp.Expr:
    """Rewrite ``expr`` in terms of the named intermediates where that makes it simpler.

    For an intermediate ``v = F(u)`` with a kernel ``u`` (a subexpression
    holding every free index of ``v``), solve for ``u`` and substitute it
    wherever it occurs, under any indices. ``exp(-x)`` becomes
    ``(1 - y)/y`` for the sigmoid, ``x`` becomes ``mu + xhat/rstd`` for
    batch norm. A fold is kept only when it lowers the cost; where no
    single fold does, two in a row may (RMSNorm's ``x`` becomes ``xhat/rstd``
    only once ``(eps + sum x^2/D)^{3/2}`` is ``rstd^{-3}``, and neither pays alone).
    """
    named = [n for n in reversed(intermediates) if n.index]

    def singles(e):
        return [c for node in named for c in _folds(e, node)]

    for _ in range(2 * len(intermediates) + 1):
        first = singles(expr)
        best = min(first, key=cost, default=expr)
        if cost(best) >= cost(expr):
            best = min((c for f in first for c in singles(f)), key=cost, default=expr)
        if cost(best) >= cost(expr):
            return expr
        expr = best
    return expr


def _folds(expr: sp.Expr, node: Intermediate):
    """Every rewrite of ``expr`` through one kernel of ``node``'s definition."""
    wilds = index_wilds(node.index)
    for kernel, solved in _solutions(node):
        # Sums the solution mentions (softmax's denominator) are held aside
        # while substituting, or the substitution would reach inside them.
        placeholders = {}
        work = expr
        for m, ctx in enumerate(sorted({s for s in sp.preorder_traversal(solved) if isinstance(s, sp.Sum)},
                                       key=sp.default_sort_key)):
            holder = sp.Function(f"_ctx{m}")(*[wilds[i] for i in node.index if i in ctx.free_symbols])
            work = replace_pattern(work, ctx.xreplace(wilds), holder, set(wilds.values()))
            solved = solved.xreplace({ctx: holder.xreplace({w: i for i, w in wilds.items()})})
            placeholders[holder.func] = ctx
        rewritten = replace_pattern(work, kernel.xreplace(wilds), solved.xreplace(wilds), set(wilds.values()))
        if rewritten == work:
            continue
        for func, ctx in placeholders.items():
            rewritten = rewritten.replace(
                lambda e, f=func: getattr(e, "func", None) == f,
                lambda e, c=ctx: _place(c, e.args, node.index))
        yield tidy_terms(rewritten)


@lru_cache(maxsize=None)
def _solutions(node: Intermediate) -> tuple:
    """Each kernel of ``node``'s definition with its exact inverse, once per intermediate (solving
    is most of folding's time, and the same intermediates are folded into every candidate). Cases
    are matched in the bracket form a derivative writes them in: ReLU's ``a [a > 0]`` folds to ``r``."""
    definition = iverson_form(node.definition)
    bound = {v for s in sp.preorder_traversal(definition) if isinstance(s, sp.Sum) for v, *_ in s.limits}
    found = ((kernel, _inverse(definition, kernel, node[node.index])) for kernel in _kernels(definition, node.index, bound))
    return tuple((kernel, solved) for kernel, solved in found if solved is not None)


@lru_cache(maxsize=4096)
def _inverse(definition, kernel, value):
    """The kernel in terms of ``value`` (the intermediate's element, defined as ``definition``),
    if that inverse is exact and safe; else None.

    Only a kernel that occurs once, with none of its input elements
    elsewhere, is solved for: its inverse is then a chain of one-variable
    inverses, cheap and exact (a kernel that occurs several times, as ``x``
    in the tanh GELU, sent SymPy's solver into a quartic for minutes). The round trip ``kernel -> value -> kernel`` must
    give the kernel back: ReLU's ``y = max(x, 0)`` has no inverse, and
    folding ``x`` into ``y`` there would be wrong for negative inputs. Nor
    may the inverse divide by anything that can be 0 (SiLU's ``y``, dropout's
    ``x``): the folded form would be NaN where the gradient is not.
    """
    u, v = sp.Dummy("u", real=True), sp.Dummy("v", real=True)
    reduced = definition.xreplace({kernel: u})
    if not reduced.has(u) and isinstance(kernel, sp.Mul):  # some of a product's factors
        reduced = definition.subs(kernel, u)
    elements = {e for e in kernel.atoms(sp.Indexed) if isinstance(e.base, Tensor)}
    outside_sums = reduced.replace(lambda e: isinstance(e, sp.Sum), lambda e: sp.Dummy())
    if reduced.count(u) != 1 or outside_sums.has(sp.Piecewise, Iverson) or reduced.has(*elements):
        return None
    try:
        solutions = sp.solve(sp.Eq(v, reduced), u)
    except (NotImplementedError, ValueError, TypeError, AttributeError):
        return None
    if len(solutions) != 1 or solutions[0].has(sp.nan, sp.Piecewise):
        return None
    (solution,) = solutions
    solution = _same_relations(solution, definition)
    if sp.cancel(sp.together(solution.xreplace({v: reduced}) - u)) != 0:
        return None
    _, denominator = sp.fraction(sp.together(solution.xreplace({v: value})))
    if any(f.is_zero is not False for f in sp.Mul.make_args(denominator)):
        return None
    return solution.xreplace({v: value})


def _same_relations(expr: sp.Expr, like: sp.Expr) -> sp.Expr:
    """``expr`` with each condition written as in ``like`` (the solver writes ``r <= l`` as ``l >= r``)."""
    written = {r.canonical: r for r in like.atoms(sp.Rel)}
    return expr.replace(lambda e: isinstance(e, sp.Rel) and e.canonical in written and e not in written.values(),
                        lambda e: written[e.canonical])


def _place(ctx, args, index):
    present = [i for i in index if i in ctx.free_symbols]
    return ctx.xreplace(dict(zip(present, args)))


def _kernels(definition, index, bound):
    """Subexpressions that hold every free index and no bound one, outermost first; of a product,
    also the product of its factors that hold them (a masked softmax's ``[s <= l] e^{z}``)."""
    need = set(index)
    seen = []
    for sub in sp.preorder_traversal(definition):
        if sub in seen or not isinstance(sub, sp.Expr) or sub.is_number:
            continue
        if isinstance(sub, sp.Symbol) or isinstance(sub, sp.Tuple):
            continue
        free = sub.free_symbols
        if need <= free and not (free & bound):
            seen.append(sub)
            if isinstance(sub, sp.Mul):  # the factors outside the normaliser (a masked softmax's sum)
                part = sp.Mul(*(f for f in sub.args if f.free_symbols & need and not f.has(sp.Sum)))
                if part not in seen and part != sub and need <= part.free_symbols and isinstance(part, sp.Mul):
                    seen.append(part)
    return seen


def tidy_terms(expr: sp.Expr) -> sp.Expr:
    """Cancel what the substitution left over, keeping sums intact."""
    expr = normalize(expr)
    return sp.factor_terms(sp.cancel(expr) if not expr.has(sp.Piecewise) else expr)


# -- identities ----------------------------------------------------------------

def apply_identities(expr: sp.Expr, identities) -> sp.Expr:
    """Replace each left-hand side (a sum, under any indices) by its right-hand side."""
    for lhs, rhs in identities:
        wilds = index_wilds(sorted(index_symbols(lhs), key=str))
        expr = replace_pattern(expr, lhs.xreplace(wilds), rhs.xreplace(wilds), set(wilds.values()))
    return expr


def prove(lhs: sp.Expr, rhs: sp.Expr) -> bool:
    """Show ``lhs = rhs`` from the definitions: inline, normalise, compare."""
    diff = normalize(inline(lhs - rhs))
    diff = canonical_bound(sp.expand(normalize(sp.expand(diff))))
    return sp.expand(diff) == 0


# -- reading order -----------------------------------------------------------

def textbook(expr: sp.Expr) -> sp.Expr:
    """Factor where that shortens, then put signs where a reader expects them.

    ``1 - y^2`` stays as it is; batch norm's terms share a factor and are
    better factored; a common factor comes out without expanding the rest
    (SiLU's ``σ(x)(1 + x(1 - σ(x)))``); ``-y(y - 1)`` reads ``y(1 - y)``.
    Function arguments stay as the definition wrote them.
    """
    candidates = [expr]
    if not expr.has(sp.Piecewise, Iverson):  # cases read best term by term
        for form in dict.fromkeys((expr, one_sided_sigmoids(expr))):
            candidates += [_outside_calls(common_factors, form), _outside_calls(sp.factor, form),
                           _outside_calls(grouped_terms, form), _outside_calls(common_factors, merged_sums(form))]
    expr = min(candidates, key=_size)  # the first of the shortest: factor only where it shortens
    return fix_signs(expr)


def merged_sums(expr: sp.Expr) -> sp.Expr:
    """Sums over the same range added into one (``sum_n a - sum_n b`` is ``sum_n (a - b)``), so that
    what their bodies share can come out (swish's ``sum_n g x^2 σ (1 - σ)``)."""
    def visit(node):
        if not node.args or isinstance(node, sp.Indexed):
            return node
        node = rebuild(node, (visit(a) for a in node.args))
        if not isinstance(node, sp.Add):
            return node
        groups: dict = {}
        rest = []
        for term in node.args:
            coeff, sums = sp.S.One, []
            for f in sp.Mul.make_args(term):
                if isinstance(f, sp.Sum):
                    sums.append(f)
                else:
                    coeff *= f
            if len(sums) == 1 and coeff.is_number:  # (x̂ Σ g x̂ beside Σ g: the x̂ stays outside)
                key = canonical_bound(sp.Sum(sp.S.One, *sums[0].limits))
                groups.setdefault(key, []).append((coeff, sums[0]))
            else:
                rest.append(term)
        merged = []
        for members in groups.values():
            if len(members) == 1:
                coeff, total = members[0]
                merged.append(coeff * total)
                continue
            limits = members[0][1].limits
            body = sp.S.Zero
            for coeff, total in members:
                renames = {old[0]: new[0] for old, new in zip(total.limits, limits)}
                body += coeff * total.function.xreplace(renames)
            merged.append(sp.Sum(body, *limits))
        return sp.Add(*rest, *merged)
    return visit(expr)


def one_sided_sigmoids(expr: sp.Expr) -> sp.Expr:
    """``σ(-a)`` as ``1 - σ(a)`` wherever ``σ(a)`` occurs too: one function of one argument, so that
    terms can cancel (binary cross-entropy's ``(1 - t) σ(z) - t σ(-z)`` is ``σ(z) - t``)."""
    calls = {e for e in sp.preorder_traversal(expr) if isinstance(e, Sigmoid)}
    return expr.xreplace({c: 1 - Sigmoid(-c.args[0]) for c in calls
                          if c.args[0].could_extract_minus_sign() and Sigmoid(-c.args[0]) in calls})


def common_factors(expr: sp.Expr) -> sp.Expr:
    """Each sum with the factors all its terms share taken out, nothing expanded:
    ``σ + x σ (1 - σ)`` is ``σ (1 + x (1 - σ))``. Numbers come out only when every term has the same."""
    def visit(node):
        if not node.args or isinstance(node, sp.Indexed):
            return node
        node = rebuild(node, (visit(a) for a in node.args))
        if not isinstance(node, sp.Add):
            return node
        powers = [term.as_powers_dict() for term in node.args]
        shared = {}
        for base, exponent in powers[0].items():
            if base.is_number or not all(base in p for p in powers[1:]):
                continue
            exponents = [p[base] for p in powers]
            if all(e.is_positive and e.is_integer for e in exponents):
                shared[base] = min(exponents)
        coefficients = {term.as_coeff_Mul()[0] for term in node.args}
        number = coefficients.pop() if len(coefficients) == 1 else sp.S.One
        factor = number * sp.Mul(*(b ** e for b, e in shared.items()))
        if factor == 1:
            return node
        return factor * sp.Add(*(term / factor for term in node.args))
    return visit(expr)


def grouped_terms(expr: sp.Expr) -> sp.Expr:
    """Each sum with a factor that some of its terms share taken out of those, where that shortens it:
    SiLU's ``σ + y - σ y`` is ``σ + y (1 - σ)``. (A factor of every term is ``common_factors``' job.)"""
    def visit(node):
        if not node.args or isinstance(node, (sp.Indexed, sp.Sum)):
            return node
        node = rebuild(node, (visit(a) for a in node.args))
        if not isinstance(node, sp.Add) or len(node.args) < 3:
            return node
        powers = [term.as_powers_dict() for term in node.args]
        bases = {b for p in powers for b, e in p.items() if not b.is_number and e.is_positive and e.is_integer}
        best = node
        for base in sorted(bases, key=sp.default_sort_key):
            having = [t for t, p in zip(node.args, powers) if base in p and p[base].is_positive and p[base].is_integer]
            if not 2 <= len(having) < len(node.args):
                continue
            grouped = base * sp.Add(*(t / base for t in having)) + sp.Add(*(t for t in node.args if t not in having))
            if _size(grouped) < _size(best):
                best = grouped
        return best
    return visit(expr)


def _outside_calls(step, expr: sp.Expr) -> sp.Expr:
    """``step(expr)`` with every function's argument left as the definition wrote it (factoring
    inside ``tanh(x + a x^3)`` would only make the forward's ``tanh`` a different one)."""
    calls = sorted({e for e in sp.preorder_traversal(expr) if isinstance(e, sp.Function) and e.args
                    and not isinstance(e, Iverson)}, key=sp.default_sort_key)
    held = {call: sp.Dummy(f"call{k}", **_assumptions(call)) for k, call in enumerate(calls)}
    result = step(expr.xreplace(held))
    return result.xreplace({v: k for k, v in held.items()})


def _assumptions(call) -> dict:
    return {"positive": True} if call.is_positive else {"real": True} if call.is_real else {}


def _size(expr) -> int:
    """Leaves, not counting signs and unit coefficients (``1 - y`` and ``y - 1`` tie)."""
    return sum(1 for n in nodes(expr)
               if isinstance(n, sp.Indexed) or not n.args and not (n.is_number and abs(n) == 1))


#: Odd functions, f(-a) = -f(a): a minus sign may go into their argument.
ODD = (sp.sign, sp.tanh, sp.erf)


def fix_signs(expr: sp.Expr) -> sp.Expr:
    """A product's minus sign taken into one of its differences (``-(t - y)`` is ``y - t``) or into an
    odd function's (``-sign(t - y)`` is ``sign(y - t)``), and two
    differences in SymPy's order flipped together (``(t - y)/(y - 1)`` is ``(y - t)/(1 - y)``), so that
    an error reads prediction minus target and a complement reads ``1 - y``, as in the literature."""
    def visit(node):
        if not node.args or isinstance(node, (sp.Indexed, sp.IndexedBase)):
            return node
        node = rebuild(node, (visit(a) for a in node.args))
        if isinstance(node, sp.Mul):
            coeff, factors = node.as_coeff_mul()
            if coeff.is_negative:
                adds = [f for f in factors if isinstance(f, sp.Add)]
                if adds:
                    flip = max(adds, key=lambda a: sum(t.could_extract_minus_sign() for t in a.args))
                    rest = list(factors)
                    rest.remove(flip)
                    return sp.Mul(-coeff, -flip, *rest)
                odd = [f for f in factors if isinstance(f, ODD) and isinstance(f.args[0], sp.Add)]
                if odd:  # -δ sign(t - y) is δ sign(y - t)
                    rest = list(factors)
                    rest.remove(odd[0])
                    return sp.Mul(-coeff, type(odd[0])(-odd[0].args[0]), *rest)
            pair = [f for f in factors if _difference(f) is not None and not _difference(f).could_extract_minus_sign()]
            if len(pair) == 2:
                rest = [f for f in factors if f not in pair]
                return sp.Mul(coeff, *rest, *(_flipped(f) for f in pair))
        return node
    return visit(expr)


def _difference(factor):
    """The ``a - b`` of a factor ``a - b`` or ``(a - b)^{odd}``: one positive and one negative term."""
    base = factor.base if isinstance(factor, sp.Pow) and factor.exp.is_integer and factor.exp.is_odd else factor
    if isinstance(base, sp.Add) and len(base.args) == 2 \
            and sorted(t.could_extract_minus_sign() for t in base.args) == [False, True]:
        return base
    return None


def _flipped(factor):
    return -factor if isinstance(factor, sp.Add) else sp.Pow(-factor.base, factor.exp)

