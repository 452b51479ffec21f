"""The article's objective: half the squared error, summed over outputs, averaged over the batch."""
import sympy as sp

from derive.define import Input, Intermediate, Op, Tensor, indices, sizes

N, K = sizes("N K")
n, k = indices("n k")
y, t = Tensor("y", N, K), Tensor("t", N, K)

OP = Op(
    name="half_sse",
    doc=__doc__,
    doc_zh="平方误差的一半：原文的目标函数，对输出求和，对批次取平均。",
    inputs=(Input(y), Input(t, differentiable=False)),
    output=Intermediate("E", (), (), sp.Sum(sp.Rational(1, 2) * (t[n, k] - y[n, k]) ** 2,
                                            (k, 0, K - 1), (n, 0, N - 1)) / N),
    pytorch="0.5*F.mse_loss(y, t, reduction='sum')/N",
    bench_sizes={"N": 1024, "K": 1000},
)
