"""Embedding: each integer index selects one row of the table W.

``idx`` may have any shape; the output has that shape with one more axis,
the row's D values. Only the table gets a gradient: each row sums the
upstream gradients of the positions that selected it.
"""
from derive.define import Input, Intermediate, Op, Tensor, indices, sizes

N, V, D = sizes("N V D")
n, d = indices("n d")
idx, W = Tensor("idx", N, integer=True), Tensor("W", V, D)

OP = Op(
    name="embedding",
    doc=__doc__,
    doc_zh="嵌入层：每个整数编号取出嵌入表的一行；只有嵌入表有梯度，每行是选中它的各个位置的上游梯度之和。",
    inputs=(Input(idx, differentiable=False, domain="index"), Input(W)),
    output=Intermediate("y", (n, d), (N, D), W[idx[n], d]),
    shape_kind="leading",
    pytorch="F.embedding(idx, W)",
    bench_sizes={"N": 64 * 128, "V": 10000, "D": 128},
)
