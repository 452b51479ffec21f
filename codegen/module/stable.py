"""Rewrites that keep the forward pass finite where the naive formula overflows.

The known functions (σ, softplus, Φ) are named by the engine and print
in stable forms (derive.engine.prepare, codegen.module.printer). Here,
exact identities applied to the index form before lowering:

* a masked exponential ``[c] e^{a}`` is ``e^{a if c else -inf}``;
* every ``sum_j exp(a_j)`` is shifted by ``m = max_j a_j``: the sum
  becomes ``exp(m) sum_j exp(a_j - m)``, each ``exp(a_k)`` beside it
  becomes ``exp(a_k - m) exp(m)``; the ``exp(m)`` cancel in a softmax,
  and ``log(exp(m) s)`` becomes ``m + log(s)`` in a log-sum-exp;
* an ``exp(a)`` inside a branch taken only where ``a <= 0`` (ELU's
  ``alpha (e^x - 1)`` where ``x <= 0``) is ``exp(min(a, 0))``: the same
  value there, and finite where ``np.where`` computes the other branch.
"""
from __future__ import annotations

import sympy as sp

from derive.define.symbols import Iverson, Maximum, fresh_index, symbols_in


def stabilize(expr: sp.Expr) -> sp.Expr:
    expr = masks_into_exponents(expr)
    for total in sorted({s for s in sp.preorder_traversal(expr) if _is_sum_of_exp(s)}, key=sp.default_sort_key):
        expr = _shift(expr, total)
    return expr


def masks_into_exponents(expr: sp.Expr) -> sp.Expr:
    """``[c] e^{a}`` as ``e^{a if c else -inf}``: a masked-out exponential is 0 without ever being
    computed (a causal mask's ``[s <= l] e^{z}`` would overflow to inf where z is large, and inf * 0
    is NaN); the max shift below then takes the maximum over the entries the mask keeps."""
    def masked(e):
        return isinstance(e, sp.Mul) and any(isinstance(f, Iverson) for f in e.args) \
            and any(isinstance(f, sp.exp) for f in e.args)

    def fold(e):
        brackets = [f for f in e.args if isinstance(f, Iverson)]
        exps = [f for f in e.args if isinstance(f, sp.exp)]
        rest = [f for f in e.args if f not in brackets and f not in exps]
        condition = sp.And(*(b.condition for b in brackets))
        exponent = sp.Add(*(f.args[0] for f in exps))
        return sp.Mul(*rest) * sp.exp(Masked(exponent, condition))
    return expr.replace(masked, fold)


class Masked(sp.Function):
    """``Masked(a, c)``: ``a`` where ``c`` holds, else ``-inf`` (a Piecewise would be folded out of
    the exp and the sum around it by SymPy, which is what this must not be)."""

    nargs = 2
    is_commutative = True  # (a condition among the arguments leaves SymPy unsure, and it would merge exps)


def _is_sum_of_exp(e) -> bool:
    return isinstance(e, sp.Sum) and len(e.limits) == 1 and isinstance(e.function, sp.exp)


def _shift(expr: sp.Expr, total: sp.Sum) -> sp.Expr:
    (j, lo, hi), arg = total.limits[0], total.function.args[0]
    jm = fresh_index(j, symbols_in(expr))  # the max binds its own index
    m = Maximum(arg.xreplace({j: jm}), jm, lo, hi)
    hole = sp.Dummy("total")
    expr = expr.xreplace({total: hole})

    def same_family(e):
        return isinstance(e, sp.exp) and any(e.args[0] == arg.xreplace({j: k}) for k in e.args[0].free_symbols)

    expr = expr.replace(same_family, lambda e: sp.exp(e.args[0] - m) * sp.exp(m))
    expr = expr.xreplace({hole: sp.exp(m) * sp.Sum(sp.exp(arg - m), (j, lo, hi))})

    def log_of_shifted(e):
        return isinstance(e, sp.log) and isinstance(e.args[0], sp.Mul) and sp.exp(m) in e.args[0].args

    return expr.replace(log_of_shifted, lambda e: m + sp.log(e.args[0] / sp.exp(m)))


def clamp_branches(expr: sp.Expr) -> sp.Expr:
    """Each ``exp(a)`` of a branch that holds only where ``a <= 0`` as ``exp(min(a, 0))``, in a
    ``Piecewise`` (after a branch for ``a > 0``) and in a product with ``[a <= 0]``."""
    def visit(node):
        if not node.args or isinstance(node, (sp.Indexed, sp.IndexedBase)):
            return node
        node = node.func(*(visit(a) for a in node.args)) if not isinstance(node, sp.Piecewise) else node
        if isinstance(node, sp.Piecewise):
            branches, nonpositive = [], set()
            for value, cond in node.args:
                value = visit(value)
                branches.append((_clamped(value, nonpositive | _nonpositive(cond)), cond))
                if isinstance(cond, sp.StrictGreaterThan) and cond.rhs == 0:
                    nonpositive.add(cond.lhs)
            return sp.Piecewise(*branches)
        if isinstance(node, sp.Mul):
            held = set().union(*(_nonpositive(f.condition) for f in node.args if isinstance(f, Iverson)))
            return _clamped(node, held) if held else node
        return node
    return visit(expr)


def _nonpositive(cond) -> set:
    """The ``a`` of a condition ``a <= 0`` or ``a < 0``."""
    if isinstance(cond, (sp.LessThan, sp.StrictLessThan)) and cond.rhs == 0:
        return {cond.lhs}
    return set()


def _clamped(expr: sp.Expr, nonpositive: set) -> sp.Expr:
    return expr.replace(lambda e: isinstance(e, sp.exp) and e.args[0] in nonpositive,
                        lambda e: sp.exp(sp.Min(e.args[0], 0))) if nonpositive else expr
