"""Recurrent cells: the error terms the literature names, derived, printed and verified.

The RNN cell's backward pass through time, as the write-ups give it, is
``δ = g ⊙ (1 - h'^2)``, ``∂E/∂W_ih = δ^T x``, ``∂E/∂h = δ W_hh``: the engine
names the gradient arriving at the pre-activation ``a`` (``δ^{a}``) and
writes every input's gradient through it. Each form is compared as a tree,
read back by ``derive verify``, and a forgotten tanh derivative gets a hint.
"""
import re

import numpy as np
import pytest
import sympy as sp

from codegen.render import op_latex
from derive.define import Iverson
from derive.define.registry import get
from derive.engine.backprop import upstream_of
from derive.engine.derivation import derive
from derive.verifier.verification import verify


def _rnn():
    d = derive(get("rnn_cell"))
    (adjoint,) = d.adjoints
    tensors = {i.name: i.tensor for i in d.op.inputs}
    return d, adjoint, tensors


def test_rnn_error_term_is_g_times_one_minus_the_new_state_squared():
    d, adjoint, _ = _rnn()
    n, k = adjoint.index
    assert adjoint.node.name == "a"
    assert adjoint.expr == d.upstream[n, k] * (1 - d.op.output[n, k] ** 2)


def test_rnn_gradients_through_the_error_term_are_the_literatures_products():
    """∂E/∂W_ih = δ^T x, ∂E/∂W_hh = δ^T h, ∂E/∂x = δ W_ih, ∂E/∂h = δ W_hh, both biases Σ_n δ."""
    d, adjoint, t = _rnn()
    delta = adjoint.tensor
    through = {g.input.name: g for g in d.backprop}
    N, D, H = (sp.Symbol(s, integer=True, positive=True) for s in "NDH")

    def summed(body, var, size):
        return sp.Sum(body, (var, 0, size - 1))

    k, d_ = through["W_ih"].index
    n = next(v for s in sp.preorder_traversal(through["W_ih"].expr) if isinstance(s, sp.Sum) for v, *_ in s.limits)
    assert through["W_ih"].expr == summed(delta[n, k] * t["x"][n, d_], n, N)
    k, j = through["W_hh"].index
    assert through["W_hh"].expr == summed(delta[n, k] * t["h"][n, j], n, N)
    n, j = through["h"].index
    k = next(v for s in sp.preorder_traversal(through["h"].expr) if isinstance(s, sp.Sum) for v, *_ in s.limits)
    assert through["h"].expr == summed(t["W_hh"][k, j] * delta[n, k], k, H)
    n, d_ = through["x"].index
    assert through["x"].expr == summed(t["W_ih"][k, d_] * delta[n, k], k, H)
    for bias in ("b_ih", "b_hh"):
        (k,) = through[bias].index
        assert through[bias].expr == summed(delta[n, k], n, N)


def test_rnn_latex_names_the_error_term_in_index_and_matrix_form():
    d = derive(get("rnn_cell"))
    index = op_latex(d, "en", forms=("index",))
    assert r"\delta^{a}_{nk} &= \frac{\partial E}{\partial a_{nk}}" in index
    assert r"g_{nk} \left(1 - {h'_{nk}}^{2}\right)" in index
    assert r"\frac{\partial E}{\partial w^{ih}_{kd}} = \sum_{n} \delta^{a}_{nk} x_{nd}" in index
    last_rows = [block.split(r"\end{aligned}")[0].strip().splitlines()[-1] for block in index.split(r"\begin{aligned}")[1:]]
    assert not any(r"\tanh" in row for row in last_rows)  # each result reads h' by name
    matrix = op_latex(d, "en", forms=("matrix",))
    assert r"\boldsymbol{\delta}^{A} = G \odot \left(1 - H'^{\circ 2}\right)" in matrix
    assert r"\frac{\partial E}{\partial W_{ih}} = {\boldsymbol{\delta}^{A}}^{T} X" in matrix
    assert r"\frac{\partial E}{\partial W_{hh}} = {\boldsymbol{\delta}^{A}}^{T} H" in matrix
    zh = op_latex(d, "zh", forms=("index", "matrix"))
    assert r"\delta^{a}_{nk}" in zh and "后向传播" in zh


