"""Softmax over the last axis: positive outputs that sum to 1."""
import sympy as sp

from derive.define import Input, Intermediate, Op, Tensor, indices, sizes

N, K = sizes("N K")
n, k, j = indices("n k j")
x = Tensor("x", N, K)

OP = Op(
    name="softmax",
    doc=__doc__,
    doc_zh="softmax 层：沿最后一个轴归一化，输出为正且和为 1。",
    inputs=(Input(x),),
    output=Intermediate("y", (n, k), (N, K), sp.exp(x[n, k]) / sp.Sum(sp.exp(x[n, j]), (j, 0, K - 1))),
    shape_kind="leading",
    pytorch="F.softmax(x, -1)",
    bench_sizes={"N": 1024, "K": 1000},
)
