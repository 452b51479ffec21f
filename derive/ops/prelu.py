"""The parametric ReLU (PReLU): a leaky ReLU whose negative slope is learnt, one per channel."""
import sympy as sp

from derive.define.op import Input, Op
from derive.define.symbols import Intermediate, Tensor, indices, sizes

N, C, S = sizes("N C S")
n, c, s = indices("n c s")
x, a = Tensor("x", N, C, S), Tensor("a", C)

OP = Op(
    name="prelu",
    doc=__doc__,
    doc_zh="PReLU 激活函数（参数化 ReLU）：负半轴斜率可学习、每个通道一个的带泄漏 ReLU。",
    inputs=(Input(x, domain="nonzero"), Input(a)),
    output=Intermediate("y", (n, c, s), (N, C, S), sp.Piecewise((x[n, c, s], x[n, c, s] > 0), (a[c] * x[n, c, s], True))),
    shape_kind="channels",
    pytorch="F.prelu",
    bench_sizes={"N": 64, "C": 64, "S": 64},
)
