"""Binary cross-entropy on logits: the sigmoid and the loss in one op, averaged over all elements.

Written as the literature writes it, with ``σ(z) = 1/(1 + e^{-z})``; the
engine turns ``log σ(z)`` and ``log(1 - σ(z))`` into softplus, which never
overflows, and the gradient comes out as ``σ(z) - t``.
"""
import sympy as sp

from derive.define.op import Input, Op
from derive.define.symbols import Intermediate, Tensor, indices, sizes

(N,) = sizes("N")
(n,) = indices("n")
z, t = Tensor("z", N), Tensor("t", N)
sigma = 1 / (1 + sp.exp(-z[n]))

OP = Op(
    name="bce_with_logits",
    doc=__doc__,
    doc_zh="带 logits 的二元交叉熵：sigmoid 与二元交叉熵合为一层，对所有元素取平均。",
    inputs=(Input(z), Input(t, differentiable=False, domain="probability")),
    output=Intermediate("E", (), (), -sp.Sum(t[n] * sp.log(sigma) + (1 - t[n]) * sp.log(1 - sigma), (n, 0, N - 1)) / N),
    shape_kind="flat",
    pytorch="F.binary_cross_entropy_with_logits",
    bench_sizes={"N": 1024 * 1000},
)
