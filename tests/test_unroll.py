"""Backpropagation through time: each recurrent cell unrolled over a symbolic T, its recursion checked
against the cell copied T times (the chain rule element by element); a wrong recursion must fail."""
import dataclasses

import numpy as np

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


def test_the_unrolled_document_has_the_picture_and_every_part(tmp_path):
    out = tmp_path / "lstm.md"
    assert main(["doc", "lstm_cell", "--unroll", "T", "-o", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "lstm-unrolled.svg" in text and (tmp_path / "lstm-unrolled.svg").read_text().startswith("<svg")
    for part in ("The cell over time", "Forward pass", "Backward pass", "Matrix form",
                 r"g^{c}_{t,nk} = G^{c}_{t,nk} + \delta^{c}_{t + 1,nk} f_{t + 1,nk}"):
        assert part in text, part
    zh = tmp_path / "rnn.tex"
    assert main(["doc", "rnn_cell", "--unroll", "T", "--lang", "zh", "-o", str(zh)]) == 0
    assert "随时间反向传播" in zh.read_text(encoding="utf-8") and r"\begin{tikzpicture}" in zh.read_text(encoding="utf-8")


@pytest.mark.parametrize("args, message", [
    (["latex", "linear", "--unroll", "T"], "linear is no recurrent cell"),
    (["latex", "rnn_cell", "--unroll", "0"], "expected the number of steps"),
    (["latex", "--unroll", "T", "--chain", "linear,relu"], "one recurrent cell"),
    (["check", "rnn_cell", "gru_cell", "--unroll", "T"], "one recurrent cell"),
    (["doc", "rnn_cell", "gru_cell", "--unroll", "T"], "one recurrent cell"),
])
def test_bad_unroll_input_is_one_line_and_exit_2(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


# -- the generated modules over a sequence -------------------------------------------------------

from codegen.build import recurrent_cells  # noqa: E402
from codegen.module.unrolled import unrolled_name  # noqa: E402

SEQUENCES = [unrolled_name(op.name) for op in recurrent_cells()]
TORCH_MODULES = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM"}


def _module(name):
    import importlib
    return importlib.import_module(f"generated.{name}")


def _inputs(name, rng, dtype, N=3, T=4, D=5, H=3):
    cell = get(f"{name}_cell")
    states = [i.name for i in cell.inputs if i.name in ("h", "c")]
    arrays = {"x": rng.standard_normal((N, T, D))}
    arrays.update({s: rng.standard_normal((N, H)) for s in states})
    gates = {"rnn": 1, "gru": 3, "lstm": 4}[name]
    arrays.update({"W_ih": rng.standard_normal((gates * H, D)) / 2, "W_hh": rng.standard_normal((gates * H, H)) / 2,
                   "b_ih": rng.standard_normal(gates * H) / 2, "b_hh": rng.standard_normal(gates * H) / 2})
    return {i.name: arrays[i.name].astype(dtype) for i in cell.inputs}, states


def _dout(out, states, rng):
    output, finals = out
    finals = finals if isinstance(finals, tuple) else (finals,)
    upstream = [rng.standard_normal(f.shape).astype(f.dtype) for f in finals]
    return (rng.standard_normal(output.shape).astype(output.dtype),
            tuple(upstream) if len(finals) > 1 else upstream[0])


def _loss(out, dout):
    (output, finals), (doutput, dfinals) = out, dout
    finals, dfinals = (finals, dfinals) if isinstance(finals, tuple) else ((finals,), (dfinals,))
    return float((output * doutput).sum() + sum((f * d).sum() for f, d in zip(finals, dfinals)))


def test_every_recurrent_cell_has_its_sequence_module():
    assert SEQUENCES == ["gru", "lstm", "rnn"]


@pytest.mark.parametrize("name", SEQUENCES)
def test_the_sequence_module_agrees_with_central_differences(name, rng):
    module = _module(name)
    inputs, states = _inputs(name, rng, np.float64)
    out, cache = module.forward(*inputs.values())
    dout = _dout(out, states, rng)
    grads = module.backward(dout, cache)
    assert set(grads) == set(inputs)
    for key, array in inputs.items():
        assert grads[key].shape == array.shape and grads[key].dtype == array.dtype
        for idx in [tuple(rng.integers(0, n) for n in array.shape) for _ in range(3)]:
            step = 1e-6
            plus, minus = {k: v.copy() for k, v in inputs.items()}, {k: v.copy() for k, v in inputs.items()}
            plus[key][idx] += step
            minus[key][idx] -= step
            numeric = (_loss(module.forward(*plus.values())[0], dout)
                       - _loss(module.forward(*minus.values())[0], dout)) / (2 * step)
            assert grads[key][idx] == pytest.approx(numeric, rel=1e-6, abs=1e-8), (key, idx)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("name", SEQUENCES)
@pytest.mark.parametrize("shape", [(3, 4, 5, 3), (1, 1, 2, 4), (2, 7, 3, 2)], ids=["N3T4", "one step", "T7"])
def test_the_sequence_module_matches_pytorch(name, shape, dtype, tol, rng):
    torch = pytest.importorskip("torch")
    N, T, D, H = shape
    inputs, states = _inputs(name, rng, dtype, N, T, D, H)
    before = {k: v.copy() for k, v in inputs.items()}
    module = _module(name)
    out, cache = module.forward(*inputs.values())
    dout = _dout(out, states, rng)
    grads = module.backward(dout, cache)
    for key in inputs:
        np.testing.assert_array_equal(inputs[key], before[key])  # inputs unchanged
    layer = getattr(torch.nn, TORCH_MODULES[name])(D, H, batch_first=True).to(torch.float64 if dtype == np.float64
                                                                               else torch.float32)
    with torch.no_grad():
        for ours, theirs in (("W_ih", "weight_ih_l0"), ("W_hh", "weight_hh_l0"), ("b_ih", "bias_ih_l0"),
                             ("b_hh", "bias_hh_l0")):
            getattr(layer, theirs).copy_(torch.from_numpy(inputs[ours]))
    tensors = {k: torch.tensor(v[None] if k in states else v, requires_grad=True) for k, v in inputs.items()
               if k in ("x", *states)}
    first = tuple(tensors[s] for s in states)
    output, finals = layer(tensors["x"], first if len(first) > 1 else first[0])
    finals = finals if isinstance(finals, tuple) else (finals,)
    doutput, dfinals = dout
    dfinals = dfinals if isinstance(dfinals, tuple) else (dfinals,)
    ours_out, ours_finals = out
    ours_finals = ours_finals if isinstance(ours_finals, tuple) else (ours_finals,)
    np.testing.assert_allclose(ours_out, output.detach().numpy(), rtol=tol, atol=tol)
    for mine, theirs in zip(ours_finals, finals):
        np.testing.assert_allclose(mine, theirs[0].detach().numpy(), rtol=tol, atol=tol)
    loss = (output * torch.from_numpy(doutput)).sum() + sum((f[0] * torch.from_numpy(d)).sum()
                                                            for f, d in zip(finals, dfinals))
    loss.backward()
    expected = {k: (t.grad[0] if k in states else t.grad).numpy() for k, t in tensors.items()}
    expected.update({"W_ih": layer.weight_ih_l0.grad.numpy(), "W_hh": layer.weight_hh_l0.grad.numpy(),
                     "b_ih": layer.bias_ih_l0.grad.numpy(), "b_hh": layer.bias_hh_l0.grad.numpy()})
    for key, want in expected.items():
        assert grads[key].dtype == dtype
        np.testing.assert_allclose(grads[key], want, rtol=tol, atol=tol * 10, err_msg=key)


@pytest.mark.parametrize("name", SEQUENCES)
def test_the_sequence_module_refuses_bad_input_naming_the_argument(name, rng):
    module = _module(name)
    inputs, states = _inputs(name, rng, np.float64)
    with pytest.raises(ValueError, match=r"^x: expected shape \(N, T, D\)"):
        module.forward(inputs["x"][:, 0], *list(inputs.values())[1:])
    with pytest.raises(ValueError, match=r"^x: axis T of shape \(3, 0, 5\) is empty"):
        module.forward(inputs["x"][:, :0], *list(inputs.values())[1:])
    out, cache = module.forward(*inputs.values())
    doutput, dfinals = _dout(out, states, rng)
    with pytest.raises(ValueError, match=r"^dout: expected doutput of shape"):
        module.backward((doutput[:, :-1], dfinals), cache)
    first, *others = dfinals if len(states) > 1 else (dfinals,)
    wrong = (first[:-1], *others) if len(states) > 1 else first[:-1]
    with pytest.raises(ValueError, match=rf"^d{states[0]}_last: expected the last state's shape"):
        module.backward((doutput, wrong), cache)
    finals_none = tuple(None for _ in states) if len(states) > 1 else None
    grads = module.backward((doutput, finals_none), cache)  # no gradient at the last states: zeros
    assert all(np.isfinite(g).all() for g in grads.values())
