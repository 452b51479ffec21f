"""Cross-entropy of predicted probabilities against targets, averaged over the batch.

``t`` is either target probabilities (N, K) or integer class labels (N,), as
PyTorch reads its targets: ``-log y[n, t_n]`` per sample for labels.
"""
import sympy as sp

from derive.define import Input, Intermediate, Op, Option, Tensor, forms, indices, sizes

N, K = sizes("N K")
n, k = indices("n k")
y = Tensor("y", N, K)
PROBABILITIES, LABELS = Tensor("t", N, K), Tensor("t", N, integer=True)

REDUCTION = Option("reduction", ("mean", "sum", "none"), doc="the samples' losses averaged, added, or each sample's own")
TARGET = Option("target", ("probabilities", "labels"), read=("t", "integer"),
                doc="read from t: target probabilities (N, K), or class labels (N,) when t holds integers")


def target_input(target):
    """``t`` as the form reads it: probabilities per class, or one integer label per sample."""
    if target == "labels":
        return Input(LABELS, differentiable=False, domain="index")
    return Input(PROBABILITIES, differentiable=False, domain="probability")


def loss(log_p, target, reduction):
    """The loss from the log-probability of class ``k`` of sample ``n`` (``log_p(n, k)``), as PyTorch's
    cross-entropy reads its target: ``-sum_k t_nk log p_nk`` for probabilities, ``-log p_{n t_n}`` for
    labels; averaged over the batch, added, or one per sample."""
    if target == "labels":
        per_sample = -sp.Sum(sp.KroneckerDelta(k, LABELS[n]) * log_p(n, k), (k, 0, K - 1))  # log p_{n t_n}
    else:
        per_sample = -sp.Sum(PROBABILITIES[n, k] * log_p(n, k), (k, 0, K - 1))
    if reduction == "none":
        return Intermediate("L", (n,), (N,), per_sample)
    total = sp.Sum(per_sample, (n, 0, N - 1))
    return Intermediate("E", (), (), total / N if reduction == "mean" else total)


def summary(reduction, target) -> tuple[str, str]:
    """What a form adds to the op's description, in English and Chinese."""
    en = {"mean": "", "sum": " Summed over the batch (reduction='sum').",
          "none": " One loss per sample (reduction='none')."}[reduction]
    zh = {"mean": "", "sum": "对批次求和（reduction='sum'）。", "none": "每个样本一个损失（reduction='none'）。"}[reduction]
    if target == "labels":
        en, zh = " Targets are integer class labels." + en, "目标为整数类别标签。" + zh
    return en, zh


def cross_entropy(reduction, target):
    en, zh = summary(reduction, target)
    first, *rest = __doc__.split("\n", 1)
    reference = "F.nll_loss(log(y), t)" if target == "labels" else "-(t log y).sum(1)"
    return Op(
        name="cross_entropy",
        doc=first + en + "".join("\n" + r for r in rest),
        doc_zh="交叉熵：预测概率相对目标的交叉熵，对批次取平均。" + zh,
        inputs=(Input(y, domain="probability"), target_input(target)),
        output=loss(lambda a, b: sp.log(y[a, b]), target, reduction),
        pytorch=reference + ("" if reduction == "mean" else f" with reduction={reduction!r}"),
        bench_sizes={"N": 1024, "K": 1000},
    )


OP = forms(cross_entropy, REDUCTION, TARGET)
