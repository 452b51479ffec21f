"""Coefficients for the special functions NumPy lacks (erf, erfc), computed when the code is generated.

NumPy has no ``erf``. The generated modules evaluate ``erfc(z)`` for
``z >= 0`` as ``t e^{-z^2} f(t)`` with ``t = 2/(2 + z)``, where ``f`` is
smooth on ``0 <= t <= 1`` and summed as a Chebyshev series in ``2t - 1``
(the form of Numerical Recipes' ``erfccheb``). The series' coefficients are
computed here with mpmath at 40 digits, by interpolation at Chebyshev
nodes: same numbers on every build, relative error under 1e-15 over the
whole range (tests/test_special.py measures it).
"""
from __future__ import annotations

from functools import lru_cache

import mpmath

TERMS = 30


def _scaled_erfc(t):
    """``erfc(z) e^{z^2} / t`` at ``t = 2/(2 + z)`` (its limit 1/(2 sqrt(pi)) at t = 0)."""
    if t == 0:
        return 1 / (2 * mpmath.sqrt(mpmath.pi))
    z = 2 / t - 2
    return mpmath.erfc(z) * mpmath.exp(z * z) / t


@lru_cache(maxsize=None)
def erfc_series(terms: int = TERMS) -> tuple[float, ...]:
    """Chebyshev coefficients ``c_0 .. c_{terms-1}`` of ``_scaled_erfc`` in ``s = 2t - 1``."""
    with mpmath.workdps(40):
        angles = [mpmath.pi * (j + mpmath.mpf(1) / 2) / terms for j in range(terms)]
        values = [_scaled_erfc((mpmath.cos(a) + 1) / 2) for a in angles]
        return tuple(float(2 * mpmath.fsum(v * mpmath.cos(k * a) for v, a in zip(values, angles)) / terms)
                     for k in range(terms))


@lru_cache(maxsize=None)
def erf_taylor(terms: int = 14) -> tuple[float, ...]:
    """``erf(x) = x sum_n a_n x^{2n}`` for small x: ``a_n = 2 (-1)^n / (sqrt(pi) n! (2n + 1))``."""
    with mpmath.workdps(40):
        return tuple(float(2 * (-1) ** n / (mpmath.sqrt(mpmath.pi) * mpmath.factorial(n) * (2 * n + 1)))
                     for n in range(terms))
