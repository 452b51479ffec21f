"""Inverted dropout with an explicit mask: kept inputs scaled by 1/(1-p), so that nothing changes at test time.

The mask (1 keeps an element, 0 drops it) is an input, so that the op is
deterministic and checkable; draw it as ``rng.random(x.shape) >= p``.
"""
import sympy as sp

from derive.define import Hyper, Input, Intermediate, Op, Tensor, indices, sizes

(S,) = sizes("S")
(i,) = indices("i")
x, mask = Tensor("x", S), Tensor("mask", S)
p = sp.Symbol("p", nonnegative=True)

OP = Op(
    name="dropout",
    doc=__doc__,
    doc_zh="丢弃层（反向 dropout）：用给定的掩码保留部分输入，保留的输入乘以 1/(1-p)，测试时无需改动。",
    inputs=(Input(x), Input(mask, differentiable=False, domain="mask")),
    output=Intermediate("y", (i,), (S,), x[i] * mask[i] / (1 - p)),
    hyper=(Hyper(p, 0.5, cases=(0.5, 0.1), doc="the probability of dropping an element", valid="0 <= p < 1"),),
    shape_kind="flat",
    bench_sizes={"S": 256 * 1024},
)
