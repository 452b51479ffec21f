"""The hyperbolic tangent activation."""
import sympy as sp

from derive.define import Input, Intermediate, Op, Tensor, indices, sizes

(S,) = sizes("S")
(i,) = indices("i")
x = Tensor("x", S)

OP = Op(
    name="tanh",
    doc=__doc__,
    doc_zh="tanh 激活函数：双曲正切。",
    inputs=(Input(x),),
    output=Intermediate("y", (i,), (S,), sp.tanh(x[i])),
    shape_kind="flat",
    pytorch="torch.tanh",
    bench_sizes={"S": 256 * 1024},
)
