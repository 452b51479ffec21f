"""Group normalization: the channels split into groups, each sample's group normalised by its own mean and variance.

Wu and He's group norm: ``groups`` groups of ``K = C / groups`` channels each
(``groups`` must divide C); the statistics of sample n and group h run over
the group's K channels and the S positions (``m = K S`` values), biased
variance, ``eps`` inside the root. Channel ``c = h K + q`` is channel q of
group h; ``groups = 1`` is layer norm over (C, H, W), ``groups = C``
instance norm. The output is written by group, y[n, h, q, s], the input's
shape in the generated code.
"""
import sympy as sp

from derive.define import Hyper, Input, Intermediate, Op, Tensor, indices, sizes

N, C, S, K = sizes("N C S K")
n, h, q, s = indices("n h q s")
x, gamma, beta = Tensor("x", N, C, S), Tensor("gamma", C), Tensor("beta", C)
groups = sp.Symbol("groups", integer=True, positive=True)
eps = sp.Symbol("eps", positive=True)
m = K * S

mu = Intermediate("mu", (n, h), (N, groups), sp.Sum(x[n, h * K + q, s], (s, 0, S - 1), (q, 0, K - 1)) / m)
xc = Intermediate("xc", (n, h, q, s), (N, groups, K, S), x[n, h * K + q, s] - mu[n, h])
var = Intermediate("var", (n, h), (N, groups), sp.Sum(xc[n, h, q, s] ** 2, (s, 0, S - 1), (q, 0, K - 1)) / m)
rstd = Intermediate("rstd", (n, h), (N, groups), 1 / sp.sqrt(var[n, h] + eps), positive=True)
xhat = Intermediate("xhat", (n, h, q, s), (N, groups, K, S), xc[n, h, q, s] * rstd[n, h])

OP = Op(
    name="group_norm",
    doc=__doc__,
    doc_zh="组归一化层：通道分成若干组，每个样本的每一组用它自己的均值和方差归一化，再按通道缩放和偏移。",
    inputs=(Input(x), Input(gamma), Input(beta)),
    output=Intermediate("y", (n, h, q, s), (N, groups, K, S),
                        gamma[h * K + q] * xhat[n, h, q, s] + beta[h * K + q]),
    hyper=(Hyper(groups, 1, cases=(1, 2), doc="how many groups the channels are split into; it divides C",
                 valid="groups >= 1"),
           Hyper(eps, 1e-5, cases=(1e-5, 1e-3), doc="added to the variance inside the square root", valid="eps > 0")),
    derived_sizes={K: C / groups},
    theorems=((sp.Sum(xhat[n, h, q, s], (s, 0, S - 1), (q, 0, K - 1)), sp.S.Zero),),
    shape_kind="channels",
    pytorch="F.group_norm(x, groups, gamma, beta, eps)",
    test_sizes={N: 2, C: 4, S: 3},
    small_sizes={N: 1, C: 2, S: 2},
    bench_sizes={"N": 16, "C": 64, "S": 32 * 32, "groups": 8},
)
