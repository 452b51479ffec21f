"""Batch normalization in inference mode: each channel normalised by running statistics.

PyTorch's ``training=False``: the running mean and variance, estimated during
training (see ``derive.train.update_running_stats``), are inputs, not
gradients' concern; only x, gamma and beta get gradients.
"""
import sympy as sp

from derive.define import Hyper, Input, Intermediate, Op, Tensor, indices, sizes

N, C, S = sizes("N C S")
n, c, s = indices("n c s")
x, gamma, beta = Tensor("x", N, C, S), Tensor("gamma", C), Tensor("beta", C)
running_mean, running_var = Tensor("running_mean", C), Tensor("running_var", C)
eps = sp.Symbol("eps", positive=True)

rstd = Intermediate("rstd", (c,), (C,), 1 / sp.sqrt(running_var[c] + eps), positive=True)
xhat = Intermediate("xhat", (n, c, s), (N, C, S), (x[n, c, s] - running_mean[c]) * rstd[c])

OP = Op(
    name="batch_norm_eval",
    doc=__doc__,
    doc_zh="批归一化层（推理模式）：每个通道用滑动统计的均值和方差归一化，再缩放和偏移。",
    inputs=(Input(x), Input(gamma), Input(beta),
            Input(running_mean, differentiable=False, element=r"\bar{\mu}"),
            Input(running_var, differentiable=False, domain="positive", element=r"\bar{\sigma}^{2}")),
    output=Intermediate("y", (n, c, s), (N, C, S), gamma[c] * xhat[n, c, s] + beta[c]),
    hyper=(Hyper(eps, 1e-5, cases=(1e-5, 1e-3), doc="added to the variance inside the square root",
                 valid="eps > 0"),),
    shape_kind="channels",
    pytorch="F.batch_norm(x, running_mean, running_var, gamma, beta, training=False)",
    bench_sizes={"N": 64, "C": 64, "S": 32 * 32},
)