LITERATURE = [
    (None, r"\delta_{nk} = g_{nk} (1 - {h'_{nk}}^2)"),
    (None, r"\delta^{a}_{nk} = g_{nk} \odot (1 - h'^2_{nk})"),
    ("da", "g * (1 - hn**2)"),
    (None, r"\frac{\partial E}{\partial W_{ih}} = \delta^T X"),
    (None, r"\frac{\partial E}{\partial w^{ih}_{kd}} = \sum_n \delta^{a}_{nk} x_{nd}"),
    (None, r"\frac{\partial E}{\partial W_{hh}} = \delta^T h"),
    (None, r"\frac{\partial E}{\partial h_{nj}} = \sum_k \delta_{nk} w^{hh}_{kj}"),
    ("h", r"\delta W_{hh}"),
    ("x", "delta @ W_ih"),
    ("b_hh", r"\sum_n \delta_{nk}"),
    ("W_ih", r"\sum_n g_{nk} (1 - {h'_{nk}}^2) x_{nd}"),
]


@pytest.mark.parametrize("wrt, formula", LITERATURE)
def test_rnn_literature_formulas_verify_equivalent(wrt, formula):
    verdict = verify(formula, op="rnn_cell", wrt=wrt)
    assert verdict.exit_code == 0, verdict.report()


@pytest.mark.parametrize("wrt, formula", [
    ("W_ih", r"\sum_n g_{nk} x_{nd}"),
    ("h", r"\sum_k g_{nk} w^{hh}_{kj}"),
    (None, r"\frac{\partial E}{\partial W_{hh}} = G^T h"),
])
def test_rnn_forgotten_tanh_derivative_gets_a_hint(wrt, formula):
    verdict = verify(formula, op="rnn_cell", wrt=wrt)
    assert verdict.exit_code == 1
    assert "missing the factor 1 - {h'_{nk}}^{2}" in verdict.report(), verdict.report()


def test_rnn_error_term_without_the_derivative_gets_a_hint():
    verdict = verify(r"\delta_{nk} = g_{nk}", op="rnn_cell")
    assert verdict.exit_code == 1 and "1 - {h'_{nk}}^{2}" in verdict.report(), verdict.report()


def test_rnn_gradients_are_separate_arrays():
    """The two biases have the same gradient; each is its own array all the same."""
    from generated import rnn_cell
    rng = np.random.default_rng(0)
    x, h = rng.standard_normal((3, 4)), rng.standard_normal((3, 5))
    out, cache = rnn_cell.forward(x, h, rng.standard_normal((5, 4)), rng.standard_normal((5, 5)),
                                  np.zeros(5), np.zeros(5))
    grads = rnn_cell.backward(np.ones_like(out), cache)
    np.testing.assert_array_equal(grads["b_ih"], grads["b_hh"])
    assert not np.shares_memory(grads["b_ih"], grads["b_hh"])


def _gru():
    d = derive(get("gru_cell"))
    return d, {a.node.name: a for a in d.adjoints}, {i.name: i.tensor for i in d.op.inputs}


def test_gru_names_the_error_term_of_each_gate():
    """δ^{h̃} = g(1 - z), δ^{a_n} = δ^{h̃}(1 - h̃^2), δ^{z} = g(h - h̃), δ^{a_z} = δ^{z} z(1 - z),
    δ^{r} = δ^{a_n} m, δ^{a_r} = δ^{r} r(1 - r), δ^{m} = δ^{a_n} r (m = W_hn h + b_hn)."""
    d, adjoint, t = _gru()
    n, k = adjoint["a_r"].index
    node = {name: a.node[n, k] for name, a in adjoint.items()}
    delta = {name: a.tensor[n, k] for name, a in adjoint.items()}
    g, h = d.upstream[n, k], t["h"][n, k]
    assert adjoint["ht"].expr == g * (1 - node["z"])
    assert adjoint["a_n"].expr == delta["ht"] * (1 - node["ht"] ** 2)
    assert adjoint["z"].expr == g * (h - node["ht"])
    assert adjoint["a_z"].expr == delta["z"] * node["z"] * (1 - node["z"])
    assert adjoint["r"].expr == delta["a_n"] * node["m"]
    assert adjoint["a_r"].expr == delta["r"] * node["r"] * (1 - node["r"])
    assert adjoint["m"].expr == delta["a_n"] * node["r"]


def test_gru_stacked_weight_gradients_are_one_block_per_gate():
    """∂E/∂W_ih has the rows of δ^{a_r}^T x, δ^{a_z}^T x, δ^{a_n}^T x, in the gates' order; W_hh's third
    block is δ^{m}^T h (the reset gate scales W_hn h after the product)."""
    d, adjoint, t = _gru()
    through = {g.input.name: g for g in d.backprop}
    for weight, data, gates in (("W_ih", "x", ("a_r", "a_z", "a_n")), ("W_hh", "h", ("a_r", "a_z", "m"))):
        row, col = through[weight].index
        H = t[weight].shape[0] / 3
        terms = sp.Add.make_args(through[weight].expr)
        assert len(terms) == 3
        for g, gate in enumerate(gates):
            (term,) = [term for term in terms if any(isinstance(f, Iverson) and f == Iverson(
                sp.And(row - g * H >= 0, row - g * H <= H - 1)) for f in sp.Mul.make_args(term))]
            (summed,) = [f for f in sp.Mul.make_args(term) if isinstance(f, sp.Sum)]
            ((n, _, _),) = summed.limits
            assert summed.function == adjoint[gate].tensor[n, row - g * H] * t[data][n, col], (weight, gate)


