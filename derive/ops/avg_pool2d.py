"""2-D average pooling: each output pixel is the mean of its kernel_h x kernel_w window (no padding).

Windows start every ``stride`` pixels (``stride`` defaults to the kernel
size, as in PyTorch); a partial window at the edge is dropped.
"""
import sympy as sp

from derive.define import Hyper, Input, Intermediate, Op, Tensor, indices, pair, sizes

N, C, IH, IW = sizes("N C IH IW")
(kh, kw), (sh, sw) = pair("kernel", positive=True), pair("stride", positive=True)
OH, OW = sp.floor((IH - kh) / sh) + 1, sp.floor((IW - kw) / sw) + 1
n, c, i, j, p, q = indices("n c i j p q")
x = Tensor("x", N, C, IH, IW)

OP = Op(
    name="avg_pool2d",
    doc=__doc__,
    doc_zh="平均池化层：每个输出像素是其核窗口内各值的平均（不补零）。",
    inputs=(Input(x),),
    output=Intermediate("y", (n, c, i, j), (N, C, OH, OW),
                        sp.Sum(x[n, c, i * sh + p, j * sw + q], (q, 0, kw - 1), (p, 0, kh - 1))
                        / (kh * kw)),
    hyper=(Hyper((kh, kw), 2, cases=(2, 3, (2, 3)), doc="the window's size, an int or (h, w)", valid="kernel >= 1"),
           Hyper((sh, sw), None, cases=(None, 1, (1, 2)), doc="step between windows, an int or (h, w); None: the kernel",
                 valid="stride >= 1", default_to="kernel")),
    pytorch="F.avg_pool2d(x, kernel, stride)",
    test_sizes={N: 2, C: 2, IH: 6, IW: 5},
    small_sizes={N: 1, C: 1, IH: 4, IW: 3},
    bench_sizes={"N": 32, "C": 8, "IH": 32, "IW": 32},
)
