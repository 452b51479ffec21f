"""Backpropagation through time: each recurrent cell unrolled over a symbolic T, its recursion checked
against the cell copied T times (the chain rule element by element); a wrong recursion must fail."""
import dataclasses

import pytest
import sympy as sp

from derive.cli import main
from derive.define.registry import get
from derive.engine import Mismatch
from derive.engine.unroll import STEP, STEPS, certified, check_unrolled, unroll
from codegen.latex.unroll import unroll_latex

CELLS = ("rnn_cell", "gru_cell", "lstm_cell")


@pytest.fixture(scope="module", params=CELLS)
def unrolled(request):
    return unroll(get(request.param))


def test_the_recursion_agrees_with_the_cell_copied_four_times_at_other_sizes(unrolled):
    sizes = {s: 2 + k for k, s in enumerate(unrolled.op.sizes)}
    assert check_unrolled(unrolled, 4, sizes, seed=7) == []


def _wrong(u, name):
    """The recursion with one mistake a hand derivation makes."""
    if name == "no gradient from the next step":
        return dataclasses.replace(u, arriving=tuple((e, direct, sp.S.Zero) for e, direct, _ in u.arriving))
    if name == "the next step's gradient from the same step":
        return dataclasses.replace(u, arriving=tuple((e, direct, later.xreplace({STEP: STEP - 1}))
                                                     for e, direct, later in u.arriving))
    if name == "no gradient from the loss":
        return dataclasses.replace(u, arriving=tuple((e, sp.S.Zero, later) for e, _, later in u.arriving))
    if name == "the weights' gradient of the first step only":
        return dataclasses.replace(u, gradients=tuple((e, rhs.xreplace({STEPS: 1}) if kind == "weight" else rhs, i, kind)
                                                      for e, rhs, i, kind in u.gradients))
    raise AssertionError(name)


@pytest.mark.parametrize("mistake", ["no gradient from the next step", "the next step's gradient from the same step",
                                     "no gradient from the loss", "the weights' gradient of the first step only"])
def test_a_wrong_recursion_fails_its_check_and_is_never_printed(unrolled, mistake):
    wrong = _wrong(unrolled, mistake)
    assert check_unrolled(wrong, 2) != []
    with pytest.raises(Mismatch, match="unrolled"):
        certified(wrong)


def test_the_rnn_recursion_reads_as_the_literature_writes_it():
    tex = unroll_latex(unroll(get("rnn_cell")))
    assert r"g^{h}_{t,nj} = \sum_{k} w^{hh}_{kj} \delta^{a}_{t + 1,nk} + G^{h}_{t,nj}" in tex
    assert r"&= g^{h}_{t,nk} \left(1 - h_{t,nk}^{2}\right)" in tex  # δ^a_t = g_t ⊙ (1 - h_t²)
    assert r"\frac{\partial E}{\partial w^{hh}_{kj}} = \sum_{t = 1}^{T} \sum_{n} \delta^{a}_{t,nk} h_{t - 1,nj}" in tex
    assert r"\frac{\partial E}{\partial h_{0,nj}} = \sum_{k} w^{hh}_{kj} \delta^{a}_{1,nk}" in tex


def test_the_lstm_cell_state_carries_its_gradient_back_through_the_forget_gate():
    u = unroll(get("lstm_cell"))
    tex = unroll_latex(u, "zh")
    assert r"g^{c}_{t,nk} = G^{c}_{t,nk} + \delta^{c}_{t + 1,nk} f_{t + 1,nk}" in tex
    assert r"\frac{\partial E}{\partial c_{0,nk}} = \delta^{c}_{1,nk} f_{1,nk}" in tex
    assert "随时间反向传播" in tex
    assert "exact rational inputs" in u.certificate


def test_the_matrix_form_is_the_cells_own_at_each_step():
    rnn = unroll_latex(unroll(get("rnn_cell")), form="matrix")
    assert r"\mathbf{g}^{h}_{t} = \mathbf{G}^{h}_{t} + \boldsymbol{\delta}^{A}_{t + 1} W_{hh}" in rnn
    assert r"\boldsymbol{\delta}^{A}_{t} = \mathbf{g}^{h}_{t} \odot \left(1 - H_{t}^{\circ 2}\right)" in rnn
    assert r"\frac{\partial E}{\partial W_{hh}} = \sum_{t = 1}^{T} {\boldsymbol{\delta}^{A}_{t}}^{T} H_{t - 1}" in rnn
    assert r"\frac{\partial E}{\partial H_{0}} = \boldsymbol{\delta}^{A}_{1} W_{hh}" in rnn
    lstm = unroll_latex(unroll(get("lstm_cell")), form="matrix")
    assert r"\mathbf{g}^{c}_{t} = \mathbf{G}^{c}_{t} + F_{t + 1} \odot \boldsymbol{\delta}^{C}_{t + 1}" in lstm


def test_the_unroll_commands(capsys):
    assert main(["latex", "rnn_cell", "--unroll", "T"]) == 0
    assert r"\sum_{t = 1}^{T}" in capsys.readouterr().out
    assert main(["latex", "rnn_cell", "--unroll", "5", "--lang", "zh"]) == 0
    assert r"\sum_{t = 1}^{5}" in capsys.readouterr().out
    assert main(["latex", "gru_cell", "--unroll", "T", "--form", "matrix"]) == 0
    assert r"\sum_{t = 1}^{T}" in capsys.readouterr().out
    assert main(["check", "rnn_cell", "--unroll", "T"]) == 0
    assert "the same" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["latex", "linear", "--unroll", "T"], "linear is no recurrent cell"),
    (["latex", "rnn_cell", "--unroll", "0"], "expected the number of steps"),
    (["latex", "--unroll", "T", "--chain", "linear,relu"], "one recurrent cell"),
    (["check", "rnn_cell", "gru_cell", "--unroll", "T"], "one recurrent cell"),
])
def test_bad_unroll_input_is_one_line_and_exit_2(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
