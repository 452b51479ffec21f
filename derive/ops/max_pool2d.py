"""2-D max pooling: each output pixel is the largest value of its kernel_h x kernel_w window.

The gradient goes to the window's maximum, found by an argmax mask: a
primitive with a stated rule (it is piecewise constant, derivative 0), whose
tie rule is PyTorch's: the first maximum in the window, row by row, gets it.
"""
import sympy as sp

from derive.define import FirstMax, Hyper, Input, Intermediate, Op, Tensor, indices, pair, sizes

N, C, IH, IW = sizes("N C IH IW")
(kh, kw), (sh, sw) = pair("kernel", positive=True), pair("stride", positive=True)
OH, OW = sp.floor((IH - kh) / sh) + 1, sp.floor((IW - kw) / sw) + 1
n, c, i, j, p, q, u, v = indices("n c i j p q u v")
x = Tensor("x", N, C, IH, IW)

mask = Intermediate("mask", (n, c, i, j, p, q), (N, C, OH, OW, kh, kw),
                    FirstMax(x[n, c, i * sh + u, j * sw + v], u, v, kh, kw, p, q))

OP = Op(
    name="max_pool2d",
    doc=__doc__,
    doc_zh="最大池化层：每个输出像素是其核窗口内的最大值；梯度只传给窗口中第一个最大值（与 PyTorch 相同）。",
    inputs=(Input(x),),
    output=Intermediate("y", (n, c, i, j), (N, C, OH, OW),
                        sp.Sum(mask[n, c, i, j, p, q] * x[n, c, i * sh + p, j * sw + q],
                               (q, 0, kw - 1), (p, 0, kh - 1))),
    hyper=(Hyper((kh, kw), 2, cases=(2, 3, (2, 3)), doc="the window's size, an int or (h, w)", valid="kernel >= 1"),
           Hyper((sh, sw), None, cases=(None, 1, (1, 2)), doc="step between windows, an int or (h, w); None: the kernel",
                 valid="stride >= 1", default_to="kernel")),
    pytorch="F.max_pool2d(x, kernel, stride)",
    test_sizes={N: 2, C: 2, IH: 6, IW: 5},
    small_sizes={N: 1, C: 1, IH: 4, IW: 3},
    bench_sizes={"N": 32, "C": 8, "IH": 32, "IW": 32},
)
