"""A residual block: y = x + W2 relu(W1 x + b1) + b2, its ReLU written as cases.

derive latex --ops examples/residual_block.py
derive code --ops examples/residual_block.py
"""
import sympy as sp

from derive.define import Input, Intermediate, Op, Tensor, indices, sizes

N, D, H = sizes("N D H")
n, d, e, h = indices("n d e h")
x, W1, b1, W2, b2 = Tensor("x", N, D), Tensor("W1", H, D), Tensor("b1", H), Tensor("W2", D, H), Tensor("b2", D)
a = Intermediate("a", (n, h), (N, H), sp.Sum(W1[h, e] * x[n, e], (e, 0, D - 1)) + b1[h])
r = Intermediate("r", (n, h), (N, H), sp.Piecewise((a[n, h], a[n, h] > 0), (0, True)))


def in_torch(x, W1, b1, W2, b2):
    """The same layer in PyTorch, for `derive bench --ops` (torch is imported only when it runs)."""
    import torch.nn.functional as F
    return x + F.linear(F.relu(F.linear(x, W1, b1)), W2, b2)


OP = Op(
    name="residual_block",
    doc="A residual block: x plus a two-layer perceptron of x with a ReLU between (He et al. 2016).",
    doc_zh="残差块：x 加上一个以 ReLU 相连的两层感知机的输出。",
    inputs=(Input(x), Input(W1), Input(b1), Input(W2), Input(b2)),
    output=Intermediate("y", (n, d), (N, D), x[n, d] + sp.Sum(W2[d, h] * r[n, h], (h, 0, H - 1)) + b2[d]),
    pytorch="x + F.linear(F.relu(F.linear(x, W1, b1)), W2, b2)",
    torch_reference=in_torch,
    bench_sizes={"N": 64, "D": 128, "H": 256},
)

ONE_LINE = [r"a_{nh} = \sum_e W^{(1)}_{he} x_{ne} + b^{(1)}_h",
            r"r_{nh} = \begin{cases} a_{nh} & a_{nh} > 0 \\ 0 & \text{otherwise} \end{cases}",
            r"y_{nd} = x_{nd} + \sum_h W^{(2)}_{dh} r_{nh} + b^{(2)}_d"]
HAND = ("W2", r"\sum_n g_{nd} r_{nh}")
