"""An embedding followed by a mean over the sequence: y_ne = (1/L) sum_l W[idx[n, l], e].

derive latex --ops examples/embedding_mean.py
derive code --ops examples/embedding_mean.py
"""
import sympy as sp

from derive.define import Input, Intermediate, Op, Tensor, indices, sizes

N, L, V, E = sizes("N L V E")
n, l, e = indices("n l e")
idx, W = Tensor("idx", N, L, integer=True), Tensor("W", V, E)


def in_torch(idx, W):
    """The same layer in PyTorch, for `derive bench --ops` (torch is imported only when it runs)."""
    import torch.nn.functional as F
    return F.embedding(idx, W).mean(1)


OP = Op(
    name="embedding_mean",
    doc="Embedding rows looked up by token id, averaged over the sequence (a bag of words).",
    doc_zh="按词编号查找嵌入向量，再沿序列取平均（词袋模型）。",
    inputs=(Input(idx, differentiable=False, domain="index"), Input(W)),
    output=Intermediate("y", (n, e), (N, E), sp.Sum(W[idx[n, l], e], (l, 0, L - 1)) / L),
    pytorch="F.embedding(idx, W).mean(1)",
    torch_reference=in_torch,
    bench_sizes={"N": 64, "L": 128, "V": 10000, "E": 128},
)

ONE_LINE = [r"y_{ne} = \frac{1}{L} \sum_l W_{idx_{nl}, e}"]
HAND = ("W", r"\frac{1}{L} \sum_n \sum_l [idx_{nl} = v] g_{ne}")
