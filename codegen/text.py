"""Plain-text formulas for docstrings and ``derive list``: ``sum_j(W[k, j]*x[n, j]) + b[k]``."""
from __future__ import annotations

import sympy as sp
from sympy.printing.str import StrPrinter


class TextPrinter(StrPrinter):
    def _print_Sum(self, expr):
        body = self._print(expr.function)
        for v, _, _ in expr.limits:
            body = f"sum_{v}({body})"
        return body

    def _print_Indexed(self, expr):
        return f"{expr.base.label}[{', '.join(self._print(i) for i in expr.indices)}]"

    def _print_Iverson(self, expr):
        cond = expr.condition
        parts = cond.args if isinstance(cond, sp.And) else ()
        low = next((p for p in parts if isinstance(p, sp.GreaterThan) and p.rhs == 0), None)
        high = next((p for p in parts if isinstance(p, sp.LessThan)), None)
        if len(parts) == 2 and low is not None and high is not None and sp.expand(low.lhs - high.lhs) == 0:
            return f"[0 <= {self._print(low.lhs)} <= {self._print(high.rhs)}]"
        return f"[{self._print(cond)}]"

    def _print_Piecewise(self, expr):
        parts = [f"{self._print(v)} if {self._print(c)}" if c is not sp.true else f"{self._print(v)} otherwise"
                 for v, c in expr.args]
        return "(" + "; ".join(parts) + ")"

    def _print_Symbol(self, expr):
        return expr.name

    def _print_Add(self, expr, order=None):
        """Positive terms first, sums first among them: ``sum_j(...) + b[k]``, ``t - y``."""
        terms = sorted(expr.as_ordered_terms(), key=lambda t: (t.could_extract_minus_sign(), not t.has(sp.Sum)))
        out = ""
        for t in terms:
            s = self.parenthesize(t, 40) if not t.could_extract_minus_sign() else self._print(t)
            if s.startswith("-"):
                out += (" - " if out else "-") + s[1:]
            else:
                out += (" + " if out else "") + s
        return out


def text(expr: sp.Expr) -> str:
    return TextPrinter({"order": "none"}).doprint(expr)
