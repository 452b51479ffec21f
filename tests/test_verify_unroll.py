"""``derive verify CELL --unroll T``: a step of backpropagation through time derived by hand, against the
certified unrolled derivation; the classic mistakes of a hand derivation get NOT EQUIVALENT and a hint
naming them."""
import subprocess
import sys
from pathlib import Path

import pytest

from derive.cli import main
from derive.verifier.reading import names_of
from derive.verifier.unrolled import certified_unrolled
from derive.verifier.verification import verify

ROOT = Path(__file__).resolve().parents[1]
CELLS = ("rnn_cell", "gru_cell", "lstm_cell")


@pytest.mark.parametrize("cell", CELLS)
def test_every_quantity_as_the_derivation_prints_it_is_equivalent(cell):
    """What ``derive latex CELL --unroll T`` prints for each quantity, typed back, is right; its sign flipped
    is not."""
    from derive.define.registry import get
    from derive.verifier.unrolled import _derived, _printer
    u = certified_unrolled(get(cell))
    names = names_of(cell, None, unroll=True)
    assert len(names.targets) >= len(u.arriving) + len(u.errors) + len(u.gradients)
    for target in names.targets:
        text = f"{target.name(False)} = {_printer(u).doprint(_derived(u, target).expr)}"
        verdict = verify(text, op=cell, unroll=True)
        assert verdict.equivalent, (text, verdict.report())
        assert "T = 2, 3" in verdict.numeric
    wrong = verify(f"{names.targets[0].name(False)} = -({_printer(u).doprint(_derived(u, names.targets[0]).expr)})",
                   op=cell, unroll=True)
    assert not wrong.equivalent and wrong.exit_code == 1


RNN_MISTAKES = [
    # the recursion on the arriving gradient
    ("g_h", r"\sum_k w^{hh}_{kj} \delta^{a}_{t+1,nk} + G^{h}_{t,nj}", None),
    ("g_h", r"G^{h}_{t,nj}", "the next step's term left out"),
    ("g_h", r"\sum_k w^{hh}_{kj} \delta^{a}_{t+1,nk}", "the loss's own gradient left out"),
    ("g_h", r"\sum_k w^{hh}_{kj} \delta^{a}_{t,nk} + G^{h}_{t,nj}", r"reads \delta^{a}_{t + 1,nk} where your formula reads \delta^{a}_{t,nk}"),
    ("g_h", r"\sum_k w^{hh}_{jk} \delta^{a}_{t+1,nk} + G^{h}_{t,nj}", ""),  # W_hh transposed: H = H, values differ
    # the error term, with the arriving gradient written out or named
    ("da", r"g^{h}_{t,nk} (1 - h_{t,nk}^2)", None),
    ("da", r"\left(G^{h}_{t,nk} + \sum_j w^{hh}_{jk} \delta^{a}_{t+1,nj}\right) (1 - h_{t,nk}^2)", None),
    ("da", r"g^{h}_{t,nk}", r"missing the factor 1 - h_{t,nk}^{2}"),
    # the weights' gradients
    ("W_hh", r"\sum_{t=1}^{T} \sum_n \delta^{a}_{t,nk} h_{t-1,nj}", None),
    ("W_hh", r"\sum_t \sum_n \delta^{a}_{t,nk} h_{t-1,nj}", None),
    ("W_hh", r"\sum_n \delta^{a}_{t,nk} h_{t-1,nj}", "one step only"),
    ("W_hh", r"\sum_n \delta^{a}_{T,nk} h_{T-1,nj}", "one step only"),
    ("W_hh", r"\sum_{t=1}^{T} \sum_n \delta^{a}_{t,nk} h_{t,nj}", r"reads h_{t - 1,nj} where your formula reads h_{t,nj}"),
    ("W_hh", r"\sum_{t=2}^{T} \sum_n \delta^{a}_{t,nk} h_{t-1,nj}", "leaves out t = 1"),
    ("W_ih", r"\sum_{t=1}^{T} \sum_n \delta^{a}_{t,nk} x_{t,nd}", None),
    ("b_hh", r"\sum_{t=1}^{T} \sum_n \delta^{a}_{t,nk}", None),
    ("b_hh", r"-\sum_{t=1}^{T} \sum_n \delta^{a}_{t,nk}", "sign flipped"),
    # the inputs' and the first state's
    ("x", r"\sum_k w^{ih}_{kd} \delta^{a}_{t,nk}", None),
    ("h", r"\sum_k w^{hh}_{kj} \delta^{a}_{1,nk}", None),
    ("h", r"\sum_k w^{hh}_{kj} \delta^{a}_{0,nk}", r"reads \delta^{a}_{1,nk} where your formula reads \delta^{a}_{0,nk}"),
    # a sum to a fixed step is right only at that many steps: checked at one step more
    ("W_hh", r"\sum_{t=1}^{3} \sum_n \delta^{a}_{t,nk} h_{t-1,nj}", ""),
    # one sample: the batch index left out everywhere
    ("g_h", r"G^{h}_{t,j} + \sum_k w^{hh}_{kj} \delta^{a}_{t+1,k}", None),
    ("W_hh", r"\sum_t \delta^{a}_{t,k} h_{t-1,j}", None),
    ("W_hh", r"\delta^{a}_{t,k} h_{t-1,j}", "one step only"),
    # the plain syntax
    ("W_hh", "sum(sum(da[t, n, k]*h[t-1, n, j], n), t)", None),
    ("W_hh", "sum(da[t, n, k]*h[t-1, n, j], n)", "one step only"),
    ("g_h", "G_h[t, n, j] + sum(W_hh[k, j]*da[t+1, n, k], k)", None),
    ("g_h", "G_h[t, n, j] + sum(W_hh[k, j]*da[t, n, k], k)", "the wrong step"),
]


