"""A convolution's input gradient read as a full convolution with the flipped kernel.

Tutorials explain ``dE/dx`` that way; the engine derives it as a sum over
the output positions whose window covers the pixel. For stride 1 the two
are one change of summation variable apart: with ``i = h + P - (K - 1) + p``
the bracket ``[0 <= h + P - i <= K - 1]`` becomes the kernel's own range
``0 <= p <= K - 1``, the kernel is read at ``K - 1 - p`` (flipped), and the
upstream gradient at ``h + p`` shifted by ``K - 1 - P`` (zero outside its
range: padded).
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from derive.engine.derivation import Derivation, Gradient
from derive.define.symbols import Iverson, Tensor, index_symbols


@dataclass(frozen=True)
class FullConvolution:
    """``dE/dx = sum flipped * padded`` and the two definitions it needs."""

    gradient: sp.Expr  # in terms of the flipped kernel and the padded upstream gradient
    flipped: tuple  # (flipped[o, c, p, q], kernel[o, c, K_H - 1 - p, K_W - 1 - q])
    padded: tuple  # (padded[n, o, a, b], upstream[n, o, a - shift, b - shift]), zero outside


def full_convolution(d: Derivation, grad: Gradient) -> FullConvolution | None:
    """The reading at stride 1 (and dilation 1) of an input gradient with two window brackets, or None."""
    ones = {s: 1 for h in d.op.hyper if h.name in ("stride", "dilation") for s in h.symbols}
    if not any(h.name == "stride" for h in d.op.hyper):
        return None
    sums, body = [], grad.expr.xreplace(ones)
    while isinstance(body, sp.Sum) or isinstance(body, sp.Mul) and any(isinstance(f, sp.Sum) for f in body.args):
        if isinstance(body, sp.Sum):
            sums += list(body.limits)
            body = body.function
        else:
            inner = next(f for f in body.args if isinstance(f, sp.Sum))
            body = body / inner * inner
            sums += list(inner.limits)
            body = body.xreplace({inner: inner.function})
    summed = {v for v, *_ in sums}
    brackets = [f for f in sp.Mul.make_args(body) if isinstance(f, Iverson)]
    arrays = [f for f in sp.Mul.make_args(body) if isinstance(f, sp.Indexed)]
    upstream = [a for a in arrays if a.base == d.upstream]
    kernel = [a for a in arrays if a.base != d.upstream]
    if len(upstream) != 1 or len(kernel) != 1 or len(arrays) + len(brackets) != len(body.args):
        return None
    # a window's bracket ties a summed window index (coefficient -1) to the pixel; another (a grouped
    # conv's [0 <= c - g C_g <= C_g - 1], its channel in group g) stays as it is
    windows = [b for b in brackets if _window_bracket(b, summed)]
    kept = sp.Mul(*(b for b in brackets if b not in windows))
    if len(windows) != 2:
        return None
    (g,), (w,) = upstream, kernel
    substitute, offsets = {}, []
    for bracket, letter in zip(windows, "pq"):
        low = next((a.lhs for a in bracket.condition.args if isinstance(a, sp.GreaterThan) and a.rhs == 0), None)
        high = next((a.rhs for a in bracket.condition.args if isinstance(a, sp.LessThan)), None)
        window = [v for v in index_symbols(low)] if low is not None else []
        window = [v for v in window if v in summed]
        if high is None or len(window) != 1 or sp.expand(low).coeff(window[0]) != -1:
            return None
        (i,) = window
        p = sp.Symbol(letter, integer=True)
        substitute[i] = sp.expand(i + low - high + p)  # i = h + P - (K - 1) + p
        offsets.append((p, high + 1))
    if any(v not in sp.Tuple(*w.indices).free_symbols for v in summed - set(substitute)):
        return None
    flip = Tensor("flipped", *w.base.shape)
    pad = Tensor("padded", *g.base.shape)
    w_at = tuple(sp.expand(e.xreplace(substitute)) for e in w.indices)
    g_at = tuple(sp.expand(e.xreplace(substitute)) for e in g.indices)
    flip_index = tuple(next((p for p, size in offsets if sp.expand(e - (size - 1 - p)) == 0), e) for e in w_at)
    offset_symbols = {p for p, _ in offsets}
    if sum(1 for e in flip_index if e in offset_symbols) != 2 \
            or any(e not in offset_symbols and e.free_symbols & offset_symbols for e in flip_index):
        return None  # the kernel must be read at (indices of its own, the two flipped offsets)
    shifts = [sp.expand(e - sum(v for v in index_symbols(e) if v not in {p for p, _ in offsets})
                        - sum(p for p, _ in offsets if p in e.free_symbols)) for e in g_at]
    gradient = kept * flip[flip_index] * pad[tuple(e - s for e, s in zip(g_at, shifts))]
    for v, lo, hi in reversed([lim for lim in sums if lim[0] not in substitute]):
        gradient = sp.Sum(gradient, (v, lo, hi))
    for p, size in reversed(offsets):
        gradient = sp.Sum(gradient, (p, 0, size - 1))
    a = [sp.Symbol(c, integer=True) for c in "ab"]
    pad_index, k = [], 0
    for e, s in zip(g_at, shifts):
        if s != 0:
            pad_index.append((a[k], s))
            k += 1
        else:
            pad_index.append((e, 0))
    padded = (pad[tuple(i for i, _ in pad_index)], g.base[tuple(i + s for i, s in pad_index)])
    return FullConvolution(gradient, (flip[flip_index], w.base[w_at]), padded)


def _window_bracket(bracket: Iverson, summed: set) -> bool:
    """``[0 <= h + P - i <= K - 1]`` with ``i`` summed: a window's range (at stride 1)."""
    low = next((a.lhs for a in bracket.condition.args if isinstance(a, sp.GreaterThan) and a.rhs == 0), None)
    return low is not None and any(sp.expand(low).coeff(v) == -1 for v in index_symbols(low) if v in summed)
