"""GELU's tanh approximation: ``x (1 + tanh u)/2`` with ``u = sqrt(2/pi) (x + 0.044715 x^3)``.

The form of Hendrycks and Gimpel that GPT-2 and BERT used; ``u`` is named,
as the papers name it, so that the derivative reads through ``tanh u``.
"""
import sympy as sp

from derive.define.op import Input, Op
from derive.define.symbols import Intermediate, Tensor, indices, sizes

(S,) = sizes("S")
(i,) = indices("i")
x = Tensor("x", S)
u = Intermediate("u", (i,), (S,), sp.sqrt(2 / sp.pi) * (x[i] + sp.Float("0.044715") * x[i] ** 3))

OP = Op(
    name="gelu_tanh",
    doc=__doc__,
    doc_zh="GELU 的 tanh 近似：x (1 + tanh u)/2，其中 u = sqrt(2/pi) (x + 0.044715 x^3)（GPT-2、BERT 所用的形式）。",
    inputs=(Input(x),),
    output=Intermediate("y", (i,), (S,), x[i] * (1 + sp.tanh(u[i])) / 2),
    shape_kind="flat",
    pytorch='F.gelu(x, approximate="tanh")',
    bench_sizes={"S": 256 * 1024},
)
