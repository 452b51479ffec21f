"""2-D max pooling: each output pixel is the largest value of its kernel x kernel window.

The gradient goes to the window's maximum, found by an argmax mask: a
primitive with a stated rule (it is piecewise constant, derivative 0), whose
tie rule is PyTorch's: the first maximum in the window, row by row, gets it.
"""
import sympy as sp

from derive.define import FirstMax, Hyper, Input, Intermediate, Op, Tensor, indices, sizes

N, C, IH, IW = sizes("N C IH IW")
kernel = sp.Symbol("kernel", integer=True, positive=True)
stride = sp.Symbol("stride", integer=True, positive=True)
OH, OW = sp.floor((IH - kernel) / stride) + 1, sp.floor((IW - kernel) / stride) + 1
n, c, i, j, p, q, u, v = indices("n c i j p q u v")
x = Tensor("x", N, C, IH, IW)

mask = Intermediate("mask", (n, c, i, j, p, q), (N, C, OH, OW, kernel, kernel),
                    FirstMax(x[n, c, i * stride + u, j * stride + v], u, v, kernel, kernel, p, q))

OP = Op(
    name="max_pool2d",
    doc=__doc__,
    doc_zh="最大池化层：每个输出像素是其核窗口内的最大值；梯度只传给窗口中第一个最大值（与 PyTorch 相同）。",
    inputs=(Input(x),),
    output=Intermediate("y", (n, c, i, j), (N, C, OH, OW),
                        sp.Sum(mask[n, c, i, j, p, q] * x[n, c, i * stride + p, j * stride + q],
                               (q, 0, kernel - 1), (p, 0, kernel - 1))),
    hyper=(Hyper(kernel, 2, cases=(2, 3), doc="the window's side", valid="kernel >= 1"),
           Hyper(stride, None, cases=(None, 1), doc="step between windows; None: the kernel size",
                 valid="stride >= 1", default_to="kernel")),
    pytorch="F.max_pool2d(x, kernel, stride)",
    test_sizes={N: 2, C: 2, IH: 6, IW: 5},
    small_sizes={N: 1, C: 1, IH: 4, IW: 3},
    bench_sizes={"N": 32, "C": 8, "IH": 32, "IW": 32},
)
