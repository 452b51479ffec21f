"""Mean squared error over all elements."""
import sympy as sp

from derive.define import Input, Intermediate, Op, Tensor, indices, sizes

(S,) = sizes("S")
(i,) = indices("i")
y, t = Tensor("y", S), Tensor("t", S)

OP = Op(
    name="mse",
    doc=__doc__,
    doc_zh="均方误差：对所有元素取平均的平方误差。",
    inputs=(Input(y), Input(t, differentiable=False)),
    output=Intermediate("E", (), (), sp.Sum((y[i] - t[i]) ** 2, (i, 0, S - 1)) / S),
    shape_kind="flat",
    pytorch="F.mse_loss",
    bench_sizes={"S": 1024 * 1000},
)
