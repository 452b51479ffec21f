"""Long short-term memory: the new hidden and cell states, through an input, a forget and an output gate.

One time step of ``nn.LSTMCell``: the weights stack the gates' rows i, f, g, o
(``W_ih[4H, D]``), ``i = σ(W_ii x + b_ii + W_hi h + b_hi)``, ``f`` and ``o`` alike,
``g = tanh(W_ig x + b_ig + W_hg h + b_hg)``, ``c' = f ⊙ c + i ⊙ g``, ``h' = o ⊙ tanh(c')``.
Two outputs, ``(h', c')``, each with its own upstream gradient; each gate's pre-activation
is named (and the candidate cell state ``ct``, c̃, PyTorch's g), so the backward pass names
the error term of each gate.
"""
import sympy as sp

from derive.define import Input, Intermediate, Op, Sigmoid, Tensor, indices, sizes

N, D, H = sizes("N D H")
n, d, j, k = indices("n d j k")
x, h, c = Tensor("x", N, D), Tensor("h", N, H), Tensor("c", N, H)
W_ih, W_hh, b_ih, b_hh = Tensor("W_ih", 4 * H, D), Tensor("W_hh", 4 * H, H), Tensor("b_ih", 4 * H), Tensor("b_hh", 4 * H)


def _pre_activation(name, gate):
    return Intermediate(name, (n, k), (N, H),
                        sp.Sum(W_ih[gate * H + k, d] * x[n, d], (d, 0, D - 1)) + b_ih[gate * H + k]
                        + sp.Sum(W_hh[gate * H + k, j] * h[n, j], (j, 0, H - 1)) + b_hh[gate * H + k])


a_i, a_f, a_g, a_o = (_pre_activation(name, gate) for gate, name in enumerate(("a_i", "a_f", "a_g", "a_o")))
i = Intermediate("i", (n, k), (N, H), Sigmoid(a_i[n, k]))
f = Intermediate("f", (n, k), (N, H), Sigmoid(a_f[n, k]))
g = Intermediate("ct", (n, k), (N, H), sp.tanh(a_g[n, k]))  # the candidate cell state c̃ (PyTorch's g)
o = Intermediate("o", (n, k), (N, H), Sigmoid(a_o[n, k]))
cn = Intermediate("cn", (n, k), (N, H), f[n, k] * c[n, k] + i[n, k] * g[n, k])

OP = Op(
    name="lstm_cell",
    doc=__doc__,
    doc_zh="长短期记忆单元：由输入门、遗忘门和输出门，从本时刻的输入和上一时刻的隐藏状态、细胞状态算出新的隐藏状态和细胞状态。",
    inputs=(Input(x), Input(h), Input(c), Input(W_ih, element="w^{ih}", matrix="W_{ih}"),
            Input(W_hh, element="w^{hh}", matrix="W_{hh}"), Input(b_ih, element="b^{ih}", matrix=r"\vec{b}_{ih}"),
            Input(b_hh, element="b^{hh}", matrix=r"\vec{b}_{hh}")),
    output=Intermediate("hn", (n, k), (N, H), o[n, k] * sp.tanh(cn[n, k])),
    also_outputs=(cn,),
    pytorch="nn.LSTMCell",
    bench_sizes={"N": 64, "D": 256, "H": 256},
)
