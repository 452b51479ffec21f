"""Layer normalization over the last axis: each row normalised by its own mean and variance.

Unlike batch norm the statistics belong to one sample (one row of D values),
so it works the same for a batch of one; biased variance, ``eps`` inside the root.
"""
import sympy as sp

from derive.define import Hyper, Input, Intermediate, Op, Tensor, indices, sizes

N, D = sizes("N D")
n, d = indices("n d")
x, gamma, beta = Tensor("x", N, D), Tensor("gamma", D), Tensor("beta", D)
eps = sp.Symbol("eps", positive=True)

mu = Intermediate("mu", (n,), (N,), sp.Sum(x[n, d], (d, 0, D - 1)) / D)
xc = Intermediate("xc", (n, d), (N, D), x[n, d] - mu[n])
var = Intermediate("var", (n,), (N,), sp.Sum(xc[n, d] ** 2, (d, 0, D - 1)) / D)
rstd = Intermediate("rstd", (n,), (N,), 1 / sp.sqrt(var[n] + eps), positive=True)
xhat = Intermediate("xhat", (n, d), (N, D), xc[n, d] * rstd[n])

OP = Op(
    name="layer_norm",
    doc=__doc__,
    doc_zh="层归一化：每行（最后一个轴）用它自己的均值和方差归一化，再缩放和偏移。",
    inputs=(Input(x), Input(gamma), Input(beta)),
    output=Intermediate("y", (n, d), (N, D), gamma[d] * xhat[n, d] + beta[d]),
    hyper=(Hyper(eps, 1e-5, cases=(1e-5, 1e-3), doc="added to the variance inside the square root", valid="eps > 0"),),
    theorems=((sp.Sum(xhat[n, d], (d, 0, D - 1)), sp.S.Zero),),
    shape_kind="leading",
    pytorch="F.layer_norm(x, (D,), gamma, beta)",
    bench_sizes={"N": 256, "D": 1024},
)
