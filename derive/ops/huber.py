"""The Huber loss: half the squared error where the error is below delta, linear beyond, averaged over all elements."""
import sympy as sp

from derive.define.forms import Option, forms, gradient_option
from derive.define.op import Hyper, Input, Op
from derive.define.symbols import Intermediate, Tensor, indices, sizes

(N,) = sizes("N")
(n,) = indices("n")
y, t = Tensor("y", N), Tensor("t", N)
delta = sp.Symbol("delta", positive=True)
error = y[n] - t[n]
loss = sp.Piecewise((error ** 2 / 2, sp.Abs(error) < delta), (delta * (sp.Abs(error) - delta / 2), True))

OUTPUTS = {
    "mean": Intermediate("E", (), (), sp.Sum(loss, (n, 0, N - 1)) / N),
    "sum": Intermediate("E", (), (), sp.Sum(loss, (n, 0, N - 1))),
    "none": Intermediate("L", (n,), (N,), loss),
}
SUMMARIES = {
    "mean": ("averaged over all elements", "对所有元素取平均"),
    "sum": ("summed over all elements (reduction='sum')", "对所有元素求和（reduction='sum'）"),
    "none": ("one per element (reduction='none')", "每个元素一个（reduction='none'）"),
}


def huber(reduction, t_grad):
    return Op(
        name="huber",
        doc=__doc__.replace("averaged over all elements", SUMMARIES[reduction][0]),
        doc_zh=f"Huber 损失：误差小于 delta 时取平方误差的一半，超过 delta 时线性增长，{SUMMARIES[reduction][1]}。",
        inputs=(Input(y), Input(t, differentiable=t_grad)),
        output=OUTPUTS[reduction],
        hyper=(Hyper(delta, 1.0, cases=(1.0, 0.5), doc="where the loss turns from quadratic to linear",
                     valid="delta > 0"),),
        shape_kind="flat",
        pytorch="F.huber_loss" + ("" if reduction == "mean" else f"(y, t, reduction={reduction!r}, delta=delta)"),
        bench_sizes={"N": 1024 * 1000},
    )


T_GRAD = gradient_option("t")

OP = forms(huber, Option("reduction", ("mean", "sum", "none"),
                         doc="the elements' losses averaged, added, or each element's own"), T_GRAD)
