"""The Huber loss: half the squared error where the error is below delta, linear beyond, averaged over all elements."""
import sympy as sp

from derive.define.op import Hyper, Input, Op
from derive.define.symbols import Intermediate, Tensor, indices, sizes

(N,) = sizes("N")
(n,) = indices("n")
y, t = Tensor("y", N), Tensor("t", N)
delta = sp.Symbol("delta", positive=True)
error = y[n] - t[n]

OP = Op(
    name="huber",
    doc=__doc__,
    doc_zh="Huber 损失：误差小于 delta 时取平方误差的一半，超过 delta 时线性增长，对所有元素取平均。",
    inputs=(Input(y), Input(t, differentiable=False)),
    output=Intermediate("E", (), (), sp.Sum(sp.Piecewise((error ** 2 / 2, sp.Abs(error) < delta),
                                                         (delta * (sp.Abs(error) - delta / 2), True)),
                                            (n, 0, N - 1)) / N),
    hyper=(Hyper(delta, 1.0, cases=(1.0, 0.5), doc="where the loss turns from quadratic to linear",
                 valid="delta > 0"),),
    shape_kind="flat",
    pytorch="F.huber_loss",
    bench_sizes={"N": 1024 * 1000},
)
