"""The sigmoid linear unit (SiLU, swish with beta = 1): the input times its sigmoid."""
import sympy as sp

from derive.define.op import Input, Op
from derive.define.symbols import Intermediate, Tensor, indices, sizes

(S,) = sizes("S")
(i,) = indices("i")
x = Tensor("x", S)

OP = Op(
    name="silu",
    doc=__doc__,
    doc_zh="SiLU 激活函数（sigmoid 线性单元，即 beta = 1 的 swish）：输入乘以它的 sigmoid。",
    inputs=(Input(x),),
    output=Intermediate("y", (i,), (S,), x[i] / (1 + sp.exp(-x[i]))),
    shape_kind="flat",
    pytorch="F.silu",
    bench_sizes={"S": 256 * 1024},
)
