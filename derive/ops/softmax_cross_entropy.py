"""Softmax followed by cross-entropy, in one op: logits in, loss out.

The loss is written with the log of the softmax (``z - log sum exp z``), and
the probabilities ``y`` are named so that the gradient folds onto them.
``t`` is target probabilities (N, K) or integer class labels (N,), as
``F.cross_entropy`` reads it, with its ``weight`` per class, ``ignore_index``
and ``label_smoothing``. As in PyTorch, ``z[N, K, d...]`` with ``t[N, d...]`` (or ``t[N, K, d...]``) is
``N d...`` samples (an image's pixels, a sequence's tokens).
"""
import sympy as sp

from derive.define import ClassAxis, Hyper, Input, Intermediate, Op, Option, Tensor, forms, indices, sizes
from derive.ops.cross_entropy import (REDUCTION, T_GRAD, WEIGHTED, ignore, label_smoothing, loss, summary, target_input,
                                      weight_input)

N, K = sizes("N K")
n, k, j = indices("n k j")
z = Tensor("z", N, K)
y = Intermediate("y", (n, k), (N, K), sp.exp(z[n, k]) / sp.Sum(sp.exp(z[n, j]), (j, 0, K - 1)))
DOC_ZH = "softmax 与交叉熵合为一层：输入 logits，输出损失。"
#: Soft targets whose rows do not sum to 1 (F.cross_entropy takes them) are a form of their own: the gradient
#: that holds in general, y sum_j t_nj - t_nk; rows that sum to 1 keep the textbook's y - t.
TARGET = Option("target", ("probabilities", "labels", "unnormalized"), read=("t", "integer", "unnormalized"),
                doc="read from t: target probabilities (N, K) whose rows sum to 1, class labels (N,) when t holds "
                    "integers, or soft targets (N, K) whose rows do not sum to 1")
SMOOTHED = Option("smoothed", (False, True), read=("label_smoothing", "nonzero"),
                  doc="read from label_smoothing: the form with it, where it is not 0")


def log_softmax(a, b):
    """``log y[a, b]`` written out: ``z[a, b] - log sum_j e^{z[a, j]}``."""
    return z[a, b] - sp.log(sp.Sum(sp.exp(z[a, j]), (j, 0, K - 1)))


#: The log-probabilities named, for the forms that differentiate by t (dE/dt is -log y/N): computed as
#: z - log sum e^z, finite where y underflows to 0 and log y would be -inf.
LOG_Y = Intermediate("ly", (n, k), (N, K), log_softmax(n, k))


def softmax_cross_entropy(reduction, target, weight, smoothed, t_grad):
    en, zh = summary(reduction, target, weight, smoothed)
    first, *rest = __doc__.split("\n", 1)
    t = target_input("labels" if target == "labels" else "probabilities", t_grad)
    if target == "probabilities":
        t = Input(t.tensor, differentiable=t_grad, domain="simplex")
    options = "".join(f", {name}={name}" for name, used in (("weight", weight), ("ignore_index", target == "labels"),
                                                           ("label_smoothing", smoothed)) if used)
    return Op(
        name="softmax_cross_entropy",
        doc=first + en + "".join("\n" + r for r in rest),
        doc_zh=DOC_ZH + zh,
        inputs=(Input(z), t) + ((weight_input(),) if weight else ()),
        output=loss((lambda a, b: LOG_Y[a, b]) if t_grad else log_softmax, "labels" if target == "labels"
                    else "probabilities", reduction, weight, label_smoothing if smoothed else 0),
        extra=(y,),
        hyper=(ignore("labels" if target == "labels" else "probabilities"),
               Hyper(label_smoothing, 0.0, cases=(0.1, 0.3) if smoothed else (0.0,), valid="0 <= label_smoothing <= 1",
                     doc="the share of each target spread evenly over the K classes")),
        pytorch=f"F.cross_entropy(z, t{options}" + ("" if reduction == "mean" else f", reduction={reduction!r}") + ")",
        bench_sizes={"N": 1024, "K": 1000},
    )


OP = forms(softmax_cross_entropy, REDUCTION, TARGET, WEIGHTED, SMOOTHED, T_GRAD, ClassAxis("z"))
