"""Fully connected layer (全连接层): output node k sums its weighted inputs, plus a bias.

This is the article's ``net_k``; weights are indexed later node first (``w_{kj}``). ``x`` may have
any leading axes (``[*, D]``, as ``F.linear`` takes it): ``N`` counts them all.
"""
import sympy as sp

from derive.define import Input, Intermediate, Op, Option, Tensor, forms, indices, sizes

N, D, M = sizes("N D M")
n, j, k = indices("n j k")
x, W, bias = Tensor("x", N, D), Tensor("W", M, D), Tensor("b", M)
weighted = sp.Sum(W[k, j] * x[n, j], (j, 0, D - 1))


def linear(b):
    """The layer with its bias (``b="given"``) or, for ``b=None``, without one: no bias to differentiate."""
    with_bias = b is not None
    return Op(
        name="linear",
        doc=__doc__ if with_bias else __doc__.replace(", plus a bias.", "; no bias (b=None).", 1),
        doc_zh="全连接层：输出节点 k 是其各个输入的加权和，" + ("再加上偏移。" if with_bias else "没有偏移（b=None）。"),
        inputs=(Input(x), Input(W, element="w", matrix="W")) + ((Input(bias),) if with_bias else ()),
        output=Intermediate("net", (n, k), (N, M), weighted + bias[k] if with_bias else weighted),
        shape_kind="leading",
        pytorch="F.linear",
        upstream=r"\delta",
        bench_sizes={"N": 256, "D": 1024, "M": 1024},
    )


OP = forms(linear, Option("b", input=True, doc="the bias; None: the layer without one"))
