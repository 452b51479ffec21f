"""The rectified linear unit: the input where positive, else 0 (gradient 0 at 0, as in PyTorch)."""
import sympy as sp

from derive.define import Input, Intermediate, Op, Tensor, indices, sizes

(S,) = sizes("S")
(i,) = indices("i")
x = Tensor("x", S)

OP = Op(
    name="relu",
    doc=__doc__,
    doc_zh="ReLU 激活函数：输入为正时取输入，否则取 0（与 PyTorch 一样，0 处梯度为 0）。",
    inputs=(Input(x, domain="nonzero"),),
    output=Intermediate("y", (i,), (S,), sp.Piecewise((x[i], x[i] > 0), (0, True))),
    shape_kind="flat",
    pytorch="F.relu",
    bench_sizes={"S": 256 * 1024},
)
