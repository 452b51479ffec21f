"""The leaky ReLU: the input where positive, else alpha times it (slope alpha at 0, as in PyTorch)."""
import sympy as sp

from derive.define import Hyper, Input, Intermediate, Op, Tensor, indices, sizes

(S,) = sizes("S")
(i,) = indices("i")
x = Tensor("x", S)
alpha = sp.Symbol("alpha", positive=True)

OP = Op(
    name="leaky_relu",
    doc=__doc__,
    doc_zh="带泄漏的 ReLU 激活函数：输入为正时取输入，否则取 alpha 倍的输入（与 PyTorch 一样，0 处斜率为 alpha）。",
    inputs=(Input(x, domain="nonzero"),),
    output=Intermediate("y", (i,), (S,), sp.Piecewise((x[i], x[i] > 0), (alpha * x[i], True))),
    hyper=(Hyper(alpha, 0.01, cases=(0.01, 0.2), doc="slope for negative inputs", valid="alpha >= 0"),),
    shape_kind="flat",
    pytorch="F.leaky_relu",
    bench_sizes={"S": 256 * 1024},
)
