"""The exponential linear unit (ELU): the input where positive, else ``alpha (e^x - 1)``."""
import sympy as sp

from derive.define.op import Hyper, Input, Op
from derive.define.symbols import Intermediate, Tensor, indices, sizes

(S,) = sizes("S")
(i,) = indices("i")
x = Tensor("x", S)
alpha = sp.Symbol("alpha", positive=True)

OP = Op(
    name="elu",
    doc=__doc__,
    doc_zh="ELU 激活函数（指数线性单元）：输入为正时取输入，否则取 alpha (exp(x) - 1)。",
    inputs=(Input(x, domain="nonzero"),),
    output=Intermediate("y", (i,), (S,), sp.Piecewise((x[i], x[i] > 0), (alpha * (sp.exp(x[i]) - 1), True))),
    hyper=(Hyper(alpha, 1.0, cases=(1.0, 0.5), doc="the value negative inputs saturate to is -alpha",
                 valid="alpha >= 0"),),
    shape_kind="flat",
    pytorch="F.elu",
    bench_sizes={"S": 256 * 1024},
)
