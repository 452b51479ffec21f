"""Binary cross-entropy between predicted probabilities and their targets, the mean over all elements."""
import sympy as sp

from derive.define.forms import Option, forms, gradient_option
from derive.define.op import Input, Op
from derive.define.symbols import Intermediate, Tensor, indices, sizes

(N,) = sizes("N")
(n,) = indices("n")
y, t = Tensor("y", N), Tensor("t", N)
loss = t[n] * sp.log(y[n]) + (1 - t[n]) * sp.log(1 - y[n])

OUTPUTS = {
    "mean": Intermediate("E", (), (), -sp.Sum(loss, (n, 0, N - 1)) / N),
    "sum": Intermediate("E", (), (), -sp.Sum(loss, (n, 0, N - 1))),
    "none": Intermediate("L", (n,), (N,), -loss),
}
DOCS = {
    "mean": (__doc__, "二元交叉熵：预测概率相对目标的二元交叉熵，对所有元素取平均。"),
    "sum": ("Binary cross-entropy between predicted probabilities and their targets, summed over all elements.",
            "二元交叉熵：预测概率相对目标的二元交叉熵，对所有元素求和（reduction='sum'）。"),
    "none": ("Binary cross-entropy between predicted probabilities and their targets, one per element.",
             "二元交叉熵：预测概率相对目标的二元交叉熵，每个元素一个（reduction='none'）。"),
}


def binary_cross_entropy(reduction, t_grad):
    return Op(
        name="binary_cross_entropy",
        doc=DOCS[reduction][0],
        doc_zh=DOCS[reduction][1],
        inputs=(Input(y, domain="probability"), Input(t, differentiable=t_grad, domain="probability")),
        output=OUTPUTS[reduction],
        shape_kind="flat",
        pytorch="F.binary_cross_entropy" + ("" if reduction == "mean" else f"(y, t, reduction={reduction!r})"),
        bench_sizes={"N": 1024 * 1000},
    )


T_GRAD = gradient_option("t")

OP = forms(binary_cross_entropy, Option("reduction", ("mean", "sum", "none"),
                                        doc="the elements' losses averaged, added, or each element's own"), T_GRAD)
