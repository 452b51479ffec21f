"""Kronecker delta elimination: ``sum_j f(j) [j = q]  ->  f(q)``, range conditions kept.

SymPy's own ``doit()`` wraps each solution in ``Piecewise`` range guards
that block further elimination and is slow (sympy#12751); dropping the
guards is worse: an index solved through an affine expression such as
``p = a - i s`` is only a solution when it lies in the summation range.
This routine solves each delta for the summation index, substitutes, and
keeps the condition as an Iverson bracket unless the ranges of the free
indices already imply it.
"""
from __future__ import annotations

import sympy as sp
from sympy import KroneckerDelta

from derive.define.symbols import Iverson, rebuild

Ranges = dict  # index symbol -> (lo, hi), inclusive


def eliminate_deltas(expr: sp.Expr, ranges: Ranges, keep_shape: bool = False) -> sp.Expr:
    """Eliminate every delta that a summation index can absorb.

    With ``keep_shape``, a delta that multiplies a whole sum's body is
    eliminated without expanding the body, which keeps the shape
    differentiation gave it (the chain rule's factors); without it, bodies
    are expanded into terms, which is what folding intermediates matches on.
    """
    if not expr.has(KroneckerDelta):
        return expr
    if isinstance(expr, sp.Sum):
        inner = dict(ranges)
        inner.update({v: (lo, hi) for v, lo, hi in expr.limits})
        body = eliminate_deltas(expr.function, inner, keep_shape)
        limits = list(expr.limits)
        for pos, (v, lo, hi) in enumerate(limits):
            outer = dict(ranges)
            outer.update({w: (a, b) for w, a, b in limits[pos + 1:]})
            body = _sum_over(body, v, lo, hi, outer, keep_shape)
        return body
    if not expr.args:
        return expr
    return rebuild(expr, (eliminate_deltas(a, ranges, keep_shape) for a in expr.args))


def make_sum(term: sp.Expr, v: sp.Symbol, lo, hi) -> sp.Expr:
    """``Sum(term, (v, lo, hi))`` with the factors that do not depend on ``v`` pulled out."""
    inside, outside = [], []
    for f in sp.Mul.make_args(term):
        (inside if v in f.free_symbols else outside).append(f)
    if not inside:
        return sp.Mul(*outside) * (hi - lo + 1)
    return sp.Mul(*outside) * sp.Sum(sp.Mul(*inside), (v, lo, hi))


def _sum_over(body: sp.Expr, v: sp.Symbol, lo, hi, ranges: Ranges, keep_shape: bool = False) -> sp.Expr:
    if not any(v in d.free_symbols for d in body.atoms(KroneckerDelta)):
        return make_sum(body, v, lo, hi)
    for delta in sorted(body.atoms(KroneckerDelta), key=sp.default_sort_key) if keep_shape else ():
        if _solvable(delta, v) and body.xreplace({delta: sp.S.Zero}) == 0:
            # The delta multiplies every term: since it is 0 or 1, body = delta * body(delta = 1),
            # and the body keeps the shape differentiation gave it (the chain rule's factors).
            return _substitute(body.xreplace({delta: sp.S.One}), delta, v, lo, hi, ranges)
    expanded = sp.expand(body, deep=False, power_base=False, power_exp=False,
                         log=False, multinomial=False)
    out = []
    for term in sp.Add.make_args(expanded):
        factors = [_unpower_delta(f) for f in sp.Mul.make_args(term)]
        delta = next((f for f in sorted(factors, key=_preference) if isinstance(f, KroneckerDelta)
                      and _solvable(f, v)), None)
        if delta is None:
            out.append(make_sum(sp.Mul(*factors), v, lo, hi))
            continue
        rest = sp.Mul(*(f for f in factors if f is not delta))
        out.append(_substitute(rest, delta, v, lo, hi, ranges))
    return sp.Add(*out)


def _solvable(delta, v) -> bool:
    """Does ``delta`` fix ``v`` by an affine equation (not through another tensor's element)?"""
    if not isinstance(delta, KroneckerDelta) or v not in delta.free_symbols:
        return False
    difference = delta.args[0] - delta.args[1]
    if any(v in e.free_symbols for e in difference.atoms(sp.Indexed)):
        return False  # [idx_n = p] summed over n: a scatter, not an elimination
    return sp.Poly(difference, v).degree() == 1


def _preference(delta) -> bool:
    """Deltas between plain indices first (a stable sort): their range conditions are known to hold."""
    return delta.has(sp.Indexed)


def _substitute(rest, delta, v, lo, hi, ranges) -> sp.Expr:
    """``sum_v rest [delta]`` with ``v`` solved from the delta, its range condition kept as a bracket."""
    solution, conditions = _solve_affine(delta.args[0] - delta.args[1], v)
    conditions.append(sp.And(solution >= lo, solution <= hi))
    bracket = sp.Mul(*(Iverson(c) for c in conditions if not implied(c, ranges)))
    return bracket * rest.subs(v, solution)


