"""Recurrent cells: the error terms the literature names, derived, printed and verified.

The RNN cell's backward pass through time, as the write-ups give it, is
``δ = g ⊙ (1 - h'^2)``, ``∂E/∂W_ih = δ^T x``, ``∂E/∂h = δ W_hh``: the engine
names the gradient arriving at the pre-activation ``a`` (``δ^{a}``) and
writes every input's gradient through it. Each form is compared as a tree,
read back by ``derive verify``, and a forgotten tanh derivative gets a hint.
"""
import numpy as np
import pytest
import sympy as sp

from codegen.render import op_latex
from derive.define.registry import get
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
