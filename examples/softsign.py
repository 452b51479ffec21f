"""Softsign, with an absolute value: x / (1 + |x|).

derive latex --ops examples/softsign.py
derive latex --def 'y_i = \\frac{x_i}{1 + |x_i|}' --name softsign
"""
import sympy as sp

from derive.define import Input, Intermediate, Op, Tensor, indices, sizes

(S,) = sizes("S")
(i,) = indices("i")
x = Tensor("x", S)


def in_torch(x):
    """The same layer in PyTorch, for `derive bench --ops` (torch is imported only when it runs)."""
    import torch.nn.functional as F
    return F.softsign(x)


OP = Op(
    name="softsign",
    doc="Softsign: x / (1 + |x|).",
    doc_zh="Softsign 激活函数：x / (1 + |x|)。",
    inputs=(Input(x),),
    output=Intermediate("y", (i,), (S,), x[i] / (1 + sp.Abs(x[i]))),
    shape_kind="flat",
    pytorch="F.softsign(x)",
    torch_reference=in_torch,
    bench_sizes={"S": 256 * 1024},
)

ONE_LINE = [r"y_i = \frac{x_i}{1 + |x_i|}"]
HAND = ("x", r"\frac{g_i}{(1 + |x_i|)^2}")
