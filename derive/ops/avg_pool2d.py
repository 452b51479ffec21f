"""2-D average pooling: each output pixel is the mean of its kernel x kernel window (no padding).

Windows start every ``stride`` pixels (``stride`` defaults to the kernel
size, as in PyTorch); a partial window at the edge is dropped.
"""
import sympy as sp

from derive.define import Hyper, Input, Intermediate, Op, Tensor, indices, sizes

N, C, IH, IW = sizes("N C IH IW")
kernel = sp.Symbol("kernel", integer=True, positive=True)
stride = sp.Symbol("stride", integer=True, positive=True)
OH, OW = sp.floor((IH - kernel) / stride) + 1, sp.floor((IW - kernel) / stride) + 1
n, c, i, j, p, q = indices("n c i j p q")
x = Tensor("x", N, C, IH, IW)

OP = Op(
    name="avg_pool2d",
    doc=__doc__,
    doc_zh="平均池化层：每个输出像素是其核窗口内各值的平均（不补零）。",
    inputs=(Input(x),),
    output=Intermediate("y", (n, c, i, j), (N, C, OH, OW),
                        sp.Sum(x[n, c, i * stride + p, j * stride + q], (q, 0, kernel - 1), (p, 0, kernel - 1))
                        / kernel ** 2),
    hyper=(Hyper(kernel, 2, cases=(2, 3), doc="the window's side", valid="kernel >= 1"),
           Hyper(stride, None, cases=(None, 1), doc="step between windows; None: the kernel size",
                 valid="stride >= 1", default_to="kernel")),
    pytorch="F.avg_pool2d(x, kernel, stride)",
    test_sizes={N: 2, C: 2, IH: 6, IW: 5},
    small_sizes={N: 1, C: 1, IH: 4, IW: 3},
    bench_sizes={"N": 32, "C": 8, "IH": 32, "IW": 32},
)
