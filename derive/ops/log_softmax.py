"""Log-softmax over the last axis (or the axis ``dim``): ``x - log sum exp x``, shifted by the row maximum so that it never overflows.

The probabilities ``p`` (the softmax) are named, so that the gradient folds onto them.
"""
import sympy as sp

from derive.define.forms import Axis, forms
from derive.define.op import Input, Op
from derive.define.symbols import Intermediate, Tensor, indices, sizes

N, K = sizes("N K")
n, k, j = indices("n k j")
x = Tensor("x", N, K)
p = Intermediate("p", (n, k), (N, K), sp.exp(x[n, k]) / sp.Sum(sp.exp(x[n, j]), (j, 0, K - 1)))


def log_softmax():
    """The op along the last axis; ``dim`` moves another axis there in the generated code."""
    return Op(
        name="log_softmax",
        doc=__doc__,
        doc_zh="log-softmax 层：沿最后一个轴计算 x 减去各 exp(x) 之和的对数，按行最大值平移，不会溢出。",
        inputs=(Input(x),),
        output=Intermediate("y", (n, k), (N, K), x[n, k] - sp.log(sp.Sum(sp.exp(x[n, j]), (j, 0, K - 1)))),
        extra=(p,),
        shape_kind="leading",
        pytorch="F.log_softmax(x, -1)",
        bench_sizes={"N": 1024, "K": 1000},
    )


OP = forms(log_softmax, Axis("dim", of="x", doc="the axis the rows run along, as in F.log_softmax(x, dim)"))
