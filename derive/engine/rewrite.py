"""The simplification pipeline that brings a raw derivative to textbook form.

Each step is a plain function ``expr -> expr`` with one job: split and
factor sums, fold named intermediates back in (``exp(-x)/(1+exp(-x))^2``
becomes ``y(1-y)``), apply identities (``sum_k t_k = 1``), and put signs
in reading order. ``simplify()`` is never called: it is slow and destroys
the structure we want to keep (../shared/SYMPY-NOTES.md).
"""
from __future__ import annotations

from functools import lru_cache

import sympy as sp

from derive.engine.deltas import make_sum
from derive.define.symbols import Intermediate, IntermediateElement, Iverson, Tensor, index_symbols, rebuild


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
    """Replace every match of ``pattern`` by ``template`` (its wildcards filled in)."""
    def found(node):
        return isinstance(node, sp.Basic) and match(pattern, node, wilds) is not None

    def value(node):
        return template.xreplace(match(pattern, node, wilds))

    return expr.replace(found, value)


# -- folding intermediates ----------------------------------------------------

def inline(expr: sp.Expr) -> sp.Expr:
    """Replace every intermediate by its definition, recursively."""
    while expr.has(IntermediateElement):
        expr = expr.replace(lambda e: isinstance(e, IntermediateElement),
                            lambda e: e.base.at(*e.indices, avoid=expr.free_symbols))
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
    batch norm. A fold is kept only when it lowers the cost.
    """
    for _ in range(2 * len(intermediates) + 1):
        best = expr
        for node in reversed([n for n in intermediates if n.index]):
            for candidate in _folds(expr, node):
                if cost(candidate) < cost(best):
                    best = candidate
        if best == expr:
            return expr
        expr = best
    return expr


def _folds(expr: sp.Expr, node: Intermediate):
    """Every rewrite of ``expr`` through one kernel of ``node``'s definition."""
    definition = node.definition
    wilds = index_wilds(node.index)
    bound = {v for s in sp.preorder_traversal(definition) if isinstance(s, sp.Sum) for v, *_ in s.limits}
    for kernel in _kernels(definition, node.index, bound):
        solved = _inverse(definition, kernel, node[node.index])
        if solved is None:
            continue
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
    elements = {e for e in kernel.atoms(sp.Indexed) if isinstance(e.base, Tensor)}
    if reduced.count(u) != 1 or reduced.has(sp.Piecewise, Iverson) or reduced.has(*elements):
        return None
    try:
        solutions = sp.solve(sp.Eq(v, reduced), u)
    except (NotImplementedError, ValueError, TypeError, AttributeError):
        return None
    if len(solutions) != 1 or solutions[0].has(sp.nan, sp.Piecewise):
        return None
    (solution,) = solutions
    if sp.cancel(sp.together(solution.xreplace({v: reduced}) - u)) != 0:
        return None
    _, denominator = sp.fraction(sp.together(solution.xreplace({v: value})))
    if any(f.is_zero is not False for f in sp.Mul.make_args(denominator)):
        return None
    return solution.xreplace({v: value})


def _place(ctx, args, index):
    present = [i for i in index if i in ctx.free_symbols]
    return ctx.xreplace(dict(zip(present, args)))


def _kernels(definition, index, bound):
    """Subexpressions that hold every free index and no bound one, outermost first."""
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
        candidates += [_outside_calls(common_factors, expr), _outside_calls(sp.factor, expr)]
    expr = min(candidates, key=_size)  # the first of the shortest: factor only where it shortens
    return fix_signs(expr)


def common_factors(expr: sp.Expr) -> sp.Expr:
    """Each sum with the factors all its terms share taken out, nothing expanded:
    ``σ + x σ (1 - σ)`` is ``σ (1 + x (1 - σ))``. Numbers come out only when every term has the same."""
    def visit(node):
        if not node.args or isinstance(node, (sp.Indexed, sp.Sum)):
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


def fix_signs(expr: sp.Expr) -> sp.Expr:
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
        return node
    return visit(expr)

