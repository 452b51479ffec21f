"""Softplus, a smooth ReLU: ``log(1 + e^{beta x})/beta``, computed without overflow for any input."""
import sympy as sp

from derive.define.op import Hyper, Input, Op
from derive.define.symbols import Intermediate, Tensor, indices, sizes

(S,) = sizes("S")
(i,) = indices("i")
x = Tensor("x", S)
beta = sp.Symbol("beta", positive=True)

OP = Op(
    name="softplus",
    doc=__doc__,
    doc_zh="softplus 激活函数（平滑的 ReLU）：log(1 + exp(beta x))/beta，任何输入都不会溢出。",
    inputs=(Input(x),),
    output=Intermediate("y", (i,), (S,), sp.log(1 + sp.exp(beta * x[i])) / beta),
    hyper=(Hyper(beta, 1.0, cases=(1.0, 2.0), doc="the sharpness: larger values come closer to ReLU",
                 valid="beta > 0"),),
    shape_kind="flat",
    pytorch='F.softplus(x, beta, threshold=float("inf"))',
    bench_sizes={"S": 256 * 1024},
)
