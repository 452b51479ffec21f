"""The Gaussian error linear unit (GELU): the input times the probability that a standard normal is below it.

Hendrycks and Gimpel's exact form, ``x Φ(x)`` with ``Φ`` written through
``erf``; the engine names ``Φ`` (and its density ``φ``), so that the
derivative reads ``Φ(x) + x φ(x)``.
"""
import sympy as sp

from derive.define.op import Input, Op
from derive.define.symbols import Intermediate, Tensor, indices, sizes

(S,) = sizes("S")
(i,) = indices("i")
x = Tensor("x", S)

OP = Op(
    name="gelu",
    doc=__doc__,
    doc_zh="GELU 激活函数（高斯误差线性单元）：输入乘以标准正态变量小于它的概率（erf 形式）。",
    inputs=(Input(x),),
    output=Intermediate("y", (i,), (S,), x[i] * (1 + sp.erf(x[i] / sp.sqrt(2))) / 2),
    shape_kind="flat",
    pytorch="F.gelu",
    bench_sizes={"S": 256 * 1024},
)
