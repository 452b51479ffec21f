"""Mish, written inline as a user would: x tanh(ln(1 + e^x)).

derive latex --ops examples/mish.py
derive code --ops examples/mish.py
derive latex --def 'y_i = x_i \\tanh(\\ln(1 + e^{x_i}))' --name mish
"""
import sympy as sp

from derive.define import Input, Intermediate, Op, Tensor, indices, sizes

(S,) = sizes("S")
(i,) = indices("i")
x = Tensor("x", S)


def in_torch(x):
    """The same layer in PyTorch, for `derive bench --ops` (torch is imported only when it runs)."""
    import torch.nn.functional as F
    return F.mish(x)


OP = Op(
    name="mish",
    doc="Mish: x tanh(softplus(x)), a smooth activation (Misra 2019).",
    doc_zh="Mish 激活函数：x tanh(softplus(x))。",
    inputs=(Input(x),),
    output=Intermediate("y", (i,), (S,), x[i] * sp.tanh(sp.log(1 + sp.exp(x[i])))),
    shape_kind="flat",
    pytorch="F.mish(x)",
    torch_reference=in_torch,
    bench_sizes={"S": 256 * 1024},
)

#: The same op in one line, and a formula derived by hand (--wrt, formula) for derive verify.
ONE_LINE = [r"y_i = x_i \tanh(\ln(1 + e^{x_i}))"]
HAND = ("x", r"g_i \left(\tanh(\ln(1 + e^{x_i})) + x_i \sigma(x_i) (1 - \tanh^2(\ln(1 + e^{x_i})))\right)")
