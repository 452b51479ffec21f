"""The article's objective: half the squared error, summed over outputs, averaged over the batch."""
import sympy as sp

from derive.define import Input, Intermediate, Op, Option, Tensor, forms, gradient_option, indices, sizes

N, K = sizes("N K")
n, k = indices("n k")
y, t = Tensor("y", N, K), Tensor("t", N, K)
half_squared = sp.Rational(1, 2) * (t[n, k] - y[n, k]) ** 2

#: Ours, not PyTorch's: "sum" adds the article's E of every sample, "none" is each sample's E.
OUTPUTS = {
    "mean": Intermediate("E", (), (), sp.Sum(half_squared, (k, 0, K - 1), (n, 0, N - 1)) / N),
    "sum": Intermediate("E", (), (), sp.Sum(half_squared, (k, 0, K - 1), (n, 0, N - 1))),
    "none": Intermediate("L", (n,), (N,), sp.Sum(half_squared, (k, 0, K - 1))),
}
DOCS = {
    "mean": (__doc__, "平方误差的一半：原文的目标函数，对输出求和，对批次取平均。"),
    "sum": ("The article's objective summed over the batch: half the squared error over outputs and samples.",
            "平方误差的一半：原文的目标函数，对输出和批次求和（reduction='sum'）。"),
    "none": ("The article's objective for each sample: half the squared error summed over its outputs.",
             "平方误差的一半：每个样本的原文目标函数，对输出求和（reduction='none'）。"),
}
PYTORCH = {"mean": "0.5*F.mse_loss(y, t, reduction='sum')/N", "sum": "0.5*F.mse_loss(y, t, reduction='sum')",
           "none": "0.5*F.mse_loss(y, t, reduction='none').sum(-1)"}


def half_sse(reduction, t_grad):
    return Op(
        name="half_sse",
        doc=DOCS[reduction][0],
        doc_zh=DOCS[reduction][1],
        inputs=(Input(y), Input(t, differentiable=t_grad)),
        output=OUTPUTS[reduction],
        pytorch=PYTORCH[reduction],
        bench_sizes={"N": 1024, "K": 1000},
    )


T_GRAD = gradient_option("t")

OP = forms(half_sse, Option("reduction", ("mean", "sum", "none"),
                            doc="the samples' errors averaged, added, or each sample's own (ours: see README)"), T_GRAD)
