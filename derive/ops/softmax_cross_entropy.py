"""Softmax followed by cross-entropy, in one op: logits in, loss out.

The loss is written with the log of the softmax (``z - log sum exp z``), and
the probabilities ``y`` are named so that the gradient folds onto them.
"""
import sympy as sp

from derive.define import Input, Intermediate, Op, Tensor, indices, sizes

N, K = sizes("N K")
n, k, j = indices("n k j")
z, t = Tensor("z", N, K), Tensor("t", N, K)
log_partition = sp.log(sp.Sum(sp.exp(z[n, j]), (j, 0, K - 1)))
y = Intermediate("y", (n, k), (N, K), sp.exp(z[n, k]) / sp.Sum(sp.exp(z[n, j]), (j, 0, K - 1)))

OP = Op(
    name="softmax_cross_entropy",
    doc=__doc__,
    doc_zh="softmax 与交叉熵合为一层：输入 logits，输出损失。",
    inputs=(Input(z), Input(t, differentiable=False, domain="simplex")),
    output=Intermediate("E", (), (), -sp.Sum(t[n, k] * (z[n, k] - log_partition), (k, 0, K - 1), (n, 0, N - 1)) / N),
    extra=(y,),
    pytorch="F.cross_entropy(z, t)",
    bench_sizes={"N": 1024, "K": 1000},
)
