"""Layer normalization over the last axis, or several trailing axes as one: each row normalised by its own statistics.

Unlike batch norm the statistics belong to one sample (one row of D values),
so it works the same for a batch of one; biased variance, ``eps`` inside the root.
``gamma`` and ``beta`` may each be None (PyTorch's ``weight=None``, ``bias=None``): no scale, no shift.
With ``normalized_ndim=k`` a row is the last k axes together, as ``F.layer_norm(x, x.shape[-k:])``:
D is their product, and ``gamma`` and ``beta`` have their shape.
"""
import sympy as sp

from derive.define import Hyper, Input, Intermediate, Op, Option, RowAxes, Tensor, forms, indices, sizes

N, D = sizes("N D")
n, d = indices("n d")
x, scale, shift = Tensor("x", N, D), Tensor("gamma", D), Tensor("beta", D)
eps = sp.Symbol("eps", positive=True)

mu = Intermediate("mu", (n,), (N,), sp.Sum(x[n, d], (d, 0, D - 1)) / D)
xc = Intermediate("xc", (n, d), (N, D), x[n, d] - mu[n])
var = Intermediate("var", (n,), (N,), sp.Sum(xc[n, d] ** 2, (d, 0, D - 1)) / D)
rstd = Intermediate("rstd", (n,), (N,), 1 / sp.sqrt(var[n] + eps), positive=True)
xhat = Intermediate("xhat", (n, d), (N, D), xc[n, d] * rstd[n])


def layer_norm(gamma, beta):
    """The layer with its scale and shift (``"given"``) or without either (None): nothing to differentiate."""
    scaled = scale[d] * xhat[n, d] if gamma is not None else xhat[n, d]
    affine = {(True, True): "，再缩放和偏移", (True, False): "，再缩放", (False, True): "，再偏移", (False, False): ""}[
        (gamma is not None, beta is not None)]
    return Op(
        name="layer_norm",
        doc=__doc__,
        doc_zh="层归一化：每行（最后一个轴，或末尾几个轴合为一行）用它自己的均值和方差归一化" + affine + "。",
        inputs=(Input(x),) + ((Input(scale),) if gamma is not None else ()) + ((Input(shift),) if beta is not None else ()),
        output=Intermediate("y", (n, d), (N, D), scaled + shift[d] if beta is not None else scaled),
        hyper=(Hyper(eps, 1e-5, cases=(1e-5, 1e-3), doc="added to the variance inside the square root", valid="eps > 0"),),
        theorems=((sp.Sum(xhat[n, d], (d, 0, D - 1)), sp.S.Zero),),
        shape_kind="leading",
        pytorch="F.layer_norm(x, (D,), gamma, beta)",
        bench_sizes={"N": 256, "D": 1024},
    )


OP = forms(layer_norm, Option("gamma", input=True, doc="the scale; None: no scale (PyTorch's weight=None)"),
           Option("beta", input=True, doc="the shift; None: no shift (PyTorch's bias=None)"),
           RowAxes("normalized_ndim", of="x", doc="the trailing axes of x normalised together, as F.layer_norm(x, "
                   "x.shape[-normalized_ndim:]); gamma and beta have their shape"))
