"""Softmax over the last axis (or the axis ``dim``): positive outputs that sum to 1."""
import sympy as sp

from derive.define import Axis, Input, Intermediate, Op, Tensor, forms, indices, sizes

N, K = sizes("N K")
n, k, j = indices("n k j")
x = Tensor("x", N, K)


def softmax():
    """The op along the last axis; ``dim`` moves another axis there in the generated code."""
    return Op(
        name="softmax",
        doc=__doc__,
        doc_zh="softmax 层：沿最后一个轴归一化，输出为正且和为 1。",
        inputs=(Input(x),),
        output=Intermediate("y", (n, k), (N, K), sp.exp(x[n, k]) / sp.Sum(sp.exp(x[n, j]), (j, 0, K - 1))),
        shape_kind="leading",
        pytorch="F.softmax(x, -1)",
        bench_sizes={"N": 1024, "K": 1000},
    )


OP = forms(softmax, Axis("dim", of="x", doc="the axis the rows run along, as in F.softmax(x, dim)"))
