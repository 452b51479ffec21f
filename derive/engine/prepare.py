"""An op's working form: the same forward pass, written the way the engine differentiates best.

Every rewrite is an exact identity, applied to each definition before
anything is differentiated:

* decimal constants become rationals (``0.044715`` is ``8943/200000``), so
  that factoring never meets floating point (it ran out of memory on them);
* the known functions are named: ``1/(1 + e^{-a})`` is ``σ(a)``,
  ``1 - σ(a)`` is ``σ(-a)``, ``log(1 + e^{a})`` is ``softplus(a)``, ``log σ(a)`` is
  ``-softplus(-a)``, ``1 + erf(a)`` is ``2 Φ(√2 a)``, so
  that derivatives come out through them (``σ(1 - σ)``), never through an
  exponential that has to be folded back by inversion;
* an integer gather ``W[idx[n], e]`` becomes ``sum_v [v = idx_n] W[v, e]``,
  which differentiates into a scatter-add.

What the engine cannot take is refused here, with the construct named.
"""
from __future__ import annotations

from dataclasses import replace

import sympy as sp

from derive.define.functions import KnownFunction, Phi, Sigmoid, Softplus
from derive.define.op import Op
from derive.define.symbols import FirstMax, Intermediate, IntermediateElement, Iverson, Tensor, fresh_index, symbols_in


class Unsupported(ValueError):
    """A construct the engine cannot differentiate: refused, never guessed at."""


#: SymPy classes a definition may use beyond arithmetic, sums and the tensors.
ALLOWED = (sp.exp, sp.log, sp.tanh, sp.erf, sp.Abs, sp.sign, sp.Piecewise, sp.KroneckerDelta, KnownFunction,
           Iverson, FirstMax)


def prepare(op: Op) -> Op:
    """``op`` in working form: the same values everywhere, in the forms above."""
    renamed: dict = {}
    letters = {str(s) for node in op.intermediates for s in symbols_in(node.definition) | set(node.index)}
    for node in op.intermediates:
        definition = working_form(_renamed(node.definition, renamed), node.name, letters)
        renamed[node] = Intermediate(node.label, node.index, node.shape, definition)
    return replace(
        op,
        output=renamed[op.output],
        extra=tuple(renamed[n] for n in op.extra),
        statistics=tuple(renamed[n] for n in op.statistics),
        theorems=tuple((_renamed(lhs, renamed), _renamed(rhs, renamed)) for lhs, rhs in op.theorems),
    )


def _renamed(expr: sp.Expr, renamed: dict) -> sp.Expr:
    return sp.sympify(expr).replace(lambda e: isinstance(e, IntermediateElement) and e.base in renamed,
                                    lambda e: renamed[e.base][e.indices])


def working_form(expr: sp.Expr, where: str = "", taken=frozenset()) -> sp.Expr:
    """One definition in working form (see the module's docstring); ``taken``: index names the op uses."""
    expr = sp.sympify(expr)
    _refuse_unsupported(expr, where)
    expr = expr.replace(lambda e: isinstance(e, sp.Float), lambda e: sp.nsimplify(e, rational=True))
    expr = name_known_functions(expr)
    return gathers_as_deltas(expr, taken)


def name_known_functions(expr: sp.Expr) -> sp.Expr:
    """Name σ, softplus and Φ wherever a definition spells them out."""
    def is_logistic(e):  # (1 + e^b)^-1 -> σ(-b)
        return isinstance(e, sp.Pow) and e.exp == -1 and _one_plus_exp(e.base) is not None

    expr = expr.replace(is_logistic, lambda e: Sigmoid(-_one_plus_exp(e.base)))
    # e^b σ(-b) is σ(b): the form exp(a)/(1 + exp(a)) takes after the rule above
    expr = expr.replace(lambda e: isinstance(e, sp.Mul) and _exp_times_sigmoid(e) is not None,
                        lambda e: _exp_times_sigmoid(e))
    # 1 - σ(a) is σ(-a): the complement keeps its digits where σ(a) rounds to 1 (and its log is a softplus)
    expr = expr.replace(lambda e: _sigmoid_complement(e) is not None, lambda e: Sigmoid(-_sigmoid_complement(e)))

    def is_softplus(e):
        return isinstance(e, sp.log) and _one_plus_exp(e.args[0]) is not None

    expr = expr.replace(is_softplus, lambda e: Softplus(_one_plus_exp(e.args[0])))
    # log(σ(a)) = -softplus(-a), the stable form of a log-probability
    expr = expr.replace(lambda e: isinstance(e, sp.log) and isinstance(e.args[0], Sigmoid),
                        lambda e: -Softplus(-e.args[0].args[0]))

    def is_normal_cdf(e):  # 1 + erf(a) and 1 - erf(a)
        return isinstance(e, sp.Add) and len(e.args) == 2 and 1 in e.args and _erf_term(e) is not None

    expr = expr.replace(is_normal_cdf, lambda e: 2 * Phi(sp.sqrt(2) * _erf_term(e)))
    return expr.replace(lambda e: _negated_sum(e) is not None, lambda e: _negated_sum(e))


