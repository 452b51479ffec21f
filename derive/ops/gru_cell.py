"""Gated recurrent unit: the next hidden state through a reset and an update gate.

One time step of ``nn.GRUCell``: the weights stack the gates' rows r, z, n
(``W_ih[3H, D]``), ``r = σ(W_ir x + b_ir + W_hr h + b_hr)``, ``z`` alike,
``n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))``, ``h' = (1 - z) ⊙ n + z ⊙ h``.
Each gate's pre-activation is named (and the candidate state ``ht``, h̃), so the backward
pass names the error term of each gate.
"""
import sympy as sp

from derive.define import Input, Intermediate, Op, Sigmoid, Tensor, indices, sizes

N, D, H = sizes("N D H")
n, d, j, k = indices("n d j k")
x, h = Tensor("x", N, D), Tensor("h", N, H)
W_ih, W_hh, b_ih, b_hh = Tensor("W_ih", 3 * H, D), Tensor("W_hh", 3 * H, H), Tensor("b_ih", 3 * H), Tensor("b_hh", 3 * H)


def _input_part(gate):
    return sp.Sum(W_ih[gate * H + k, d] * x[n, d], (d, 0, D - 1)) + b_ih[gate * H + k]


def _hidden_part(gate):
    return sp.Sum(W_hh[gate * H + k, j] * h[n, j], (j, 0, H - 1)) + b_hh[gate * H + k]


a_r = Intermediate("a_r", (n, k), (N, H), _input_part(0) + _hidden_part(0))
a_z = Intermediate("a_z", (n, k), (N, H), _input_part(1) + _hidden_part(1))
r = Intermediate("r", (n, k), (N, H), Sigmoid(a_r[n, k]))
z = Intermediate("z", (n, k), (N, H), Sigmoid(a_z[n, k]))
m = Intermediate("m", (n, k), (N, H), _hidden_part(2))
a_n = Intermediate("a_n", (n, k), (N, H), _input_part(2) + r[n, k] * m[n, k])
ht = Intermediate("ht", (n, k), (N, H), sp.tanh(a_n[n, k]))

OP = Op(
    name="gru_cell",
    doc=__doc__,
    doc_zh="门控循环单元：由重置门和更新门，从本时刻的输入和上一时刻的隐藏状态算出新的隐藏状态。",
    inputs=(Input(x), Input(h), Input(W_ih, element="w^{ih}", matrix="W_{ih}"),
            Input(W_hh, element="w^{hh}", matrix="W_{hh}"), Input(b_ih, element="b^{ih}", matrix=r"\vec{b}_{ih}"),
            Input(b_hh, element="b^{hh}", matrix=r"\vec{b}_{hh}")),
    output=Intermediate("hn", (n, k), (N, H), (1 - z[n, k]) * ht[n, k] + z[n, k] * h[n, k]),
    pytorch="nn.GRUCell",
    bench_sizes={"N": 64, "D": 256, "H": 256},
)
