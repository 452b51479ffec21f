"""Batch normalization in training mode (BN层): each channel normalised by its batch mean and variance.

The statistics run over every axis but the channel axis: N for ``[N, C]``
input, N, H and W for ``[N, C, H, W]`` (flattened here to ``S`` positions);
``m = N S`` values per channel, biased variance, ``eps`` inside the root.
The cache keeps the batch mean and variance for the running estimates
(``derive.train.update_running_stats``). One value per channel (``m = 1``) is refused, as PyTorch
refuses it: the variance is 0 and the output would be ``beta`` whatever the input. ``gamma`` and
``beta`` may each be None (PyTorch's ``weight=None``, ``bias=None``; both None is ``affine=False``):
no scale, no shift.
"""
import sympy as sp

from derive.define import Hyper, Input, Intermediate, Op, Option, Tensor, forms, indices, sizes

N, C, S = sizes("N C S")
n, c, s = indices("n c s")
x, scale, shift = Tensor("x", N, C, S), Tensor("gamma", C), Tensor("beta", C)
eps = sp.Symbol("eps", positive=True)
m = N * S

mu = Intermediate("mu", (c,), (C,), sp.Sum(x[n, c, s], (s, 0, S - 1), (n, 0, N - 1)) / m)
xc = Intermediate("xc", (n, c, s), (N, C, S), x[n, c, s] - mu[c])
var = Intermediate("var", (c,), (C,), sp.Sum(xc[n, c, s] ** 2, (s, 0, S - 1), (n, 0, N - 1)) / m)
rstd = Intermediate("rstd", (c,), (C,), 1 / sp.sqrt(var[c] + eps), positive=True)
xhat = Intermediate("xhat", (n, c, s), (N, C, S), xc[n, c, s] * rstd[c])

def batch_norm(gamma, beta):
    """The layer with its scale and shift (``"given"``) or without either (None): nothing to differentiate."""
    scaled = scale[c] * xhat[n, c, s] if gamma is not None else xhat[n, c, s]
    affine = {(True, True): "，再缩放和偏移", (True, False): "，再缩放", (False, True): "，再偏移", (False, False): ""}[
        (gamma is not None, beta is not None)]
    return Op(
        name="batch_norm",
        doc=__doc__,
        doc_zh="批归一化层（训练模式，BN层）：每个通道用本批次的均值和方差归一化" + affine + "。",
        inputs=(Input(x),) + ((Input(scale),) if gamma is not None else ()) + ((Input(shift),) if beta is not None else ()),
        output=Intermediate("y", (n, c, s), (N, C, S), scaled + shift[c] if beta is not None else scaled),
        hyper=(Hyper(eps, 1e-5, cases=(1e-5, 1e-3), doc="added to the variance inside the square root", valid="eps > 0"),),
        theorems=((sp.Sum(xhat[n, c, s], (s, 0, S - 1), (n, 0, N - 1)), sp.S.Zero),),
        statistics=(mu, var),
        requires=((m > 1, "more than 1 value per channel when training"),),
        shape_kind="channels",
        pytorch="F.batch_norm(x, None, None, gamma, beta, training=True)",
        bench_sizes={"N": 64, "C": 64, "S": 32 * 32},
    )


OP = forms(batch_norm, Option("gamma", input=True, doc="the scale; None: no scale (PyTorch's weight=None)"),
           Option("beta", input=True, doc="the shift; None: no shift (PyTorch's bias=None)"))