def test_gru_code_computes_each_gate_block_from_one_matrix_product():
    """The forward is x W_ih^T and h W_hh^T once each, the gates their column blocks; the backward
    stacks the error terms and takes each weight's gradient and the input's as one product."""
    from pathlib import Path
    source = (Path(__file__).resolve().parent.parent / "generated" / "gru_cell.py").read_text()
    forward, backward = source.split("def backward")[0], source.split("def backward")[1].split("\ndef _")[0]
    assert forward.count("@") == 2 and "x @ W_ih.T" in forward and "h @ W_hh.T" in forward
    assert backward.count("np.concatenate") == 2 and backward.count("@") == 4
    assert "stacked.T @ x" in backward and "@ W_ih" in backward


def test_gru_matches_its_definition_at_the_extremes():
    """Saturated gates (pre-activations of ±80 in float32, ±1000 in float64) stay finite."""
    from generated import gru_cell
    rng = np.random.default_rng(1)
    for dtype, big in ((np.float32, 80.0), (np.float64, 1000.0)):
        x = (big * np.sign(rng.standard_normal((3, 2)))).astype(dtype)
        h = rng.uniform(-1, 1, (3, 4)).astype(dtype)
        W_ih, W_hh = rng.standard_normal((12, 2)).astype(dtype), rng.standard_normal((12, 4)).astype(dtype)
        out, cache = gru_cell.forward(x, h, W_ih, W_hh, np.zeros(12, dtype), np.zeros(12, dtype))
        grads = gru_cell.backward(np.ones_like(out), cache)
        assert np.all(np.isfinite(out)) and all(np.all(np.isfinite(v)) for v in grads.values())
        assert np.all(np.abs(out) <= 1 + 1e-6)


@pytest.mark.parametrize("shape, message", [
    ({"W_ih": (11, 2)}, "W_ih: expected shape (3*H, D) = (12, 2), got (11, 2)"),
    ({"b_hh": (4,)}, "b_hh: expected shape (3*H) = (12,), got (4,)"),
])
def test_gru_stacked_shapes_are_checked(shape, message):
    from generated import gru_cell
    args = {"x": (3, 2), "h": (3, 4), "W_ih": (12, 2), "W_hh": (12, 4), "b_ih": (12,), "b_hh": (12,)}
    args.update(shape)
    with pytest.raises(ValueError, match=re.escape(message)):
        gru_cell.forward(**{k: np.zeros(v) for k, v in args.items()})


def _lstm():
    d = derive(get("lstm_cell"))
    return d, {a.node.name: a for a in d.adjoints}, {i.name: i.tensor for i in d.op.inputs}


def test_lstm_names_the_error_term_of_each_gate():
    """The literature's: δ^{o} = g_h tanh(c'), δ^{a_o} = δ^{o} o(1 - o), δ^{c'} = g_h o(1 - tanh^2 c') + g_c,
    δ^{i} = δ^{c'} c̃, δ^{f} = δ^{c'} c, δ^{c̃} = δ^{c'} i, δ^{a_g} = δ^{c̃}(1 - c̃^2), ∂E/∂c = δ^{c'} f."""
    d, adjoint, t = _lstm()
    n, k = adjoint["a_o"].index
    node = {name: a.node[n, k] for name, a in adjoint.items()}
    delta = {name: a.tensor[n, k] for name, a in adjoint.items()}
    g_h, g_c = d.upstream[n, k], upstream_of(d.op, d.op.also_outputs[0])[n, k]
    tanh_c = sp.tanh(node["cn"])
    assert sp.expand(adjoint["o"].expr - g_h * tanh_c) == 0
    assert sp.expand(adjoint["a_o"].expr - delta["o"] * node["o"] * (1 - node["o"])) == 0
    assert sp.expand(adjoint["cn"].expr - (g_h * node["o"] * (1 - tanh_c ** 2) + g_c)) == 0
    assert sp.expand(adjoint["i"].expr - delta["cn"] * node["ct"]) == 0
    assert sp.expand(adjoint["f"].expr - delta["cn"] * t["c"][n, k]) == 0
    assert sp.expand(adjoint["ct"].expr - delta["cn"] * node["i"]) == 0
    assert sp.expand(adjoint["a_g"].expr - delta["ct"] * (1 - node["ct"] ** 2)) == 0
    for gate in ("a_i", "a_f"):
        sigma = node[gate[-1]]
        assert sp.expand(adjoint[gate].expr - delta[gate[-1]] * sigma * (1 - sigma)) == 0
    (dc,) = [g for g in d.backprop if g.input.name == "c"]
    i, j = dc.index
    assert sp.expand(dc.expr - adjoint["cn"].tensor[i, j] * adjoint["f"].node[i, j]) == 0


