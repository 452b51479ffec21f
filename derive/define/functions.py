"""Functions the engine knows by name: σ, softplus, Φ and φ.

Each is a SymPy ``Function`` that carries its own derivative (``fdiff``),
written in terms of known functions, so that a derivative reads the way a
textbook writes it (``σ(x)(1 - σ(x))``, ``Φ(x) + x φ(x)``) instead of an
exponential form that hides the function. Each also rewrites to ``exp``
(or ``erf``), which is how the checks compare it with SymPy's own
derivative of a definition written out by hand, and prints itself in
LaTeX. ``derive.engine.prepare`` finds them in definitions written with
``exp``, ``log`` and ``erf``.
"""
from __future__ import annotations

import sympy as sp


class KnownFunction(sp.Function):
    """A function of one real argument with a name, a derivative and a definition."""

    #: How plain text and LaTeX write it, and its definition for the reader (``\\frac{1}{1 + e^{-a}}``).
    text = ""
    tex = ""
    definition_tex = ""

    nargs = 1

    def _eval_is_real(self):
        return self.args[0].is_real

    def _sympystr(self, printer):
        return f"{self.text}({printer._print(self.args[0])})"

    def _latex(self, printer, exp=None):
        arg = printer._print(self.args[0])
        head = self.tex if exp is None else f"{self.tex}^{{{exp}}}"
        return rf"{head}\left({arg}\right)"

    @classmethod
    def definition(cls, a: sp.Expr) -> sp.Expr:
        """The function written out in SymPy's own functions."""
        raise NotImplementedError

    def _eval_evalf(self, prec):
        return self.definition(self.args[0])._eval_evalf(prec)

    def _eval_rewrite_as_exp(self, a, **kwargs):
        return self.definition(a)

    def _eval_rewrite_as_erf(self, a, **kwargs):
        return self.definition(a)


class Sigmoid(KnownFunction):
    """The logistic sigmoid ``σ(a) = 1/(1 + e^{-a})``, with ``σ' = σ(1 - σ)``."""

    text = "sigmoid"
    tex = r"\sigma"
    definition_tex = r"\frac{1}{1 + e^{-a}}"

    @classmethod
    def definition(cls, a):
        return 1 / (1 + sp.exp(-a))

    def fdiff(self, argindex=1):
        return self * (1 - self)

    def _eval_is_positive(self):
        return True if self.args[0].is_real else None


class Softplus(KnownFunction):
    """``softplus(a) = log(1 + e^{a})``, with derivative ``σ(a)``."""

    text = "softplus"
    tex = r"\operatorname{softplus}"
    definition_tex = r"\log\left(1 + e^{a}\right)"

    @classmethod
    def definition(cls, a):
        return sp.log(1 + sp.exp(a))

    def fdiff(self, argindex=1):
        return Sigmoid(self.args[0])

    def _eval_is_positive(self):
        return True if self.args[0].is_real else None


class NormalPdf(KnownFunction):
    """The standard normal density ``φ(a) = e^{-a^2/2}/\\sqrt{2π}``, with ``φ' = -a φ``."""

    text = "phi"
    tex = r"\varphi"
    definition_tex = r"\frac{1}{\sqrt{2 \pi}} e^{-a^{2}/2}"

    @classmethod
    def definition(cls, a):
        return sp.exp(-a ** 2 / 2) / sp.sqrt(2 * sp.pi)

    def fdiff(self, argindex=1):
        return -self.args[0] * self

    def _eval_is_positive(self):
        return True if self.args[0].is_real else None


class Phi(KnownFunction):
    """The standard normal distribution function ``Φ(a) = (1 + erf(a/\\sqrt{2}))/2``, with ``Φ' = φ``."""

    text = "Phi"
    tex = r"\Phi"
    definition_tex = r"\frac{1}{2}\left(1 + \operatorname{erf}\frac{a}{\sqrt{2}}\right)"

    @classmethod
    def definition(cls, a):
        return (1 + sp.erf(a / sp.sqrt(2))) / 2

    def fdiff(self, argindex=1):
        return NormalPdf(self.args[0])

    def _eval_is_positive(self):
        return True if self.args[0].is_real else None


KNOWN = (Sigmoid, Softplus, Phi, NormalPdf)


def written_out(expr: sp.Expr) -> sp.Expr:
    """``expr`` with every known function replaced by its definition (for independent checks)."""
    return expr.replace(lambda e: isinstance(e, KnownFunction), lambda e: type(e).definition(e.args[0]))


def used(*exprs) -> list:
    """The known functions the expressions use, in a fixed order."""
    found = {type(e) for expr in exprs for e in sp.preorder_traversal(expr) if isinstance(e, KnownFunction)}
    return [f for f in KNOWN if f in found]
