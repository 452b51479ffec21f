"""Cross-entropy of predicted probabilities against targets, averaged over the batch."""
import sympy as sp

from derive.define import Input, Intermediate, Op, Option, Tensor, forms, indices, sizes

N, K = sizes("N K")
n, k = indices("n k")
y, t = Tensor("y", N, K), Tensor("t", N, K)

OUTPUTS = {
    "mean": Intermediate("E", (), (), -sp.Sum(t[n, k] * sp.log(y[n, k]), (k, 0, K - 1), (n, 0, N - 1)) / N),
    "sum": Intermediate("E", (), (), -sp.Sum(t[n, k] * sp.log(y[n, k]), (k, 0, K - 1), (n, 0, N - 1))),
    "none": Intermediate("L", (n,), (N,), -sp.Sum(t[n, k] * sp.log(y[n, k]), (k, 0, K - 1))),
}
DOCS = {
    "mean": (__doc__, "交叉熵：预测概率相对目标概率的交叉熵，对批次取平均。"),
    "sum": ("Cross-entropy of predicted probabilities against targets, summed over the batch.",
            "交叉熵：预测概率相对目标概率的交叉熵，对批次求和（reduction='sum'）。"),
    "none": ("Cross-entropy of predicted probabilities against targets, one per sample.",
             "交叉熵：预测概率相对目标概率的交叉熵，每个样本一个（reduction='none'）。"),
}


def cross_entropy(reduction):
    return Op(
        name="cross_entropy",
        doc=DOCS[reduction][0],
        doc_zh=DOCS[reduction][1],
        inputs=(Input(y, domain="probability"), Input(t, differentiable=False, domain="probability")),
        output=OUTPUTS[reduction],
        pytorch="F.nll_loss(log(y), labels)" + ("" if reduction == "mean" else f" with reduction={reduction!r}"),
        bench_sizes={"N": 1024, "K": 1000},
    )


OP = forms(cross_entropy, Option("reduction", ("mean", "sum", "none"),
                                 doc="the samples' losses averaged, added, or each sample's own"))
