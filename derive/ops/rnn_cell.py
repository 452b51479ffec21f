"""Elman recurrent cell (tanh): the next hidden state from the input and the previous state.

``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)``, one time step of ``nn.RNNCell``.
The pre-activation ``a`` is named, so the backward pass names its gradient,
the error term ``δ = g ⊙ (1 - h'^2)`` of the literature's BPTT.
"""
import sympy as sp

from derive.define import Input, Intermediate, Op, Tensor, indices, sizes

N, D, H = sizes("N D H")
n, d, j, k = indices("n d j k")
x, h = Tensor("x", N, D), Tensor("h", N, H)
W_ih, W_hh, b_ih, b_hh = Tensor("W_ih", H, D), Tensor("W_hh", H, H), Tensor("b_ih", H), Tensor("b_hh", H)

a = Intermediate("a", (n, k), (N, H), sp.Sum(W_ih[k, d] * x[n, d], (d, 0, D - 1)) + b_ih[k]
                 + sp.Sum(W_hh[k, j] * h[n, j], (j, 0, H - 1)) + b_hh[k])

OP = Op(
    name="rnn_cell",
    doc=__doc__,
    doc_zh="循环神经网络单元（双曲正切）：由本时刻的输入和上一时刻的隐藏状态算出新的隐藏状态。",
    inputs=(Input(x), Input(h), Input(W_ih, element="w^{ih}", matrix="W_{ih}"),
            Input(W_hh, element="w^{hh}", matrix="W_{hh}"), Input(b_ih, element="b^{ih}", matrix=r"\vec{b}_{ih}"),
            Input(b_hh, element="b^{hh}", matrix=r"\vec{b}_{hh}")),
    output=Intermediate("hn", (n, k), (N, H), sp.tanh(a[n, k])),
    pytorch="nn.RNNCell",
    bench_sizes={"N": 64, "D": 256, "H": 256},
)
