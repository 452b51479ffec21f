"""RMS normalization over the last axis: each row divided by its root mean square, then scaled.

Layer norm without the centring (Zhang and Sennrich): ``eps`` inside the
root, no bias. ``rstd`` is one over the root mean square.
"""
import sympy as sp

from derive.define.op import Hyper, Input, Op
from derive.define.symbols import Intermediate, Tensor, indices, sizes

N, D = sizes("N D")
n, d = indices("n d")
x, gamma = Tensor("x", N, D), Tensor("gamma", D)
eps = sp.Symbol("eps", positive=True)

rstd = Intermediate("rstd", (n,), (N,), 1 / sp.sqrt(sp.Sum(x[n, d] ** 2, (d, 0, D - 1)) / D + eps), positive=True)
xhat = Intermediate("xhat", (n, d), (N, D), x[n, d] * rstd[n])

OP = Op(
    name="rms_norm",
    doc=__doc__,
    doc_zh="RMS 归一化：每行（最后一个轴）除以它的均方根，再缩放（不减均值、没有偏移的层归一化）。",
    inputs=(Input(x), Input(gamma)),
    output=Intermediate("y", (n, d), (N, D), gamma[d] * xhat[n, d]),
    hyper=(Hyper(eps, 1e-6, cases=(1e-6, 1e-3), doc="added to the mean square inside the square root", valid="eps > 0"),),
    shape_kind="leading",
    pytorch="F.rms_norm(x, (D,), gamma, eps)",
    bench_sizes={"N": 256, "D": 1024},
)
