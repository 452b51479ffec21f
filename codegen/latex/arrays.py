"""Whole-array forms of image statements (padding, correlation, pooling, reshapes), recognised from the
derived index expressions and checked before they are printed.

A recogniser reads the structure of one index statement (its sums, its brackets, the affine indices of
the arrays it reads) and proposes a whole-array operation built from a few primitives: ``pad``, ``crop``,
``reshape``, a sum over axes, the windows of an image (``win``) and their adjoint, a correlation ``⋆``,
``rot180`` and ``dil``. Each primitive has a small NumPy reference implementation; a proposal is printed
only if it computes, at small sizes and random integer values, exactly what the index expression
computes element by element (``agrees``). Anything else stays in index form.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np
import sympy as sp

from derive.define.symbols import FirstMax, Iverson

# -- the primitives, each with its TeX and its NumPy meaning ------------------------------------------


class Form:
    """A whole-array expression: ``tex`` prints it, ``value`` computes it from the arrays by name."""

    uses: tuple = ()  # the primitives it is built of, for the convention sentence

    def tex(self, p) -> str:
        raise NotImplementedError

    def value(self, env: dict) -> np.ndarray:
        raise NotImplementedError

    def primitives(self) -> set:
        found = set(type(self).uses)
        for child in getattr(self, "children", ()):
            found |= child.primitives()
        return found


@dataclass
class Array(Form):
    name: str
    rank: int

    def tex(self, p):
        return p.notation.matrix(self.name, self.rank)

    def value(self, env):
        return env[self.name]


def _pair(p, values) -> str:
    """A per-axis pair as one number or letter where both are equal, else ``(a, b)``."""
    a, b = (p.doprint(sp.sympify(v)) for v in values)
    return a if a == b else f"({a}, {b})"


def _call(name: str, arg: str, sub: str = "") -> str:
    return rf"\mathrm{{{name}}}{f'_{{{sub}}}' if sub else ''}\left({arg}\right)"


@dataclass
class Pad(Form):
    """Zeros around the last two axes: ``before`` cells on the top and left, ``after`` on the bottom and right."""

    arg: Form
    before: tuple
    after: tuple
    uses = ("pad",)

    @property
    def children(self):
        return (self.arg,)

    def tex(self, p):
        return _call("pad", self.arg.tex(p), _pair(p, self.before))

    def value(self, env):
        a = self.arg.value(env)
        widths = [(0, 0)] * (a.ndim - 2) + list(zip(_ints(self.before, env), _ints(self.after, env)))
        return np.pad(a, widths)


@dataclass
class Crop(Form):
    """The last two axes from ``offset`` on, at the left-hand side's size (zero beyond the array's end)."""

    arg: Form
    offset: tuple
    uses = ("crop",)

    @property
    def children(self):
        return (self.arg,)

    def tex(self, p):
        return _call("crop", self.arg.tex(p), _pair(p, self.offset))

    def value(self, env):
        oh, ow = _ints(self.offset, env)
        return self.arg.value(env)[..., oh:, ow:]  # cut to the statement's shape by ``_fit``


@dataclass
class Reshape(Form):
    """The same values read and written row-major (the first axis slowest) in another shape."""

    arg: Form
    shape: tuple
    uses = ("reshape",)

    @property
    def children(self):
        return (self.arg,)

    def tex(self, p):
        shape = ", ".join(p.doprint(sp.sympify(s)) for s in self.shape)
        return rf"\mathrm{{reshape}}\left({self.arg.tex(p)}, ({shape})\right)"

    def value(self, env):
        return self.arg.value(env).reshape(env["__shape__"])


@dataclass
class AxisSum(Form):
    """Summed over the axes named by their index letters."""

    arg: Form
    letters: tuple  # the arg's axes, by letter
    summed: tuple
    uses = ("axis sum",)

    @property
    def children(self):
        return (self.arg,)

    def tex(self, p):
        letters = ", ".join(p.doprint(v) for v in self.summed)
        return rf"\sum_{{{letters}}} {self.arg.tex(p)}"

    def value(self, env):
        return self.arg.value(env).sum(axis=tuple(self.letters.index(v) for v in self.summed))


def windows(a: np.ndarray, stride, dilation, kernel, count) -> np.ndarray:
    """``out[..., i, j, p, q] = a[..., s_H i + d_H p, s_W j + d_W q]`` (the cells beyond ``a`` are 0)."""
    (sh, sw), (dh, dw), (kh, kw), (oh, ow) = stride, dilation, kernel, count
    need_h, need_w = sh * (oh - 1) + dh * (kh - 1) + 1, sw * (ow - 1) + dw * (kw - 1) + 1
    a = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(0, max(0, need_h - a.shape[-2])), (0, max(0, need_w - a.shape[-1]))])
    out = np.zeros(a.shape[:-2] + (oh, ow, kh, kw), dtype=a.dtype)
    for p in range(kh):
        for q in range(kw):
            out[..., p, q] = a[..., dh * p: dh * p + sh * (oh - 1) + 1: sh, dw * q: dw * q + sw * (ow - 1) + 1: sw]
    return out


def windows_back(w: np.ndarray, stride, dilation) -> np.ndarray:
    """The adjoint of ``windows``: each window's cells added back where they were read from (the cells
    as far as the last window reaches)."""
    (sh, sw), (dh, dw) = stride, dilation
    oh, ow, kh, kw = w.shape[-4:]
    need = (sh * (oh - 1) + dh * (kh - 1) + 1, sw * (ow - 1) + dw * (kw - 1) + 1)
    out = np.zeros(w.shape[:-4] + need, dtype=w.dtype)
    for p in range(kh):
        for q in range(kw):
            out[..., dh * p: dh * p + sh * (oh - 1) + 1: sh, dw * q: dw * q + sw * (ow - 1) + 1: sw] += w[..., p, q]
    return out


def _ints(values, env):
    return tuple(int(sp.sympify(v).xreplace(env["__sizes__"])) for v in values)


@dataclass
class Correlate(Form):
    """``image ⋆_{s,d} kernel``: every window of the image's last two axes (starts ``s`` apart, values ``d``
    apart) times the kernel, summed over the window and over the axis the two share; ``image`` is
    (a, c, H, W) and ``kernel`` (b, c, K_H, K_W) or (c, b, ...); the kept axes a, b in ``order``."""

    image: Form
    kernel: Form
    stride: tuple
    dilation: tuple
    kernel_axes: str  # "bc" or "cb": where the shared axis is in the kernel
    image_axes: str  # "ac" or "ca"
    swap: bool  # the output is (b, a, ...) rather than (a, b, ...)
    #: channels in groups: (how many, which of the image's, the kernel's and the output's first two axes hold
    #: every group's channels, each axis then (group, channel in the group)); None: one group
    groups: tuple | None = None
    letters: tuple = ()  # the index letters of the image's and the kernel's first two axes
    uses = ("correlate",)

    @property
    def children(self):
        return (self.image, self.kernel)

    def primitives(self) -> set:
        return super().primitives() | ({"groups"} if self.groups is not None else set())

    def tex(self, p):
        sub = _pair(p, self.stride) + ", " + _pair(p, self.dilation)
        star = r"\star" if sub == "1, 1" else rf"\star_{{{sub}}}"
        if self.groups is not None:
            count = self.groups[0]
            star += f"^{{{'G' if isinstance(count, sp.Symbol) else p.doprint(count)}}}"
        return rf"{_wrapped(self.image, p)} {star} {_wrapped(self.kernel, p)}"

    def value(self, env):
        x, k = self.image.value(env), self.kernel.value(env)
        (sh, sw), (dh, dw) = _ints(self.stride, env), _ints(self.dilation, env)
        count = [(size - d * (kk - 1) - 1) // s + 1 for size, kk, s, d in zip(x.shape[-2:], k.shape[-2:], (sh, sw), (dh, dw))]
        win = windows(x, (sh, sw), (dh, dw), k.shape[-2:], count)
        out = "ba" if self.swap else "ab"
        if self.groups is None:
            return np.einsum(f"{self.image_axes}ijpq,{self.kernel_axes}pq->{out}ij", win, k)
        count, image_full, kernel_full, out_full = self.groups
        count = _ints((count,), env)[0]
        win, image = _in_groups(win, self.image_axes, image_full, count)
        k, kernel = _in_groups(k, self.kernel_axes, kernel_full, count)
        spec = "".join(("g" if full else "") + letter for letter, full in zip(out, out_full))
        y = np.einsum(f"{image}ijpq,{kernel}pq->{spec}ij", win, k)
        shape, at = list(y.shape), 0
        for full in out_full:  # (group, channel in the group) back to one axis
            if full:
                shape[at:at + 2] = [shape[at] * shape[at + 1]]
            at += 1
        return y.reshape(shape)


def _in_groups(a: np.ndarray, letters: str, full: tuple, count: int):
    """The array with each of its first two axes that holds every group's channels split into (group,
    channel in the group), and its einsum letters (the group's is g)."""
    for axis in (1, 0):
        if full[axis]:
            a = a.reshape(a.shape[:axis] + (count, a.shape[axis] // count) + a.shape[axis + 1:])
            letters = letters[:axis] + "g" + letters[axis:]
    return a, letters


def _wrapped(form: Form, p) -> str:
    tex = form.tex(p)
    return tex if isinstance(form, Array) or tex.startswith(r"\mathrm") else rf"\left({tex}\right)"


@dataclass
class Rot180(Form):
    arg: Form
    uses = ("rot180",)

    @property
    def children(self):
        return (self.arg,)

    def tex(self, p):
        return _call("rot180", self.arg.tex(p))

    def value(self, env):
        return self.arg.value(env)[..., ::-1, ::-1]


@dataclass
class Dilate(Form):
    """``s - 1`` zeros between neighbouring cells of the last two axes."""

    arg: Form
    step: tuple
    uses = ("dil",)

    @property
    def children(self):
        return (self.arg,)

    def tex(self, p):
        return _call("dil", self.arg.tex(p), _pair(p, self.step))

    def value(self, env):
        a = self.arg.value(env)
        sh, sw = _ints(self.step, env)
        out = np.zeros(a.shape[:-2] + (sh * (a.shape[-2] - 1) + 1, sw * (a.shape[-1] - 1) + 1), dtype=a.dtype)
        out[..., ::sh, ::sw] = a
        return out


@dataclass
class Windows(Form):
    """``win_{s,d}(X)[..., i, j, p, q] = X[..., s i + d p, s j + d q]``."""

    arg: Form
    stride: tuple
    dilation: tuple
    kernel: tuple
    count: tuple  # how many windows along each axis
    uses = ("win",)

    @property
    def children(self):
        return (self.arg,)

    def tex(self, p):
        return _call("win", self.arg.tex(p), _pair(p, self.stride) + ", " + _pair(p, self.dilation))

    def value(self, env):
        return windows(self.arg.value(env), _ints(self.stride, env), _ints(self.dilation, env),
                       _ints(self.kernel, env), _ints(self.count, env))


@dataclass
class WindowsBack(Form):
    """The adjoint of ``win``: each window's values added back to the cells they were read from."""

    arg: Form
    stride: tuple
    dilation: tuple
    uses = ("win back",)

    @property
    def children(self):
        return (self.arg,)

    def tex(self, p):
        return _call("win", self.arg.tex(p), _pair(p, self.stride) + ", " + _pair(p, self.dilation)) \
            .replace(r"\mathrm{win}", r"\mathrm{win}^{T}", 1)

    def value(self, env):
        return windows_back(self.arg.value(env), _ints(self.stride, env), _ints(self.dilation, env))


@dataclass
class Hadamard(Form):
    """Elementwise product, the shorter operand broadcast over the longer one's last axes (a window's cells)."""

    left: Form
    right: Form
    uses = ()

    @property
    def children(self):
        return (self.left, self.right)

    def tex(self, p):
        return rf"{_wrapped(self.left, p)} \odot {_wrapped(self.right, p)}"

    def value(self, env):
        a, b = self.left.value(env), self.right.value(env)
        while a.ndim < b.ndim:
            a = a[..., None]
        while b.ndim < a.ndim:
            b = b[..., None]
        return a * b


@dataclass
class WindowSum(Form):
    """Summed over the window's cells (the last two axes of ``win``)."""

    arg: Form
    offsets: tuple  # the window's index letters
    uses = ()

    @property
    def children(self):
        return (self.arg,)

    def tex(self, p):
        letters = ", ".join(p.doprint(v) for v in self.offsets)
        return rf"\sum_{{{letters}}} {self.arg.tex(p)}"

    def value(self, env):
        return self.arg.value(env).sum(axis=(-2, -1))


@dataclass
class ArgMax(Form):
    """1 at the first maximum (row by row) of each window's cells, among the candidates, else 0."""

    arg: Windows
    inside: tuple | None  # (offset, size) per axis: the candidates are the cells of the image within the padding
    uses = ("argmax",)

    @property
    def children(self):
        return (self.arg,)

    def tex(self, p):
        return _call("argmax", self.arg.tex(p), ", ".join(p.doprint(v) for v in self.offsets))

    offsets: tuple = ()

    def value(self, env):
        win = self.arg.value(env).astype(float)
        if self.inside is not None:  # a cell outside the image is never the maximum
            keep = np.ones(win.shape[-4:], dtype=bool)
            (sh, sw), (dh, dw) = _ints(self.arg.stride, env), _ints(self.arg.dilation, env)
            (oh, ph), (ow, pw) = [(int(sp.sympify(o).xreplace(env["__sizes__"])),
                                   int(sp.sympify(s).xreplace(env["__sizes__"]))) for o, s in self.inside]
            i, j, p, q = np.ix_(*(range(n) for n in keep.shape))
            rows, cols = sh * i + dh * p - oh, sw * j + dw * q - ow
            keep = (rows >= 0) & (rows < ph) & (cols >= 0) & (cols < pw)
            win = np.where(keep, win, -np.inf)
        flat = win.reshape(win.shape[:-2] + (-1,))
        out = np.zeros_like(flat)
        np.put_along_axis(out, flat.argmax(axis=-1)[..., None], 1.0, axis=-1)
        return out.reshape(win.shape)


@dataclass
class Scaled(Form):
    """A scalar times a whole array."""

    factor: sp.Expr
    arg: Form
    uses = ()

    @property
    def children(self):
        return (self.arg,)

    def tex(self, p):
        return f"{p.doprint(self.factor)} {_wrapped(self.arg, p)}"

    def value(self, env):
        return float(sp.sympify(self.factor).xreplace(env["__sizes__"])) * self.arg.value(env)


@dataclass
class Plus(Form):
    """A whole array plus a vector along its second axis (a bias per channel)."""

    arg: Form
    bias: Form
    uses = ("bias",)

    @property
    def children(self):
        return (self.arg, self.bias)

    def tex(self, p):
        return f"{self.arg.tex(p)} + {self.bias.tex(p)}"

    def value(self, env):
        a = self.arg.value(env)
        b = self.bias.value(env)
        return a + b.reshape((1, -1) + (1,) * (a.ndim - 2))


# -- the convention, stated once ------------------------------------------------------------------------

CONVENTION = {
    "en": {
        "head": "Whole arrays: an image array's last two axes are its rows and columns;",
        "pad": r"$\mathrm{pad}_{P}(X)$ adds $P$ zeros on each side of them",
        "crop": r"$\mathrm{crop}_{P}(A)$ takes the cells from offset $P$ on, at the left-hand side's size (zero beyond $A$)",
        "correlate": r"$X \star_{s,d} K$ is cross-correlation: every window of $X$ (windows $s$ cells apart, their "
                     r"cells $d$ apart) times $K$, summed over the window and over the axis the two share, the other "
                     r"axes kept in the left-hand side's order (zero where no window reaches)",
        "groups": r"with $G$ groups, $\star^{G}$ pairs each group of the one array's channels with the same group "
                  "of the other's",
        "rot180": r"$\mathrm{rot180}(K)$ flips $K$ in both directions",
        "dil": r"$\mathrm{dil}_{s}(A)$ puts $s - 1$ zeros between neighbouring cells",
        "win": r"$\mathrm{win}_{s,d}(X)_{\ldots ijpq} = X_{\ldots,s i + d p,s j + d q}$ are the windows",
        "win back": r"$\mathrm{win}^{T}_{s,d}$ adds each window's values back to the cells they came from (an "
                    r"upsampling; an array without the window's axes is spread over them)",
        "argmax": r"$\mathrm{argmax}_{p,q}$ is 1 at each window's first maximum (row by row) among the cells inside "
                  "the image, else 0",
        "axis sum": r"$\sum_{n,i,j} A$ sums the axes those letters index",
        "reshape": r"$\mathrm{reshape}$ reads and writes row-major: channel, then row, then column",
        "bias": "a vector added to an image array is added along its channel axis",
    },
    "zh": {
        "head": "整体数组：图像数组的最后两维是行和列；",
        "pad": r"$\mathrm{pad}_{P}(X)$ 在四周各补 $P$ 个零",
        "crop": r"$\mathrm{crop}_{P}(A)$ 从偏移 $P$ 处起取出与左边同样大小的格子（超出 $A$ 处为0）",
        "correlate": r"$X \star_{s,d} K$ 是互相关：$X$ 的每个窗口（窗口相隔 $s$ 格，窗口内取值相隔 $d$ 格）与 $K$ 相乘，"
                     r"对窗口和两者共有的那一维求和，其余维按左边的顺序保留（没有窗口到达处为0）",
        "groups": r"分 $G$ 组时，$\star^{G}$ 让一方的每组通道只与另一方的同一组通道相乘",
        "rot180": r"$\mathrm{rot180}(K)$ 把 $K$ 上下左右翻转",
        "dil": r"$\mathrm{dil}_{s}(A)$ 在相邻格子之间插入 $s - 1$ 个零",
        "win": r"$\mathrm{win}_{s,d}(X)_{\ldots ijpq} = X_{\ldots,s i + d p,s j + d q}$ 是各个窗口",
        "win back": r"$\mathrm{win}^{T}_{s,d}$ 把每个窗口的值加回它们所来自的格子（上采样；没有窗口维的数组在窗口上铺开）",
        "argmax": r"$\mathrm{argmax}_{p,q}$ 在每个窗口（只看图像内的格子）的第一个最大值处（逐行）为1，其余为0",
        "axis sum": r"$\sum_{n,i,j} A$ 对这些字母所标的维求和",
        "reshape": r"$\mathrm{reshape}$ 按行优先读写：先通道，再行，再列",
        "bias": "图像数组加上一个向量，是沿通道维相加",
    },
}

ORDER = ("pad", "crop", "correlate", "groups", "rot180", "dil", "win", "win back", "argmax", "axis sum", "reshape", "bias")


def convention(forms, lang: str) -> str:
    """One sentence defining the primitives these forms use; empty if none."""
    used = set().union(*(f.primitives() for f in forms)) if forms else set()
    words = CONVENTION[lang]
    parts = [words[k] for k in ORDER if k in used]
    if not parts:
        return ""
    sep, end = ("；", "。") if lang == "zh" else ("; ", ".")
    return f"{words['head']} {sep.join(parts)}{end}" if lang == "en" else f"{words['head']}{sep.join(parts)}{end}"


# -- reading an index statement -------------------------------------------------------------------------


@dataclass
class Parts:
    """``factor * Σ_{limits} Π brackets Π arrays`` (+ ``rest``, a bias term), or None if not of that form."""

    factor: sp.Expr
    limits: tuple
    brackets: tuple
    arrays: tuple
    rest: tuple = ()


def split(expr: sp.Expr) -> Parts | None:
    """The sums pulled to the front (their letters are distinct), the brackets and arrays collected."""
    limits, brackets, arrays, factor = [], [], [], sp.S.One

    def visit(e) -> bool:
        nonlocal factor
        if isinstance(e, sp.Sum):
            limits.extend(e.limits)
            return visit(e.function)
        if isinstance(e, sp.Mul):
            return all(visit(a) for a in e.args)
        if isinstance(e, (Iverson, sp.KroneckerDelta)):
            brackets.append(e)
            return True
        if isinstance(e, (sp.Indexed, FirstMax)):
            arrays.append(e)
            return True
        if not e.has(sp.Indexed) and not any(s in bound for s in e.free_symbols):
            factor *= e
            return True
        return False

    bound = {v for s in sp.preorder_traversal(expr) if isinstance(s, sp.Sum) for v, *_ in s.limits}
    if not visit(expr):
        return None
    return Parts(factor, tuple(limits), tuple(brackets), tuple(arrays))


def affine(e: sp.Expr, letters) -> tuple | None:
    """``e`` as ({letter: coefficient}, constant), the coefficients and constant free of ``letters``."""
    e = sp.expand(e)
    coeffs = {v: e.coeff(v) for v in letters if e.has(v)}
    const = sp.expand(e - sum(c * v for v, c in coeffs.items()))
    if any(c.has(*letters) for c in coeffs.values()) or const.has(*letters):
        return None
    return coeffs, const


def _range_of(bracket: Iverson):
    """``[0 <= e <= U]`` as (e, U), else None."""
    cond = getattr(bracket, "condition", None)
    if not isinstance(cond, sp.And) or len(cond.args) != 2:
        return None
    low = next((a for a in cond.args if isinstance(a, sp.GreaterThan) and a.rhs == 0), None)
    high = next((a for a in cond.args if isinstance(a, sp.LessThan)), None)
    if low is None or high is None or sp.expand(low.lhs - high.lhs) != 0:
        return None
    return sp.expand(low.lhs), high.rhs


def _trivial(bracket: Iverson, index, shape) -> bool:
    """A range bracket on one free letter over exactly its whole axis: always 1."""
    found = _range_of(bracket)
    if found is None or found[0] not in index:
        return False
    return sp.expand(found[1] - (shape[list(index).index(found[0])] - 1)) == 0


# -- the recognisers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    """``lhs[index] = expr``, the left-hand side of this (symbolic) shape."""

    expr: sp.Expr
    index: tuple
    shape: tuple


def recognise(st: Statement) -> list[Form]:
    """Proposals for a whole-array form of the statement, most specific first (each still to be checked)."""
    expr = sp.expand(st.expr) if isinstance(st.expr, sp.Add) else st.expr
    terms = sp.Add.make_args(expr)
    if len(terms) == 2:  # a correlation plus a bias per channel
        bias = [t for t in terms if isinstance(t, sp.Indexed) and len(t.indices) == 1 and len(st.index) == 4
                and t.indices[0] == st.index[1]]
        if len(bias) == 1:
            (main,) = [t for t in terms if t is not bias[0]]
            return [Plus(f, _array(bias[0])) for f in recognise(Statement(main, st.index, st.shape))]
        return []
    parts = split(expr)
    if parts is None:
        return []
    brackets = tuple(b for b in parts.brackets if not _trivial(b, st.index, st.shape))
    parts = Parts(parts.factor, parts.limits, brackets, parts.arrays)
    found = []
    for proposal in (_shifted, _reshaped, _axis_sum, _argmax, _windowed, _windowed_product, _windowed_back):
        found += proposal(parts, st)
    grouped = _ungrouped(parts)
    if grouped is not None:
        plain, (count, letters, full_axes) = grouped
        for proposal in (_windowed, _windowed_back):
            for form in proposal(plain, st):
                found += [f for f in [_with_groups(form, count, letters, full_axes, st)] if f is not None]
    if parts.factor != 1:
        found = [Scaled(parts.factor, f) for f in found]
    return found


def _ungrouped(parts: Parts):
    """A sum over groups g, ``[0 <= o - O_g g <= O_g - 1]`` saying which group a channel o is in, and
    channel indices ``C_g g + c`` (a group's channel c) or ``c - C_g g``: the same statement in one group,
    with (how many groups, the letters that run over every group's channels, the array axes that do);
    None if there is no such sum."""
    for g, lo, hi in parts.limits:
        if lo != 0:
            continue
        letters, kept = set(), []
        for b in parts.brackets:
            found = _range_of(b) if b.has(g) else None
            aff = affine(found[0], [g]) if found else None
            if aff and g in aff[0] and isinstance(aff[1], sp.Symbol) and sp.expand(aff[0][g] + found[1] + 1) == 0:
                letters.add(aff[1])  # [0 <= o - K g <= K - 1]
            else:
                kept.append(b)
        if not letters or any(b.has(g) for b in kept):
            continue
        arrays, full_axes, local_axes = [], set(), set()
        for a in parts.arrays:
            if not isinstance(a, sp.Indexed):
                arrays.append(a)
                continue
            new = []
            for axis, index in enumerate(a.indices):
                if not index.has(g):
                    new.append(index)
                    continue
                aff = affine(index, [g])
                rest = aff[1] if aff else None
                if rest is None or not isinstance(rest, sp.Symbol):
                    return None
                if aff[0][g].could_extract_minus_sign():  # c - C_g g: the channel within its group
                    if rest not in letters:
                        return None
                    local_axes.add((str(a.base.label), axis))
                else:  # C_g g + c: the whole axis, read by group
                    full_axes.add((str(a.base.label), axis))
                new.append(rest)
            arrays.append(a.base[tuple(new)])
        if any(a.has(g) for a in arrays):
            return None
        limits = tuple(limit for limit in parts.limits if limit[0] != g)
        return Parts(parts.factor, limits, tuple(kept), tuple(arrays)), \
            (hi + 1, frozenset(letters), (full_axes, local_axes))
    return None


def _with_groups(form: Form, count, letters, full_axes, st: Statement):
    """The correlation inside ``form`` in groups (which of its axes hold every group's channels)."""
    inner, outer = form, []
    while isinstance(inner, (Crop, Scaled)):
        outer.append(inner)
        inner = inner.arg
    if not isinstance(inner, Correlate):
        return None

    whole, within = full_axes

    def full(operand: Form, symbols) -> tuple:
        base = operand
        while not isinstance(base, Array):
            base = base.arg
        return tuple((base.name, k) in whole or ((base.name, k) not in within and letter in letters)
                     for k, letter in enumerate(symbols))

    image_letters, kernel_letters = inner.letters
    grouped = replace(inner, groups=(count, full(inner.image, image_letters), full(inner.kernel, kernel_letters),
                                     tuple(v in letters for v in st.index[:2])))
    for wrapper in reversed(outer):
        grouped = replace(wrapper, arg=grouped)
    return grouped


def _array(e: sp.Indexed) -> Array:
    return Array(str(e.base.label), len(e.indices))


def _shifted(parts: Parts, st: Statement) -> list[Form]:
    """``X[n, c, h - P, w - P]`` inside its range: ``pad_P(X)``; ``A[n, c, h + P, w + P]``: ``crop_P(A)``."""
    if parts.limits or len(parts.arrays) != 1 or not isinstance(parts.arrays[0], sp.Indexed) \
            or any(_range_of(b) is None for b in parts.brackets):
        return []
    (a,) = parts.arrays
    if len(a.indices) != len(st.index) or len(st.index) < 3:
        return []
    shifts = [sp.expand(e - v) for e, v in zip(a.indices, st.index)]
    if any(s.has(*st.index) for s in shifts) or any(s != 0 for s in shifts[:-2]):
        return []
    before = tuple(-s for s in shifts[-2:])
    if all(s == 0 for s in shifts) and not parts.brackets:
        return [_array(a)]
    if parts.brackets:
        return [Pad(_array(a), before, before)]
    return [Crop(_array(a), tuple(shifts[-2:]))]


def _reshaped(parts: Parts, st: Statement) -> list[Form]:
    """One array read with as many elements as the left-hand side: tried as a row-major reshape."""
    if len(parts.arrays) != 1 or not isinstance(parts.arrays[0], sp.Indexed):
        return []
    (a,) = parts.arrays
    if len(a.indices) == len(st.index) and all(e == v for e, v in zip(a.indices, st.index)):
        return []
    if sp.expand(sp.Mul(*a.base.shape) - sp.Mul(*st.shape)) != 0:
        return []
    return [Reshape(_array(a), tuple(st.shape))]


def _axis_sum(parts: Parts, st: Statement) -> list[Form]:
    """``Σ_{n,i,j} δ[n, o, i, j]``: one array summed over some of its axes, the others the left-hand side's."""
    if not parts.limits or parts.brackets or len(parts.arrays) != 1 or not isinstance(parts.arrays[0], sp.Indexed):
        return []
    (a,) = parts.arrays
    summed = tuple(v for v, *_ in parts.limits)
    kept = tuple(v for v in a.indices if v not in summed)
    if not all(isinstance(v, sp.Symbol) for v in a.indices) or kept != tuple(st.index) \
            or len(set(a.indices)) != len(a.indices):
        return []
    return [AxisSum(_array(a), tuple(a.indices), tuple(v for v in a.indices if v in summed))]


def _window_axes(e: sp.Indexed, free, bound):
    """The last two indices as ``s·f + d·b + c`` (f free, b bound): [(f, b, s, d, c), ...], else None."""
    if len(e.indices) < 4:
        return None
    axes = []
    for index in e.indices[-2:]:
        found = affine(index, list(free) + list(bound))
        if found is None:
            return None
        coeffs, const = found
        fs = [v for v in coeffs if v in free]
        bs = [v for v in coeffs if v in bound]
        if len(fs) != 1 or len(bs) != 1:
            return None
        axes.append((fs[0], bs[0], coeffs[fs[0]], coeffs[bs[0]], const))
    return axes


def _argmax(parts: Parts, st: Statement) -> list[Form]:
    """The mask of max pooling: ``argmax_{p,q} win_{s,d}(X̄)``, the candidates the image's cells."""
    if parts.limits or parts.brackets or len(parts.arrays) != 1 or not isinstance(parts.arrays[0], FirstMax):
        return []
    m = parts.arrays[0]
    u, v = m.bound
    axes = _window_axes(m.window, st.index, (u, v))
    if axes is None or tuple(m.at) != tuple(st.index[-2:]) or any(a[4] != 0 for a in axes):
        return []
    inside = None
    if m.candidates is not sp.true:
        ranges = [_range_of(Iverson(sp.And(*pair))) for pair in _pairs(m.candidates)]
        if len(ranges) != 2 or None in ranges:
            return []
        inside = []
        for (f, b, s, d, _), (e, top) in zip(axes, ranges):
            offset = -sp.expand(e - s * f - d * b)
            if sp.expand(e - s * f - d * b + offset) != 0 or offset.has(*st.index, u, v):
                return []
            inside.append((offset, top + 1))
        inside = tuple(inside)
    count = tuple(st.shape[list(st.index).index(ax[0])] for ax in axes)
    win = Windows(_array(m.window), (axes[0][2], axes[1][2]), (axes[0][3], axes[1][3]), tuple(m.kernel), count)
    return [ArgMax(win, inside, offsets=(st.index[-2], st.index[-1]))]


def _pairs(cond):
    """A conjunction of four bounds as two (low, high) pairs on the same expression."""
    args = list(cond.args) if isinstance(cond, sp.And) else [cond]
    lows = [a for a in args if isinstance(a, sp.GreaterThan) and a.rhs == 0]
    highs = [a for a in args if isinstance(a, sp.LessThan)]
    out = []
    for low in lows:
        high = next((h for h in highs if sp.expand(h.lhs - low.lhs) == 0), None)
        if high is None:
            return []
        out.append((low, high))
    return out if len(out) * 2 == len(args) else []


def _windowed(parts: Parts, st: Statement) -> list[Form]:
    """A sum over a window's offsets of an image read at ``s·i + d·p`` (the left-hand side's i, a summed
    p), times a kernel or a per-window array: a correlation, or pooling's ``Σ_{p,q} M ⊙ win(X̄)``."""
    if not parts.limits:
        return []
    bound = [v for v, *_ in parts.limits]
    images = [(a, _window_axes(a, st.index, bound)) for a in parts.arrays if isinstance(a, sp.Indexed)]
    images = [(a, axes) for a, axes in images if axes is not None]
    if len(images) != 1 or len(parts.arrays) > 2:
        return []
    image, axes = images[0]
    if any(ax[4] != 0 for ax in axes) or tuple(ax[0] for ax in axes) != tuple(st.index[-2:]):
        return []
    stride, dilation = (axes[0][2], axes[1][2]), (axes[0][3], axes[1][3])
    offsets = (axes[0][1], axes[1][1])
    size = {v: hi - lo + 1 for v, lo, hi in parts.limits}
    others = [a for a in parts.arrays if a is not image]
    if not others:  # average pooling: the window's cells summed
        if set(bound) != set(offsets) or parts.brackets:
            return []
        return [WindowSum(Windows(_array(image), stride, dilation, (size[offsets[0]], size[offsets[1]]),
                                  tuple(st.shape[-2:])), offsets)]
    (other,) = others
    if parts.brackets:
        return []
    kernel = tuple(other.indices)
    if kernel[-2:] == offsets and len(kernel) == len(st.index) + 2 and tuple(kernel[:-2]) == tuple(st.index) \
            and set(bound) == set(offsets):  # a per-window array (the pooling mask)
        win = Windows(_array(image), stride, dilation, (size[offsets[0]], size[offsets[1]]), tuple(st.shape[-2:]))
        return [WindowSum(Hadamard(_array(other), win), offsets)]
    # a correlation: image (a, c, ...), kernel (b, c, ...) with the shared c summed
    if len(kernel) != 4 or tuple(kernel[-2:]) != offsets or len(image.indices) != 4:
        return []
    shared = [v for v in bound if v not in offsets]
    if len(shared) != 1 or shared[0] not in image.indices[:2] or shared[0] not in kernel[:2]:
        return []
    (c,) = shared
    a = next(v for v in image.indices[:2] if v != c)
    b = next(v for v in kernel[:2] if v != c)
    if tuple(st.index[:2]) not in ((a, b), (b, a)):
        return []
    return [Correlate(_array(image), _array(other), stride, dilation,
                      "bc" if kernel[1] == c else "cb", "ac" if image.indices[1] == c else "ca",
                      tuple(st.index[:2]) == (b, a), letters=(tuple(image.indices[:2]), tuple(kernel[:2])))]


def _guards(brackets, array: sp.Indexed) -> bool:
    """Every bracket only says that one of ``array``'s indices is inside its axis (``win`` reads 0 beyond)."""
    for b in brackets:
        found = _range_of(b)
        if found is None:
            return False
        e, top = found
        axes = [k for k, i in enumerate(array.indices) if sp.expand(i - e) == 0]
        if not axes or sp.expand(top - (array.base.shape[axes[0]] - 1)) != 0:
            return False
    return True


def _windowed_product(parts: Parts, st: Statement) -> list[Form]:
    """``A[n, c, i, j] X[n, c, s i + d p, s j + d q]`` over (n, c, i, j, p, q): ``A ⊙ win_{s,d}(X)``, A the
    same in each of a window's cells (the gradient arriving at max pooling's mask)."""
    if parts.limits or len(parts.arrays) != 2 or len(st.index) != 6:
        return []
    positions, offsets = st.index[2:4], st.index[4:6]
    for image, other in (parts.arrays, reversed(parts.arrays)):
        if not isinstance(image, sp.Indexed) or not isinstance(other, sp.Indexed) or len(image.indices) != 4:
            continue
        axes = _window_axes(image, positions, offsets)
        if axes is None or tuple(image.indices[:2]) != tuple(st.index[:2]) or tuple(other.indices) != st.index[:4] \
                or any(ax[4] != 0 for ax in axes) or tuple(ax[0] for ax in axes) != tuple(positions) \
                or tuple(ax[1] for ax in axes) != tuple(offsets) or not _guards(parts.brackets, image):
            continue
        win = Windows(_array(image), (axes[0][2], axes[1][2]), (axes[0][3], axes[1][3]), tuple(st.shape[4:6]),
                      tuple(st.shape[2:4]))
        return [Hadamard(_array(other), win)]
    return []


def _windowed_back(parts: Parts, st: Statement) -> list[Form]:
    """A sum over the window positions i, j of what reads the cell (h, w) at offset ``(h + P - s i)/d``:
    the adjoint of a window. With a kernel, ``crop_P(pad(dil_s(δ)) ⋆_{1,d} rot180(W))``; with a per-window
    array (a mask) or none (average pooling), ``crop_P(win^T_{s,d}(M ⊙ δ))``."""
    if not parts.limits or len(st.index) != 4:
        return []
    h, w = st.index[-2:]
    bound = [v for v, *_ in parts.limits]
    geometry = []  # per axis: (position letter, stride, dilation, offset P)
    kernel = None
    for a in parts.arrays:
        if not isinstance(a, sp.Indexed) or len(a.indices) < 4:
            continue
        found = []
        for index, cell in zip(a.indices[-2:], (h, w)):
            aff = affine(index, [cell] + bound)
            if aff is None:
                break
            coeffs, const = aff
            pos = [v for v in coeffs if v in bound]
            if set(coeffs) - set(pos) != {cell} or len(pos) != 1:
                break
            d = 1 / coeffs[cell]
            found.append((pos[0], sp.simplify(-coeffs[pos[0]] * d), sp.simplify(d), sp.simplify(const * d)))
        if len(found) == 2:
            if kernel is not None:
                return []
            kernel, geometry = a, found
    if kernel is None:
        return _spread_back(parts, st, bound)
    positions = tuple(g[0] for g in geometry)
    stride, dilation, offset = tuple(g[1] for g in geometry), tuple(g[2] for g in geometry), \
        tuple(g[3] for g in geometry)
    others = [a for a in parts.arrays if a is not kernel]
    if len(others) != 1 or not isinstance(others[0], sp.Indexed):
        return []
    (up,) = others
    k = tuple(kernel.indices)
    forms = []
    if k[2:4] == positions and tuple(k[:2]) == tuple(up.indices[:2]) == tuple(st.index[:2]) \
            and tuple(up.indices[2:]) == positions and set(bound) == set(positions):  # a mask
        forms.append(WindowsBack(Hadamard(_array(kernel), _array(up)), stride, dilation))
    elif len(k) == 4 and tuple(up.indices[2:]) == positions:  # a kernel: the transposed correlation
        shared = [v for v in bound if v not in positions]
        if len(shared) != 1 or shared[0] not in k[:2] or shared[0] not in up.indices[:2]:
            return []
        (o,) = shared
        a = next(v for v in up.indices[:2] if v != o)
        b = next(v for v in k[:2] if v != o)
        if tuple(st.index[:2]) not in ((a, b), (b, a)):
            return []
        reach = tuple(d * (kk - 1) for d, kk in zip(dilation, kernel.base.shape[-2:]))
        spread = _array(up) if all(v == 1 for v in stride) else Dilate(_array(up), stride)
        padded = Pad(spread, reach, reach)
        forms.append(Correlate(padded, Rot180(_array(kernel)), (1, 1), dilation,
                               "bc" if k[1] == o else "cb", "ac" if up.indices[1] == o else "ca",
                               tuple(st.index[:2]) == (b, a), letters=(tuple(up.indices[:2]), tuple(k[:2]))))
    if any(sp.simplify(p) != 0 for p in offset):
        forms = [Crop(f, offset) for f in forms]
    return forms


def _spread_back(parts: Parts, st: Statement, bound) -> list[Form]:
    """Average pooling's gradient: ``δ[n, c, i, j]`` summed over the windows whose range brackets
    ``[0 <= h + P - s i <= K - 1]`` hold: ``crop_P(win^T_{s,1}(δ))``, δ spread over each window."""
    if len(parts.arrays) != 1 or not isinstance(parts.arrays[0], sp.Indexed):
        return []
    (up,) = parts.arrays
    positions = tuple(up.indices[2:])
    if tuple(up.indices[:2]) != tuple(st.index[:2]) or set(bound) != set(positions) or len(parts.brackets) != 2:
        return []
    geometry = []
    for bracket, cell, pos in zip(parts.brackets, st.index[-2:], positions):
        found = _range_of(bracket)
        aff = found and affine(found[0], [cell, pos])
        if not aff or aff[0].get(cell) != 1 or pos not in aff[0]:
            return []
        geometry.append((-aff[0][pos], aff[1], found[1] + 1))
    stride, offset, kernel = zip(*geometry)
    form = WindowsBack(Spread(_array(up), kernel), stride, (1, 1))
    return [Crop(form, offset) if any(p != 0 for p in offset) else form]


@dataclass
class Spread(Form):
    """An array without a window's axes, the same value in each of a window's cells."""

    arg: Form
    kernel: tuple

    @property
    def children(self):
        return (self.arg,)

    def tex(self, p):
        return self.arg.tex(p)

    def value(self, env):
        a = self.arg.value(env)
        return np.broadcast_to(a[..., None, None], a.shape + _ints(self.kernel, env))


# -- the check: the whole-array form computes what the index form does ---------------------------------


class _Unknown(Exception):
    """A construct the evaluator does not know: the statement stays in index form."""


def evaluate_index(expr: sp.Expr, index: tuple, shape: tuple, arrays: dict) -> np.ndarray:
    """Each element of the index statement (every size a number), by walking the expression: sums as
    loops, a bracket that is 0 skipping the rest of its product (so no element out of range is read),
    indices as exact fractions; ``arrays`` by name."""
    out = np.zeros(shape)
    for idx in np.ndindex(*shape):
        out[idx] = float(_value(expr, dict(zip(index, idx)), arrays))
    return out


def _value(e, at: dict, arrays: dict):
    if isinstance(e, sp.Symbol):
        if e not in at:
            raise _Unknown(e)
        return at[e]
    if isinstance(e, (sp.Integer, sp.Rational)):
        return Fraction(int(e.p), int(e.q))
    if isinstance(e, sp.Add):
        return sum(_value(a, at, arrays) for a in e.args)
    if isinstance(e, sp.Mul):
        first = sorted(e.args, key=lambda a: not isinstance(a, (Iverson, sp.KroneckerDelta)))
        total = Fraction(1)
        for a in first:
            total *= _value(a, at, arrays)
            if total == 0:
                return total
        return total
    if isinstance(e, sp.Pow) and e.exp.is_Integer:
        return _value(e.base, at, arrays) ** int(e.exp)
    if isinstance(e, sp.Indexed):
        idx = [_value(i, at, arrays) for i in e.indices]
        if any(i.denominator != 1 if isinstance(i, Fraction) else False for i in idx):
            raise _Unknown(e)
        name = str(e.base.label)
        a = arrays[name]
        idx = tuple(int(i) for i in idx)
        if any(i < 0 or i >= n for i, n in zip(idx, a.shape)):
            raise _Unknown(e)  # an element out of range that no bracket guards: the statement is not whole
        return Fraction(a[idx])
    if isinstance(e, sp.Sum):
        (v, lo, hi), *rest = e.limits
        inner = sp.Sum(e.function, *rest) if rest else e.function
        return sum((_value(inner, {**at, v: Fraction(k)}, arrays)
                    for k in range(int(_value(lo, at, arrays)), int(_value(hi, at, arrays)) + 1)), Fraction(0))
    if isinstance(e, Iverson):
        return Fraction(int(bool(_truth(e.condition, at, arrays))))
    if isinstance(e, sp.KroneckerDelta):
        return Fraction(int(_value(e.args[0], at, arrays) == _value(e.args[1], at, arrays)))
    if isinstance(e, sp.Mod):
        return _value(e.args[0], at, arrays) % _value(e.args[1], at, arrays)
    if isinstance(e, sp.floor):
        return Fraction(int(np.floor(_value(e.args[0], at, arrays))))
    if isinstance(e, FirstMax):
        (u, v), (k, m), (a, b) = e.bound, e.kernel, e.at
        k, m = int(_value(k, at, arrays)), int(_value(m, at, arrays))
        cells = [(p, q) for p in range(k) for q in range(m)
                 if _truth(e.candidates, {**at, u: Fraction(p), v: Fraction(q)}, arrays)]
        values = [_value(e.window, {**at, u: Fraction(p), v: Fraction(q)}, arrays) for p, q in cells]
        first = cells[int(np.argmax([float(x) for x in values]))]
        return Fraction(int(first == (int(_value(a, at, arrays)), int(_value(b, at, arrays)))))
    raise _Unknown(type(e).__name__)


def _truth(cond, at, arrays) -> bool:
    if cond is sp.true or cond is sp.false:
        return bool(cond)
    if isinstance(cond, sp.And):
        return all(_truth(c, at, arrays) for c in cond.args)
    if isinstance(cond, sp.Or):
        return any(_truth(c, at, arrays) for c in cond.args)
    ops = {sp.GreaterThan: lambda a, b: a >= b, sp.LessThan: lambda a, b: a <= b, sp.Eq: lambda a, b: a == b,
           sp.StrictGreaterThan: lambda a, b: a > b, sp.StrictLessThan: lambda a, b: a < b,
           sp.Ne: lambda a, b: a != b}
    for kind, test in ops.items():
        if isinstance(cond, kind):
            return test(_value(cond.lhs, at, arrays), _value(cond.rhs, at, arrays))
    raise _Unknown(type(cond).__name__)


def agrees(form: Form, st: Statement, sizes: dict, seed: int = 0) -> bool:
    """At these sizes (every size and whole-number hyper-parameter a number), with random distinct
    integers in every array the statement reads, do the form and the index statement give the same array?"""
    rng = np.random.default_rng(seed)
    sizes = {k: sp.Integer(v) for k, v in sizes.items()}
    expr = st.expr.xreplace(sizes)
    shape = tuple(int(sp.sympify(s).xreplace(sizes)) for s in st.shape)
    if any(n <= 0 for n in shape):
        return False
    arrays = {}
    bases = {e.base for e in sp.preorder_traversal(expr) if isinstance(e, sp.Indexed)}
    for base in sorted(bases, key=lambda b: str(b.label)):
        dims = tuple(int(sp.sympify(s).xreplace(sizes)) for s in base.shape)
        count = int(np.prod(dims))
        a = rng.permutation(4 * count + 4)[:count].reshape(dims) - 2 * count
        arrays[str(base.label)] = a.astype(np.int64)
    try:
        want = evaluate_index(expr, st.index, shape, arrays)
    except _Unknown:
        return False
    env = {**arrays, "__sizes__": sizes, "__shape__": shape}
    try:
        got = form.value(env)
    except (ValueError, IndexError, KeyError, TypeError):
        return False
    got = _fit(got, shape)
    return got is not None and got.shape == want.shape and np.allclose(got, want, rtol=1e-12, atol=1e-9)


def _fit(a: np.ndarray, shape: tuple):
    """The array at the statement's shape: a crop's cut, zeros where a correlation reaches no cell."""
    if a.ndim != len(shape) or a.ndim < 3 or a.shape[:-2] != shape[:-2]:
        return a if a.shape == shape else None
    out = np.zeros(shape)
    h, w = min(a.shape[-2], shape[-2]), min(a.shape[-1], shape[-1])
    out[..., :h, :w] = a[..., :h, :w]
    return out


def whole_array(st: Statement, points: list[dict]) -> Form | None:
    """The first proposal that agrees with the statement at every point; None: index form only."""
    if not points:
        return None
    for form in recognise(st):
        if all(agrees(form, st, point, seed) for seed, point in enumerate(points)):
            return form
    return None


def check_points(op) -> list[dict]:
    """The sizes a whole-array form is checked at: the op's test sizes at each test case of its
    hyper-parameters (stride, padding, dilation...), and its small sizes at the first."""
    from derive.define.forms import case_count
    from derive.engine.check import example_sizes, hyper_values, with_hyper
    points = []
    for small in (False, True):
        for case in range(case_count(op) if not small else 1):
            sizes = {**op.test_sizes, **example_sizes(op, small)} if not small else \
                {**op.small_sizes, **example_sizes(op, small)}
            try:
                found = with_hyper(op, sizes, hyper_values(op, case, resolve=True))
            except ValueError:  # a case whose sizes do not fit together (groups that do not divide C)
                continue
            if found not in points:
                points.append(found)
    return points
