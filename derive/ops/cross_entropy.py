"""Cross-entropy of predicted probabilities against targets, averaged over the batch.

``t`` is either target probabilities (N, K) or integer class labels (N,), as
PyTorch reads its targets: ``-log y[n, t_n]`` per sample for labels, each
weighted by its class's ``weight`` when given, the samples labelled
``ignore_index`` left out (the mean divides by the weights of the others).
As in PyTorch, ``y[N, K, d...]`` with ``t[N, d...]`` (or ``t[N, K, d...]``) is ``N d...`` samples.
"""
import sympy as sp

from derive.define import (ClassAxis, Hyper, Input, Intermediate, Iverson, NoForm, Op, Option, Tensor, forms,
                           gradient_option, indices, sizes)

N, K = sizes("N K")
n, k = indices("n k")
y = Tensor("y", N, K)
PROBABILITIES, LABELS = Tensor("t", N, K), Tensor("t", N, integer=True)
WEIGHT = Tensor("weight", K)
ignore_index = sp.Symbol("ignore_index", real=True)  # no index: it may be negative, or any class
label_smoothing = sp.Symbol("label_smoothing", nonnegative=True)

REDUCTION = Option("reduction", ("mean", "sum", "none"), doc="the samples' losses averaged, added, or each sample's own")
TARGET = Option("target", ("probabilities", "labels"), read=("t", "integer"),
                doc="read from t: target probabilities (N, K), or class labels (N,) when t holds integers")
T_GRAD = gradient_option("t")
WEIGHTED = Option("weight", input=True, given_by_default=False, doc="a weight per class (K,), no gradient; None: every class weighs 1")


def ignore(target):
    """``ignore_index``: a label whose samples count for nothing; with probability targets PyTorch refuses
    a class (>= 0) there, since no sample has one label to ignore."""
    valid = "ignore_index < 0" if target == "probabilities" else ""
    return Hyper(ignore_index, -100, cases=(-100,) if valid else (-100, 1), valid=valid,
                 doc="samples with this label count for nothing, in the loss and the mean's divisor")


def target_input(target, t_grad=False):
    """``t`` as the form reads it: probabilities per class (with a gradient where asked), or one integer
    label per sample (which may be ``ignore_index``, out of range, and has no gradient)."""
    if target == "labels":
        if t_grad:
            raise NoForm("t_grad: integer class labels have no gradient")
        return Input(LABELS, differentiable=False, domain="index", outside="ignore_index")
    return Input(PROBABILITIES, differentiable=t_grad, domain="probability")


def weight_input():
    return Input(WEIGHT, differentiable=False, domain="positive", element="w")


def loss(log_p, target, reduction, weighted, smoothing=0):
    """The loss from the log-probability of class ``k`` of sample ``n`` (``log_p(n, k)``), as PyTorch's
    cross-entropy reads its target: ``-sum_k w_k t'_nk log p_nk`` for probabilities (``t' = (1 - e) t +
    e/K`` with label smoothing ``e``), ``-[t_n != ignore] ((1 - e) w_{t_n} log p_{n t_n} + e/K sum_k w_k
    log p_nk)`` for labels; averaged (over N, or over the weights of the samples not ignored, for
    labels), added, or one per sample. ``w`` is 1 without a weight, ``e`` 0 without smoothing."""
    w = (lambda c: WEIGHT[c]) if weighted else (lambda c: 1)
    one_hot = sp.KroneckerDelta(k, LABELS[n]) if target == "labels" else PROBABILITIES[n, k]
    if smoothing:  # the smoothed target q (Szegedy et al. 2016): (1 - e) of the target, e spread over K classes
        one_hot = smoothed_target(one_hot, smoothing)[n, k]
    against = sp.Sum(w(k) * one_hot * log_p(n, k), (k, 0, K - 1))  # the loss is minus this
    divisor = N
    if target == "labels":
        kept = Iverson(sp.Ne(LABELS[n], ignore_index))
        against = kept * against
        divisor = sp.Sum(kept * sp.Sum(sp.KroneckerDelta(k, LABELS[n]) * w(k), (k, 0, K - 1)), (n, 0, N - 1))
    if reduction == "none":
        return Intermediate("L", (n,), (N,), -against)
    total = sp.Sum(against, (n, 0, N - 1))
    return Intermediate("E", (), (), -total / divisor if reduction == "mean" else -total)


def smoothed_target(target, smoothing) -> Intermediate:
    """``q_{nk} = (1 - e) t_{nk} + e/K``, the target with label smoothing ``e``: PyTorch's for probabilities,
    and for a label (``t_{nk}`` its one-hot row) the same as its ``(1 - e)`` nll plus ``e/K`` of every class's."""
    return Intermediate("q", (n, k), (N, K), (1 - smoothing) * target + smoothing / K)


def summary(reduction, target, weighted, smoothed=False) -> tuple[str, str]:
    """What a form adds to the op's description, in English and Chinese."""
    en = {"mean": "", "sum": " Summed over the batch (reduction='sum').",
          "none": " One loss per sample (reduction='none')."}[reduction]
    zh = {"mean": "", "sum": "对批次求和（reduction='sum'）。", "none": "每个样本一个损失（reduction='none'）。"}[reduction]
    if target == "labels":
        en, zh = " Targets are integer class labels, ignore_index left out." + en, "目标为整数类别标签，忽略 ignore_index。" + zh
    if target == "unnormalized":
        en, zh = " Soft targets whose rows need not sum to 1." + en, "软目标，各行之和不必为 1。" + zh
    if weighted:
        en, zh = " Each class weighted." + en, "各类别加权。" + zh
    if smoothed:
        en, zh = " Label smoothing." + en, "标签平滑。" + zh
    return en, zh


def cross_entropy(reduction, target, weight, t_grad):
    en, zh = summary(reduction, target, weight)
    first, *rest = __doc__.split("\n", 1)
    reference = "F.nll_loss(log(y), t, weight, ignore_index=ignore_index)" if target == "labels" \
        else "-(weight t log y).sum(1)"
    return Op(
        name="cross_entropy",
        doc=first + en + "".join("\n" + r for r in rest),
        doc_zh="交叉熵：预测概率相对目标的交叉熵，对批次取平均。" + zh,
        inputs=(Input(y, domain="probability"), target_input(target, t_grad)) + ((weight_input(),) if weight else ()),
        output=loss(lambda a, b: sp.log(y[a, b]), target, reduction, weight),
        hyper=(ignore(target),),
        pytorch=reference + ("" if reduction == "mean" else f" with reduction={reduction!r}"),
        bench_sizes={"N": 1024, "K": 1000},
    )


OP = forms(cross_entropy, REDUCTION, TARGET, WEIGHTED, T_GRAD, ClassAxis("y"))
