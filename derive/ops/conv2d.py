"""2-D convolution layer (卷积层), cross-correlation as in PyTorch, with stride, zero padding, dilation and groups.

Each output pixel (i, j) of output channel o sums the kernel times the
input window that starts at (i s_h, j s_w) of the padded input, plus a bias;
the window's values are d_h rows and d_w columns apart (the dilation, 1: adjacent).
Stride, padding and dilation are given per image axis (an int for both, or an (h, w) pair).
With ``groups`` G the C input and O output channels split into G groups of
C_g = C / G and O_g = O / G (G divides both); output channel o is in group g
when g O_g <= o < (g + 1) O_g, and reads only that group's input channels
g C_g + c, c < C_g: the kernel is W[O, C_g, KH, KW].
"""
import sympy as sp

from derive.define import Hyper, Input, Intermediate, Iverson, Op, Option, Tensor, forms, indices, pair, sizes

N, C, IH, IW, O, KH, KW, Cg, Og = sizes("N C IH IW O KH KW C_g O_g")
groups = sp.Symbol("groups", integer=True, positive=True)
(sh, sw), (ph, pw) = pair("stride", positive=True), pair("padding", nonnegative=True)
dh, dw = pair("dilation", positive=True)
OH = sp.floor((IH + 2 * ph - dh * (KH - 1) - 1) / sh) + 1
OW = sp.floor((IW + 2 * pw - dw * (KW - 1) - 1) / sw) + 1
n, g, c, o, i, j, p, q, h, w = indices("n g c o i j p q h w")
x, W, bias = Tensor("x", N, C, IH, IW), Tensor("W", O, Cg, KH, KW), Tensor("b", O)

# The padded input: zero outside the image, the padding made explicit.
xp = Intermediate("xp", (n, c, h, w), (N, C, IH + 2 * ph, IW + 2 * pw),
                  Iverson(sp.And(h - ph >= 0, h - ph <= IH - 1)) * Iverson(sp.And(w - pw >= 0, w - pw <= IW - 1))
                  * x[n, c, h - ph, w - pw])

# Output channel o is in group g when g O_g <= o < (g + 1) O_g; its window reads that group's input channels.
windows = sp.Sum(Iverson(sp.And(o - g * Og >= 0, o - g * Og <= Og - 1))
                 * sp.Sum(W[o, c, p, q] * xp[n, g * Cg + c, i * sh + p * dh, j * sw + q * dw],
                          (q, 0, KW - 1), (p, 0, KH - 1), (c, 0, Cg - 1)), (g, 0, groups - 1))


def conv2d(b):
    """The layer with its bias (``b="given"``) or, for ``b=None``, without one: no bias to differentiate."""
    with_bias = b is not None
    return Op(
        name="conv2d",
        doc=__doc__ if with_bias else __doc__.replace(", plus a bias.", "; no bias (b=None).", 1),
        doc_zh="卷积层：与 PyTorch 相同的互相关，带步长、补零、膨胀（窗口内取值的间隔）和分组（每组输出通道只读本组的输入通道）；每个输出像素是卷积核与补零后输入的一个窗口的乘积之和，"
               + ("再加上偏移。" if with_bias else "没有偏移（b=None）。"),
        inputs=(Input(x), Input(W, element="w")) + ((Input(bias),) if with_bias else ()),
        output=Intermediate("y", (n, o, i, j), (N, O, OH, OW), windows + bias[o] if with_bias else windows),
        hyper=(Hyper((sh, sw), 1, cases=(1, 2, (2, 1)), doc="step between windows, an int or (h, w)",
                     valid="stride >= 1"),
               Hyper((ph, pw), 0, cases=(0, 1, (1, 0)), doc="zeros added on each side of the image, an int or (h, w)",
                     valid="padding >= 0"),
               Hyper((dh, dw), 1, cases=(1, 2, (1, 2)), doc="step between a window's values, an int or (h, w)",
                     valid="dilation >= 1"),
               Hyper(groups, 1, cases=(1, 1, 2), doc="how many groups the channels are split into; it divides C and O",
                     valid="groups >= 1")),
        derived_sizes={Cg: C / groups, Og: O / groups},
        pytorch="F.conv2d(x, W, b, stride=stride, padding=padding, dilation=dilation, groups=groups)",
        test_sizes={N: 2, C: 2, IH: 5, IW: 4, O: 4, KH: 3, KW: 2},
        small_sizes={N: 1, C: 2, IH: 3, IW: 3, O: 2, KH: 2, KW: 2},
        upstream=r"\delta",
        bench_sizes={"N": 16, "C": 16, "IH": 32, "IW": 32, "O": 32, "KH": 3, "KW": 3, "padding": 1},
    )


OP = forms(conv2d, Option("b", input=True, doc="the bias; None: the layer without one"))
