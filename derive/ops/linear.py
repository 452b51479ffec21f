"""Fully connected layer (全连接层): output node k sums its weighted inputs, plus a bias.

This is the article's ``net_k``; weights are indexed later node first (``w_{kj}``).
"""
import sympy as sp

from derive.define import Input, Intermediate, Op, Tensor, indices, sizes

N, D, M = sizes("N D M")
n, j, k = indices("n j k")
x, W, b = Tensor("x", N, D), Tensor("W", M, D), Tensor("b", M)

OP = Op(
    name="linear",
    doc=__doc__,
    doc_zh="全连接层：输出节点 k 是其各个输入的加权和，再加上偏移。",
    inputs=(Input(x), Input(W, element="w", matrix="W"), Input(b)),
    output=Intermediate("net", (n, k), (N, M), sp.Sum(W[k, j] * x[n, j], (j, 0, D - 1)) + b[k]),
    pytorch="F.linear",
    upstream=r"\delta",
    bench_sizes={"N": 256, "D": 1024, "M": 1024},
)