@pytest.mark.parametrize("wrt, formula, hint", RNN_MISTAKES, ids=range(len(RNN_MISTAKES)))
def test_rnn_cell_right_and_its_classic_mistakes(wrt, formula, hint):
    """``hint`` None: right; else wrong, with that hint (any hint or none for "")."""
    verdict = verify(formula, op="rnn_cell", wrt=wrt, unroll=True)
    if hint is None:
        assert verdict.equivalent, verdict.report()
        return
    assert not verdict.equivalent and verdict.decided, verdict.report()
    assert any(hint in h for h in verdict.hints) or not hint, verdict.report()


def test_lstm_cell_state_carries_back_through_the_forget_gate():
    right = r"G^{c}_{t,nk} + \delta^{c}_{t+1,nk} f_{t+1,nk}"  # f_{T+1} beyond the last step: the term is 0
    assert verify(right, op="lstm_cell", wrt="g_c", unroll=True).equivalent
    wrong = verify(r"G^{c}_{t,nk} + \delta^{c}_{t+1,nk} f_{t,nk}", op="lstm_cell", wrt="g_c", unroll=True)
    assert not wrong.equivalent and any(r"reads f_{t + 1,nk} where your formula reads f_{t,nk}" in h
                                        for h in wrong.hints), wrong.report()
    alone = verify(r"\delta^{c}_{t+1,nk} f_{t+1,nk}", op="lstm_cell", wrt="g_c", unroll=True)
    assert any("the loss's own gradient left out" in h for h in alone.hints), alone.report()


