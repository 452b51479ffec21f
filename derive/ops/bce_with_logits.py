"""Binary cross-entropy on logits: the sigmoid and the loss in one op, averaged over all elements.

Written as the literature writes it, with ``σ(z) = 1/(1 + e^{-z})``; the
engine turns ``log σ(z)`` and ``log(1 - σ(z))`` into softplus, which never
overflows, and the gradient comes out as ``σ(z) - t``.
"""
import sympy as sp

from derive.define.forms import Option, forms, gradient_option
from derive.define.op import Input, Op
from derive.define.symbols import Intermediate, Tensor, indices, sizes

(N,) = sizes("N")
(n,) = indices("n")
z, t = Tensor("z", N), Tensor("t", N)
sigma = 1 / (1 + sp.exp(-z[n]))
loss = t[n] * sp.log(sigma) + (1 - t[n]) * sp.log(1 - sigma)

OUTPUTS = {
    "mean": Intermediate("E", (), (), -sp.Sum(loss, (n, 0, N - 1)) / N),
    "sum": Intermediate("E", (), (), -sp.Sum(loss, (n, 0, N - 1))),
    "none": Intermediate("L", (n,), (N,), -loss),
}
SUMMARIES = {
    "mean": ("averaged over all elements", "对所有元素取平均"),
    "sum": ("summed over all elements (reduction='sum')", "对所有元素求和（reduction='sum'）"),
    "none": ("one per element (reduction='none')", "每个元素一个（reduction='none'）"),
}


def bce_with_logits(reduction, t_grad):
    first, rest = __doc__.split("\n", 1)
    return Op(
        name="bce_with_logits",
        doc=first.replace("averaged over all elements", SUMMARIES[reduction][0]) + "\n" + rest,
        doc_zh=f"带 logits 的二元交叉熵：sigmoid 与二元交叉熵合为一层，{SUMMARIES[reduction][1]}。",
        inputs=(Input(z), Input(t, differentiable=t_grad, domain="probability")),
        output=OUTPUTS[reduction],
        shape_kind="flat",
        pytorch="F.binary_cross_entropy_with_logits" + ("" if reduction == "mean" else f"(z, t, reduction={reduction!r})"),
        bench_sizes={"N": 1024 * 1000},
    )


T_GRAD = gradient_option("t")

OP = forms(bce_with_logits, Option("reduction", ("mean", "sum", "none"),
                                   doc="the elements' losses averaged, added, or each element's own"), T_GRAD)
