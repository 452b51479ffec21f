"""Binary cross-entropy between predicted probabilities and their targets, the mean over all elements."""
import sympy as sp

from derive.define.op import Input, Op
from derive.define.symbols import Intermediate, Tensor, indices, sizes

(N,) = sizes("N")
(n,) = indices("n")
y, t = Tensor("y", N), Tensor("t", N)

OP = Op(
    name="binary_cross_entropy",
    doc=__doc__,
    doc_zh="二元交叉熵：预测概率相对目标的二元交叉熵，对所有元素取平均。",
    inputs=(Input(y, domain="probability"), Input(t, differentiable=False, domain="probability")),
    output=Intermediate("E", (), (), -sp.Sum(t[n] * sp.log(y[n]) + (1 - t[n]) * sp.log(1 - y[n]), (n, 0, N - 1)) / N),
    shape_kind="flat",
    pytorch="F.binary_cross_entropy",
    bench_sizes={"N": 1024 * 1000},
)