def _unpower_delta(f: sp.Expr) -> sp.Expr:
    """A delta is 0 or 1, so any positive power of it is itself."""
    if isinstance(f, sp.Pow) and isinstance(f.base, KroneckerDelta) and f.exp.is_positive:
        return f.base
    return f


def _solve_affine(expr: sp.Expr, v: sp.Symbol):
    """Solve ``a v + c = 0`` for ``v``; for ``|a| != 1`` the solution must be whole."""
    a, c = sp.Poly(expr, v).all_coeffs()
    if a in (1, -1):
        return sp.expand(-c / a), []
    return sp.expand(-c / a), [sp.Eq(sp.Mod(sp.expand(-c * sp.sign(a)), sp.Abs(a)), 0)]  # modulo a positive number


def implied(cond: sp.Basic, ranges: Ranges) -> bool:
    """True when ``cond`` (lo <= e <= hi) follows from the ranges of the indices in it."""
    parts = cond.args if isinstance(cond, sp.And) else (cond,)
    for part in parts:
        if not isinstance(part, (sp.GreaterThan, sp.LessThan)):
            return False
        big, small = (part.lhs, part.rhs) if isinstance(part, sp.GreaterThan) else (part.rhs, part.lhs)
        low = _bound(big - small, ranges, lowest=True)
        if low is None or not (low.is_nonnegative or sp.simplify(low) == 0):
            return False
    return True


def _bound(expr: sp.Expr, ranges: Ranges, lowest: bool):
    """The least (or greatest) value of an expression affine in ranged indices (and in elements of
    ranged integer inputs, ``t[n]``), else None. A range that ends at a floor (a pool's last window
    floor(a/s)) is bounded through it: floor(y) lies in (y - 1, y]."""
    total = sp.expand(expr)
    elements = sorted((a for a in total.atoms(sp.Indexed) if a in ranges or a.base in ranges), key=str)
    for v in elements + sorted(total.free_symbols & set(ranges) - set(elements), key=str):  # t[n] before n
        if v not in total.free_symbols:
            continue  # an index seen only inside an element already bounded (n of t[n])
        coeff = total.coeff(v)
        if coeff.free_symbols & set(ranges) or not (coeff.is_positive or coeff.is_negative) \
                or (total - coeff * v).has(v):
            return None  # a coefficient of known sign (a number, a size: flatten's c S + s) bounds it
        lo, hi = ranges[v] if v in ranges else ranges[v.base]
        pick = lo if bool(coeff.is_positive) == lowest else hi
        total = sp.expand(total.subs(v, pick))
    for f in sorted(total.atoms(sp.floor), key=str):  # a range's end such as a pool's OH - 1 = floor(a/s)
        coeff = total.coeff(f)
        if (coeff.is_positive or coeff.is_negative) and not (total - coeff * f).has(f):  # a term of its own
            y = f.args[0]
            total = sp.expand(total.subs(f, y if bool(coeff.is_positive) != lowest else y - 1))
    return total


def drop_implied_brackets(expr: sp.Expr, ranges: Ranges, guarded: dict | None = None) -> sp.Expr:
    """Remove Iverson brackets whose condition the index ranges already guarantee.

    ``[0 <= h <= H - 1]`` around the gradient of the input pixel h says
    nothing new: h only runs over 0..H-1. Ranges of enclosing sums count.
    ``guarded``: integer inputs in range except where they hold a given value (a label ``t`` is a class
    wherever it is not ``ignore_index``), as ``{tensor: (lo, hi, value)}``: inside a product with the
    bracket ``[t_n != value]``, ``t_n`` lies in lo..hi (elsewhere the product is 0), so ``[t_n <= K - 1]``
    there is 1. Only sums and products carry that range to their terms, which then stay finite.
    """
    guarded = guarded or {}

    def guard(factor):
        """The element ``t_n`` a factor ``[t_n != value]`` keeps in range, else None."""
        if not (isinstance(factor, Iverson) and isinstance(factor.condition, sp.Ne)):
            return None
        for element, value in (factor.condition.args, reversed(factor.condition.args)):
            if isinstance(element, sp.Indexed) and element.base in guarded and value == guarded[element.base][2]:
                return element
        return None

    def visit(node, ranges):
        if isinstance(node, Iverson) and implied(node.condition, ranges):
            return sp.S.One
        if isinstance(node, sp.Sum):
            bound = {v for v, _, _ in node.limits}
            inner = {k: r for k, r in ranges.items() if not (isinstance(k, sp.Indexed) and k.free_symbols & bound)}
            inner.update({v: (lo, hi) for v, lo, hi in node.limits})
            return sp.Sum(visit(node.function, inner), *node.limits)
        if not node.args or isinstance(node, sp.Indexed):
            return node
        if isinstance(node, sp.Mul):
            ranges = dict(ranges)
            ranges.update({e: guarded[e.base][:2] for e in map(guard, node.args) if e is not None})
        elif not isinstance(node, sp.Add):
            ranges = {k: r for k, r in ranges.items() if not isinstance(k, sp.Indexed)}
        return rebuild(node, (visit(a, ranges) for a in node.args))
    return visit(expr, ranges)
