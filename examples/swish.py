"""Swish with a learnable slope per feature: y = x sigma(beta x), beta learned with the weights.

derive latex --ops examples/swish.py
derive latex --def 'y_{nd} = x_{nd} \\sigma(\\beta_d x_{nd})' --name swish
"""
from derive.define import Input, Intermediate, Op, Sigmoid, Tensor, indices, sizes

N, D = sizes("N D")
n, d = indices("n d")
x, beta = Tensor("x", N, D), Tensor("beta", D)


def in_torch(x, beta):
    """The same layer in PyTorch, for `derive bench --ops` (torch is imported only when it runs)."""
    import torch
    return x * torch.sigmoid(beta * x)


OP = Op(
    name="swish",
    doc="Swish with a learnable beta per feature: x sigma(beta x) (Ramachandran et al. 2017).",
    doc_zh="可学习 beta 的 Swish 激活函数：x σ(βx)，每个特征一个 β。",
    inputs=(Input(x), Input(beta)),
    output=Intermediate("y", (n, d), (N, D), x[n, d] * Sigmoid(beta[d] * x[n, d])),
    pytorch="x * torch.sigmoid(beta * x)",
    torch_reference=in_torch,
    bench_sizes={"N": 256, "D": 1024},
)

ONE_LINE = [r"y_{nd} = x_{nd} \sigma(\beta_d x_{nd})"]
HAND = ("beta", r"\sum_n g_{nd} x_{nd}^2 \sigma(\beta_d x_{nd}) (1 - \sigma(\beta_d x_{nd}))")
