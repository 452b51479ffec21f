"""Softmax followed by cross-entropy, in one op: logits in, loss out.

The loss is written with the log of the softmax (``z - log sum exp z``), and
the probabilities ``y`` are named so that the gradient folds onto them.
"""
import sympy as sp

from derive.define import Input, Intermediate, Op, Option, Tensor, forms, indices, sizes

N, K = sizes("N K")
n, k, j = indices("n k j")
z, t = Tensor("z", N, K), Tensor("t", N, K)
log_partition = sp.log(sp.Sum(sp.exp(z[n, j]), (j, 0, K - 1)))
y = Intermediate("y", (n, k), (N, K), sp.exp(z[n, k]) / sp.Sum(sp.exp(z[n, j]), (j, 0, K - 1)))

OUTPUTS = {
    "mean": Intermediate("E", (), (), -sp.Sum(t[n, k] * (z[n, k] - log_partition), (k, 0, K - 1), (n, 0, N - 1)) / N),
    "sum": Intermediate("E", (), (), -sp.Sum(t[n, k] * (z[n, k] - log_partition), (k, 0, K - 1), (n, 0, N - 1))),
    "none": Intermediate("L", (n,), (N,), -sp.Sum(t[n, k] * (z[n, k] - log_partition), (k, 0, K - 1))),
}
SUMMARIES = {
    "mean": ("", ""),
    "sum": (" Summed over the batch (reduction='sum').", "对批次求和（reduction='sum'）。"),
    "none": (" One loss per sample (reduction='none').", "每个样本一个损失（reduction='none'）。"),
}
DOC_ZH = "softmax 与交叉熵合为一层：输入 logits，输出损失。"


def softmax_cross_entropy(reduction):
    first, *rest = __doc__.split("\n", 1)
    return Op(
        name="softmax_cross_entropy",
        doc=first + SUMMARIES[reduction][0] + "".join("\n" + r for r in rest),
        doc_zh=DOC_ZH + SUMMARIES[reduction][1],
        inputs=(Input(z), Input(t, differentiable=False, domain="simplex")),
        output=OUTPUTS[reduction],
        extra=(y,),
        pytorch="F.cross_entropy(z, t)" if reduction == "mean" else f"F.cross_entropy(z, t, reduction={reduction!r})",
        bench_sizes={"N": 1024, "K": 1000},
    )


OP = forms(softmax_cross_entropy, Option("reduction", ("mean", "sum", "none"),
                                         doc="the samples' losses averaged, added, or each sample's own"))
