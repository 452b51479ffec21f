"""Coefficients for the special functions NumPy lacks (erf, erfc), computed when the code is generated.

NumPy has no ``erf``. The generated modules evaluate ``erfc(z)`` for
``z >= 0`` as ``t e^{-z^2} P(u)/Q(u)`` with ``t = K/(K + z)`` and ``u`` the
same ``t`` mapped onto ``[-1, 1]``: ``erfc(z) e^{z^2}/t`` is smooth on the ``t``
of ``0 <= z <= Z`` (beyond ``Z``, erfc is 0 in the dtype), so a rational
function of low degree fits it, one per dtype: degree 9 over 9 in float64
(about 1e-15 relative), 4 over 4 in float32 (about 3e-7). That is two in-place
Horner steps per coefficient, where a Chebyshev series of the whole half-line
took 30 terms of three passes each; in ``u`` (not ``t``) the coefficients of
``P`` keep one sign, so that Horner's rounding does not grow. They interpolate
the function at the Chebyshev nodes, computed with mpmath at 40 digits: the
same numbers on every build (tests/test_special.py measures the accuracy).
"""
from __future__ import annotations

from functools import lru_cache

import mpmath

#: By dtype: K, Z, the degree of P and Q, and the dtype that holds half its digits (a^2 exact in it).
ERFC_FORMS = {"float64": (3, 27.5, 9, "float32"), "float32": (2, 10.5, 4, "float16")}


@lru_cache(maxsize=None)
def erfc_rational(dtype: str) -> tuple:
    """``(K, A, B, Z, half, P, Q)`` for ``dtype``: ``u = A/(K + z) - B`` runs over ``[-1, 1]``, and
    ``erfc(z) = e^{-z^2} P(u) / ((K + z) Q(u))``, the factor ``K`` of ``t`` in ``P``; the coefficients
    are of ``u^0, u^1, ...``, ``Q``'s first is 1."""
    k, zmax, degree, half = ERFC_FORMS[dtype]
    with mpmath.workdps(40):
        k = mpmath.mpf(k)
        low = k / (k + zmax)  # the t of Z
        count = 2 * degree + 1
        nodes = [mpmath.cos(mpmath.pi * (j + mpmath.mpf(1) / 2) / count) for j in range(count)]
        system, values = mpmath.matrix(count, count), mpmath.matrix(count, 1)
        for row, u in enumerate(nodes):  # P(u) - f (Q(u) - 1) = f, f = erfc(z) e^{z^2} / t
            t = low + (1 - low) * (u + 1) / 2
            z = k / t - k
            f = mpmath.erfc(z) * mpmath.exp(z * z) / t
            for j in range(degree + 1):
                system[row, j] = u ** j
            for j in range(1, degree + 1):
                system[row, degree + j] = -f * u ** j
            values[row] = f
        solution = mpmath.lu_solve(system, values)
        p = tuple(float(k * solution[j]) for j in range(degree + 1))
        q = (1.0,) + tuple(float(solution[degree + j]) for j in range(1, degree + 1))
        a, b = float(2 * k / (1 - low)), float((1 + low) / (1 - low))
    return float(k), a, b, float(zmax), half, p, q


def erfc_table() -> str:
    """The generated module's ``_ERFC``: the rational form of each dtype."""
    rows = []
    for dtype in ERFC_FORMS:
        k, a, b, zmax, half, p, q = erfc_rational(dtype)
        rows.append(f"    np.dtype(np.{dtype}): ({k!r}, {a!r}, {b!r}, {zmax!r}, np.{half},\n"
                    f"                        {p!r},\n"
                    f"                        {q!r}),")
    return "{\n" + "\n".join(rows) + "\n}"


@lru_cache(maxsize=None)
def erf_taylor(terms: int = 14) -> tuple[float, ...]:
    """``erf(x) = x sum_n a_n x^{2n}`` for small x: ``a_n = 2 (-1)^n / (sqrt(pi) n! (2n + 1))``."""
    with mpmath.workdps(40):
        return tuple(float(2 * (-1) ** n / (mpmath.sqrt(mpmath.pi) * mpmath.factorial(n) * (2 * n + 1)))
                     for n in range(terms))