def test_lstm_weight_gradients_are_one_block_per_gate_in_pytorchs_order():
    """∂E/∂W_ih's rows are δ^{a_i}^T x, δ^{a_f}^T x, δ^{a_g}^T x, δ^{a_o}^T x (nn.LSTMCell's i, f, g, o)."""
    d, adjoint, t = _lstm()
    through = {g.input.name: g for g in d.backprop}
    for weight, data in (("W_ih", "x"), ("W_hh", "h")):
        row, col = through[weight].index
        H = t[weight].shape[0] / 4
        terms = sp.Add.make_args(through[weight].expr)
        assert len(terms) == 4
        for g, gate in enumerate(("a_i", "a_f", "a_g", "a_o")):
            (term,) = [term for term in terms if any(isinstance(f, Iverson) and f == Iverson(
                sp.And(row - g * H >= 0, row - g * H <= H - 1)) for f in sp.Mul.make_args(term))]
            (summed,) = [f for f in sp.Mul.make_args(term) if isinstance(f, sp.Sum)]
            ((n, _, _),) = summed.limits
            assert summed.function == adjoint[gate].tensor[n, row - g * H] * t[data][n, col], (weight, gate)


def test_lstm_takes_and_gives_both_states():
    """forward returns ((h', c'), cache); backward takes (dh, dc) and checks each against its output."""
    from generated import lstm_cell
    rng = np.random.default_rng(2)
    N, D, H = 3, 2, 4
    args = [rng.standard_normal(s) for s in ((N, D), (N, H), (N, H), (4 * H, D), (4 * H, H), (4 * H,), (4 * H,))]
    (h, c), cache = lstm_cell.forward(*args)
    assert h.shape == c.shape == (N, H)
    only_h = lstm_cell.backward((np.ones((N, H)), np.zeros((N, H))), cache)
    both = lstm_cell.backward((np.ones((N, H)), np.ones((N, H))), cache)
    assert not np.allclose(only_h["c"], both["c"])  # the cell state's own upstream gradient reaches c
    with pytest.raises(ValueError, match=re.escape("dout: expected a tuple of 2 arrays, one per output")):
        lstm_cell.backward(np.ones((N, H)), cache)
    with pytest.raises(ValueError, match=re.escape("dout: expected output 1's shape (3, 4), got (3, 5)")):
        lstm_cell.backward((np.ones((N, H)), np.ones((N, 5))), cache)


def test_lstm_latex_names_both_upstream_gradients():
    tex = op_latex(derive(get("lstm_cell")), "en")
    assert r"g_{nk} = \frac{\partial E}{\partial h'_{nk}}, g^{c'}_{nk} = \frac{\partial E}{\partial c'_{nk}}" in tex
    assert r"\delta^{c'}_{nk}" in tex and r"g^{c'}_{nk}" in tex


def test_the_recurrent_network_learns_to_echo_a_delayed_bit():
    """derive demo --network lstm: backpropagation through time with the generated cell, the loss falling."""
    from derive.demo import run
    losses, accuracy = run(network="lstm", epochs=400, samples=64, quiet=True)
    assert losses[-1] < 0.2 * losses[0] and accuracy > 0.9


def test_backpropagation_through_time_matches_finite_differences():
    """The unrolled network's gradient (each step's generated backward passing (dh, dc) back) against
    central differences of its loss: the recursion across steps is right, not only each cell."""
    from derive.demo import delayed_bits
    from derive.train import Recurrent
    rng = np.random.default_rng(3)
    xs, targets = delayed_bits(4, rng)
    net = Recurrent.create(2, 3, 2, rng)
    _, grads = net.loss_and_grads(xs, targets)
    for part, name in (("cell", "W_hh"), ("cell", "b_ih"), ("head", "W")):
        array = net.params[part][name]
        for idx in list(np.ndindex(array.shape))[::5]:
            saved = array[idx]
            array[idx] = saved + 1e-6
            plus, _ = net.loss_and_grads(xs, targets)
            array[idx] = saved - 1e-6
            minus, _ = net.loss_and_grads(xs, targets)
            array[idx] = saved
            assert grads[part][name][idx] == pytest.approx((plus - minus) / 2e-6, rel=1e-5, abs=1e-9), (name, idx)
