"""Softmax followed by cross-entropy, in one op: logits in, loss out.

The loss is written with the log of the softmax (``z - log sum exp z``), and
the probabilities ``y`` are named so that the gradient folds onto them.
``t`` is target probabilities (N, K) or integer class labels (N,), as
``F.cross_entropy`` reads it.
"""
import sympy as sp

from derive.define import Input, Intermediate, Op, Tensor, forms, indices, sizes
from derive.ops.cross_entropy import REDUCTION, TARGET, loss, summary, target_input

N, K = sizes("N K")
n, k, j = indices("n k j")
z = Tensor("z", N, K)
y = Intermediate("y", (n, k), (N, K), sp.exp(z[n, k]) / sp.Sum(sp.exp(z[n, j]), (j, 0, K - 1)))
DOC_ZH = "softmax 与交叉熵合为一层：输入 logits，输出损失。"


def log_softmax(a, b):
    """``log y[a, b]`` written out: ``z[a, b] - log sum_j e^{z[a, j]}``."""
    return z[a, b] - sp.log(sp.Sum(sp.exp(z[a, j]), (j, 0, K - 1)))


def softmax_cross_entropy(reduction, target):
    en, zh = summary(reduction, target)
    first, *rest = __doc__.split("\n", 1)
    t = target_input(target)
    if target == "probabilities":
        t = Input(t.tensor, differentiable=False, domain="simplex")
    return Op(
        name="softmax_cross_entropy",
        doc=first + en + "".join("\n" + r for r in rest),
        doc_zh=DOC_ZH + zh,
        inputs=(Input(z), t),
        output=loss(log_softmax, target, reduction),
        extra=(y,),
        pytorch="F.cross_entropy(z, t)" if reduction == "mean" else f"F.cross_entropy(z, t, reduction={reduction!r})",
        bench_sizes={"N": 1024, "K": 1000},
    )


OP = forms(softmax_cross_entropy, REDUCTION, TARGET)
