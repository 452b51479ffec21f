"""Cross-entropy of predicted probabilities against targets, averaged over the batch."""
import sympy as sp

from derive.define import Input, Intermediate, Op, Tensor, indices, sizes

N, K = sizes("N K")
n, k = indices("n k")
y, t = Tensor("y", N, K), Tensor("t", N, K)

OP = Op(
    name="cross_entropy",
    doc=__doc__,
    doc_zh="交叉熵：预测概率相对目标概率的交叉熵，对批次取平均。",
    inputs=(Input(y, domain="probability"), Input(t, differentiable=False, domain="probability")),
    output=Intermediate("E", (), (), -sp.Sum(t[n, k] * sp.log(y[n, k]), (k, 0, K - 1), (n, 0, N - 1)) / N),
    pytorch="F.nll_loss(log(y), labels)",
    bench_sizes={"N": 1024, "K": 1000},
)
