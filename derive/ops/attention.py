"""Scaled dot-product attention: each query's softmax over the keys of q k / sqrt(D), times the values.

With ``causal=True`` query l attends to keys s <= l only (PyTorch's
``is_causal``, the mask aligned at the top left); the bracket
[s <= l + (1 - causal) S] is that mask, and 1 for every key otherwise.
L queries, S keys; ``p`` holds the attention weights.
"""
import sympy as sp

from derive.define import Hyper, Input, Intermediate, Iverson, Op, Tensor, indices, sizes

N, L, S, D, E = sizes("N L S D E")
n, l, s, d, e, r = indices("n l s d e r")
q, k, v = Tensor("q", N, L, D), Tensor("k", N, S, D), Tensor("v", N, S, E)
causal = sp.Symbol("causal", integer=True, nonnegative=True)


def _mask(key):
    return Iverson(key <= l + (1 - causal) * S)


z = Intermediate("z", (n, l, s), (N, L, S), sp.Sum(q[n, l, d] * k[n, s, d], (d, 0, D - 1)) / sp.sqrt(D))
p = Intermediate("p", (n, l, s), (N, L, S),
                 _mask(s) * sp.exp(z[n, l, s]) / sp.Sum(_mask(r) * sp.exp(z[n, l, r]), (r, 0, S - 1)))

OP = Op(
    name="attention",
    doc=__doc__,
    doc_zh="缩放点积注意力：每个查询对各个键的得分除以维数的平方根，取 softmax 作为权重，再对值加权求和；"
           "因果模式下每个位置只看它自己和它之前的位置。",
    inputs=(Input(q), Input(k), Input(v)),
    output=Intermediate("y", (n, l, e), (N, L, E), sp.Sum(p[n, l, s] * v[n, s, e], (s, 0, S - 1))),
    hyper=(Hyper(causal, False, cases=(False, True), doc="mask the keys after each query (s > l)"),),
    theorems=((sp.Sum(p[n, l, r], (r, 0, S - 1)), sp.S.One),),
    pytorch="F.scaled_dot_product_attention(q, k, v, is_causal=causal)",
    test_sizes={N: 2, L: 3, S: 4, D: 2, E: 3},
    small_sizes={N: 1, L: 2, S: 2, D: 2, E: 1},
    bench_sizes={"N": 8, "L": 128, "S": 128, "D": 64, "E": 64},
)
