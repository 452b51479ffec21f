"""The logistic sigmoid, the article's activation f."""
import sympy as sp

from derive.define import Input, Intermediate, Op, Tensor, indices, sizes

(S,) = sizes("S")
(i,) = indices("i")
x = Tensor("x", S)

OP = Op(
    name="sigmoid",
    doc=__doc__,
    doc_zh="sigmoid 激活函数：原文中的激活函数 f。",
    inputs=(Input(x),),
    output=Intermediate("y", (i,), (S,), 1 / (1 + sp.exp(-x[i]))),
    shape_kind="flat",
    pytorch="torch.sigmoid",
    bench_sizes={"S": 256 * 1024},
)