def _negated_sum(mul):
    """``c Σ(a + b)`` for ``-c Σ(-a - b)``: the minus each ``log σ = -softplus`` brings in cancels the
    loss's own (binary cross-entropy reads ``(1/N) Σ (t softplus(-z) + ...)``); else None."""
    if not isinstance(mul, sp.Mul) or not mul.as_coeff_Mul()[0].is_negative:
        return None
    for f in mul.args:
        if isinstance(f, sp.Sum) and all(t.could_extract_minus_sign() for t in sp.Add.make_args(f.function)):
            return -(mul / f) * sp.Sum(-f.function, *f.limits)
    return None


def _one_plus_exp(e):
    """``b`` when ``e`` is ``1 + e^{b}``, else None."""
    if isinstance(e, sp.Add) and len(e.args) == 2 and 1 in e.args:
        (other,) = [a for a in e.args if a != 1]
        if isinstance(other, sp.exp):
            return other.args[0]
    return None


def _sigmoid_complement(e):
    """``a`` when ``e`` is ``1 - σ(a)``, else None."""
    if isinstance(e, sp.Add) and len(e.args) == 2 and 1 in e.args:
        (other,) = [a for a in e.args if a != 1]
        if isinstance(other, sp.Mul) and len(other.args) == 2 and other.args[0] == -1 \
                and isinstance(other.args[1], Sigmoid):
            return other.args[1].args[0]
    return None


def _exp_times_sigmoid(mul: sp.Mul):
    factors = list(mul.args)
    for f in factors:
        if isinstance(f, Sigmoid):
            twin = sp.exp(-f.args[0])
            if twin in factors:
                rest = list(factors)
                rest.remove(f)
                rest.remove(twin)
                return sp.Mul(*rest) * Sigmoid(-f.args[0])
    return None


def _erf_term(e: sp.Add):
    """``a`` for ``1 + erf(a)``, ``-a`` for ``1 - erf(a)``; else None."""
    (other,) = [a for a in e.args if a != 1]
    if isinstance(other, sp.erf):
        return other.args[0]
    if isinstance(other, sp.Mul) and other.args[0] == -1 and len(other.args) == 2 and isinstance(other.args[1], sp.erf):
        return -other.args[1].args[0]
    return None


def gathers_as_deltas(expr: sp.Expr, taken=frozenset()) -> sp.Expr:
    """``W[idx[n], e]`` as ``sum_v [v = idx_n] W[v, e]``: SymPy cannot differentiate an element whose
    index is another tensor's element, but it differentiates the delta, which the code prints as a
    gather forward and a scatter-add backward."""
    def is_gather(e):
        return isinstance(e, sp.Indexed) and any(i.has(sp.Indexed) for i in e.indices)

    def as_sum(e):
        indices, deltas, limits = list(e.indices), [], []
        for pos, i in enumerate(indices):
            if not i.has(sp.Indexed):
                continue
            if not (isinstance(i, sp.Indexed) and isinstance(i.base, Tensor) and i.base.is_integer):
                raise Unsupported(f"the index {i} of {e}: an index may be an integer input's element "
                                  f"(idx[n]), not an expression of one")
            # A letter of its own: it names the row of W in W's gradient (dE/dW_{ve}).
            v = next((sp.Symbol(c, integer=True) for c in "vuwpqrst" if c not in taken | {str(s) for s in
                      symbols_in(expr)}), None) or fresh_index("v", symbols_in(expr))
            deltas.append(sp.KroneckerDelta(v, i))
            limits.append((v, 0, e.base.shape[pos] - 1))
            indices[pos] = v
        return sp.Sum(sp.Mul(*deltas) * e.base[tuple(indices)], *limits)

    return expr.replace(is_gather, as_sum)


def _refuse_unsupported(expr: sp.Expr, where: str) -> None:
    """One line naming the first construct the engine does not take."""
    for node in sp.preorder_traversal(expr):
        if isinstance(node, (sp.Indexed, sp.IndexedBase, Intermediate, sp.Symbol, sp.Number, sp.Tuple,
                             sp.NumberSymbol)):
            continue
        if isinstance(node, (sp.Add, sp.Mul, sp.Pow, sp.Sum, sp.Rel, sp.logic.boolalg.BooleanFunction,
                             sp.logic.boolalg.BooleanAtom, sp.floor, sp.Mod)):
            continue
        if isinstance(node, sp.Tuple) or isinstance(node, ALLOWED) or type(node).__name__ == "ExprCondPair":
            continue
        name = type(node).__name__
        raise Unsupported(f"{where or 'definition'}: the engine does not differentiate {name} ({node}); "
                          f"it takes + - * /, powers, sums, exp, log, tanh, erf, Abs, sign, sigma, softplus, "
                          f"Phi and cases")