def test_gru_cell_the_direct_path_from_the_next_step():
    """A GRU's state reaches the next one directly, through z: the term g^{h}_{t+1} z_{t+1} is the one most often
    left out or taken at the wrong step."""
    gates = (r"\sum_{j} \left(w^{hh}_{j + 2 H,k} \delta^{m}_{t + 1,nj} + w^{hh}_{j + H,k} \delta^{a^{z}}_{t + 1,nj} "
             r"+ w^{hh}_{jk} \delta^{a^{r}}_{t + 1,nj}\right) + G^{h}_{t,nk}")
    assert verify(gates + r" + g^{h}_{t + 1,nk} z_{t + 1,nk}", op="gru_cell", wrt="g_h", unroll=True).equivalent
    left_out = verify(gates, op="gru_cell", wrt="g_h", unroll=True)
    assert any("the next step's term left out" in h for h in left_out.hints), left_out.report()
    wrong_step = verify(gates + r" + g^{h}_{t + 1,nk} z_{t,nk}", op="gru_cell", wrt="g_h", unroll=True)
    assert any("reads z_{t + 1,nk} where your formula reads z_{t,nk}" in h for h in wrong_step.hints)


def run(*args):
    return subprocess.run([sys.executable, "-m", "derive", "verify", *args], cwd=ROOT, capture_output=True, text=True)


def test_cli_verdicts_symbols_and_bad_input():
    right = run("rnn_cell", "--unroll", "T", r"g^{h}_{t,nj} = G^{h}_{t,nj} + \sum_k w^{hh}_{kj} \delta^{a}_{t+1,nk}")
    assert right.returncode == 0 and right.stdout.startswith("EQUIVALENT"), right.stderr
    wrong = run("rnn_cell", "--unroll", "T", "--wrt", "W_hh", r"\sum_n \delta^{a}_{t,nk} h_{t-1,nj}")
    assert wrong.returncode == 1 and "one step only" in wrong.stdout
    listing = run("rnn_cell", "--unroll", "T", "--symbols")
    assert listing.returncode == 0
    for word in (r"h_{t,nj}", "t = 0..T", r"g^{h}_{t,nj}", "G_h[t, n, j]", "da[t, n, k]", "Quantities (--wrt): g_h",
                 r"\sum_{t=1}^{T}"):
        assert word in listing.stdout, word
    for args in (["linear", "--unroll", "T", "--wrt", "W", "x_j"],
                 ["rnn_cell", "--unroll", "T", "--wrt", "V", "x_{t,nd}"],
                 ["rnn_cell", "--unroll", "T", "--wrt", "W_hh", "q_{t,kj}"],
                 ["rnn_cell", "--unroll", "0", "--wrt", "W_hh", "x_{t,nd}"],
                 ["--chain", "linear,tanh", "--unroll", "T", "--wrt", "W", "x"],
                 ["rnn_cell", "--unroll", "T", "--wrt", "g_h", r"G^{h}_{t} + \boldsymbol{\delta}^{a}_{t+1} W_{hh}"],
                 ["rnn_cell", "--unroll", "T", "--wrt", "W_hh", r"\sum_{t=1}^{T} \delta^{a}_{t,nk"]):
        bad = run(*args)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr, (args, bad.stderr)


def test_a_number_of_steps_is_checked_at_that_number():
    right = verify(r"\sum_{t=1}^{4} \sum_n \delta^{a}_{t,nk} h_{t-1,nj}", op="rnn_cell", wrt="W_hh", unroll=4)
    assert right.equivalent and "T = 4," in right.numeric
    assert not verify(r"\sum_{t=1}^{3} \sum_n \delta^{a}_{t,nk} h_{t-1,nj}", op="rnn_cell", wrt="W_hh",
                      unroll=4).equivalent
    with pytest.raises(ValueError, match="unroll"):
        verify("x_{t,nd}", op="rnn_cell", wrt="x", unroll=40)
    with pytest.raises(ValueError, match="names step 30"):
        verify(r"\sum_{t=1}^{30} \sum_n \delta^{a}_{t,nk} h_{t-1,nj}", op="rnn_cell", wrt="W_hh", unroll=True)


def test_main_in_process(capsys):
    assert main(["verify", "rnn_cell", "--unroll", "T", "--wrt", "x", "--syntax", "plain",
                 "sum(W_ih[k, d]*da[t, n, k], k)"]) == 0
    assert capsys.readouterr().out.startswith("EQUIVALENT")
