"""One causal attention head: position l attends to positions s <= l only.

derive latex --ops examples/causal_attention.py
derive latex --ops examples/causal_attention.py --form matrix
"""
import sympy as sp

from derive.define import Input, Intermediate, Iverson, Op, Tensor, indices, sizes

N, L, S, D, E = sizes("N L S D E")
n, l, s, d, e, r = indices("n l s d e r")
q, k, v = Tensor("q", N, L, D), Tensor("k", N, S, D), Tensor("v", N, S, E)
z = Intermediate("z", (n, l, s), (N, L, S), sp.Sum(q[n, l, d] * k[n, s, d], (d, 0, D - 1)) / sp.sqrt(D))
p = Intermediate("p", (n, l, s), (N, L, S),
                 Iverson(s <= l) * sp.exp(z[n, l, s]) / sp.Sum(Iverson(r <= l) * sp.exp(z[n, l, r]), (r, 0, S - 1)))


def in_torch(q, k, v):
    """The same layer in PyTorch, for `derive bench --ops` (torch is imported only when it runs)."""
    import torch.nn.functional as F
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


OP = Op(
    name="causal_attention",
    doc="Scaled dot-product attention with a causal mask: softmax over s <= l of q k / sqrt(D), times v.",
    doc_zh="带因果掩码的缩放点积注意力：对 s <= l 求 q k / sqrt(D) 的 softmax，再乘以 v。",
    inputs=(Input(q), Input(k), Input(v)),
    output=Intermediate("y", (n, l, e), (N, L, E), sp.Sum(p[n, l, s] * v[n, s, e], (s, 0, S - 1))),
    pytorch="F.scaled_dot_product_attention(q, k, v, is_causal=True)",
    torch_reference=in_torch,
    test_sizes={N: 2, L: 3, S: 3, D: 2, E: 4},
    small_sizes={N: 1, L: 2, S: 2, D: 2, E: 1},
    bench_sizes={"N": 8, "L": 128, "S": 128, "D": 64, "E": 64},
)

ONE_LINE = [r"z_{nls} = \frac{1}{\sqrt{D}} \sum_d q_{nld} k_{nsd}",
            r"p_{nls} = \frac{[s \le l] e^{z_{nls}}}{\sum_r [r \le l] e^{z_{nlr}}}",
            r"y_{nle} = \sum_s p_{nls} v_{nse}"]
HAND = ("v", r"\sum_l p_{nls} g_{nle}")
