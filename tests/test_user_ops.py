"""Ops a user brings, from a file (--ops) or one line (--def): every command takes them, and they are
derived safely (right or refused, bounded, stable code, reachable branches only, textbook forms)."""
import dataclasses
import importlib.metadata
import re
import runpy
import time
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import derive
from codegen.certify import CodeCheckFailed, certified
from derive.cli import main
from derive.define import Input, Intermediate, Op, Tensor, indices, sizes
from derive.define import oneline, registry
from derive.define.functions import Sigmoid
from derive.define.symbols import Iverson
from derive.engine import Mismatch, budget, check, rewrite
from derive.engine.derivation import derive as derive_op
from derive.engine.derivation import derive_unchecked
from derive.engine.prepare import Unsupported

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
(S,) = sizes("S")
(i,) = indices("i")


def elementwise(name, definition, **kw):
    x = Tensor("x", S)
    return Op(name=name, doc=f"{name}.", inputs=(Input(x, **kw),), shape_kind="flat",
              output=Intermediate("y", (i,), (S,), definition(x[i])))


@pytest.fixture(params=EXAMPLES, ids=lambda p: p.stem)
def example(request):
    return request.param, runpy.run_path(str(request.param))


# -- the door ---------------------------------------------------------------------------------

def test_there_are_six_examples_each_with_a_one_line_form_and_a_hand_formula():
    assert len(EXAMPLES) >= 6
    for path in EXAMPLES:
        found = runpy.run_path(str(path))
        assert isinstance(found["OP"], Op) and found["ONE_LINE"] and len(found["HAND"]) == 2, path.name


@pytest.mark.parametrize("args", [["latex"], ["latex", "--lang", "zh"], ["latex", "--form", "matrix"], ["code"],
                                  ["check"], ["doc", "--lang", "zh"], ["doc", "--format", "tex"]],
                         ids=lambda a: "-".join(a))
def test_every_command_takes_an_example_file(example, args, capsys):
    path, _ = example
    assert main([*args, "--ops", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.strip() and "Traceback" not in out


def test_a_hand_formula_for_each_example_verifies(example, capsys):
    path, found = example
    wrt, formula = found["HAND"]
    assert main(["verify", "--ops", str(path), "--wrt", wrt, formula]) == 0, capsys.readouterr().out
    assert capsys.readouterr().out.startswith("EQUIVALENT")


def test_the_one_line_form_is_the_same_op_as_the_file(example):
    """Both ways give a module with the same arguments and the same values and gradients."""
    _, found = example
    file_op = found["OP"]
    line_op = oneline.op_from_definitions(found["ONE_LINE"], file_op.name)
    assert [i.name for i in line_op.inputs] == sorted([i.name for i in file_op.inputs],
                                                      key=[i.name for i in line_op.inputs].index)
    if example[0].stem == "causal_attention":
        # At the one-line form's sizes (D = 1, scores q k near 6400) float32 at +-80 is about 1e-3 off in the
        # gradient of q, as PyTorch's float32 is: rounding the scores, not an unstable form. The extreme check's
        # absolute tolerance (1e-5 of the largest input) does not allow for it; see the report of issue 12b.
        from codegen.certify import CodeCheckFailed
        with pytest.raises(CodeCheckFailed, match=r"in float32: at inputs \+-80: q\["):
            certified(line_op)
    a, b = (check.load(op.name, certified(op, extremes=example[0].stem != "causal_attention").source)
            for op in (file_op, line_op))
    inputs = check.sample(file_op, check.example_sizes(file_op), np.random.default_rng(0))
    out_a, cache_a = a.forward(**inputs)
    out_b, cache_b = b.forward(**inputs)
    np.testing.assert_allclose(out_a, out_b, rtol=1e-12, atol=1e-12)
    dout = np.random.default_rng(1).standard_normal(np.shape(out_a))
    grads_a, grads_b = a.backward(dout, cache_a), b.backward(dout, cache_b)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        np.testing.assert_allclose(grads_a[name], grads_b[name], rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("command", ["latex", "code", "check", "doc"])
def test_every_command_takes_a_one_line_definition(command, capsys):
    assert main([command, "--def", r"y_i = x_i \tanh(\ln(1 + e^{x_i}))", "--name", "mish"]) == 0
    assert "mish" in capsys.readouterr().out


def test_one_line_definitions_say_what_was_inferred(capsys):
    definition = [r"y_{ne} = \frac{1}{L} \sum_l W_{idx_{nl}, e}"]
    assert main(["latex", "--def", *definition, "--name", "bag", "--symbols"]) == 0
    out = capsys.readouterr().out
    assert "idx[N, L]  (index; no gradient)" in out and "W[V, E]" in out and "sizes: N, L, V, E" in out


def test_hyper_parameters_of_a_one_line_definition_are_keywords(capsys):
    assert main(["code", "--def", r"y_i = x_i \sigma(\beta x_i)", "--name", "swish1", "--hyper", "beta=1.5"]) == 0
    assert "def forward(x, *, beta=1.5):" in capsys.readouterr().out


def test_a_one_line_op_may_return_an_earlier_definition_too(capsys):
    """--also-output c: forward returns (y, c), backward takes both upstream gradients; checked as any op."""
    definition = ["--def", r"c_i = x_i \tanh(x_i)", "--def", r"y_i = \sigma(c_i) + x_i", "--name", "twoout",
                  "--also-output", "c"]
    assert main(["check", *definition]) == 0
    assert main(["code", *definition]) == 0
    code = capsys.readouterr().out
    assert "return (y, c), cache" in code and "dout, dout_c = _upstreams(dout, cache)" in code


def test_build_writes_your_ops_into_out_and_never_touches_generated(tmp_path, capsys):
    generated = ROOT / "generated"
    before = {p: p.read_bytes() for p in generated.rglob("*") if p.is_file()}
    mish = ROOT / "examples" / "mish.py"
    assert main(["build", "--ops", str(mish), "--out", str(tmp_path)]) == 0
    assert main(["build", "--def", "y_i = x_i^2", "--name", "square", "--out", str(tmp_path)]) == 0
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "latex/en/mish.tex", "latex/en/square.tex", "latex/zh/mish.tex", "latex/zh/square.tex", "mish.py",
        "square.py"]
    assert str(mish) in (tmp_path / "mish.py").read_text().splitlines()[0]
    assert "--def 'y_i = x_i^2' --name square" in (tmp_path / "square.py").read_text().splitlines()[0]
    assert before == {p: p.read_bytes() for p in generated.rglob("*") if p.is_file()}


@pytest.mark.parametrize("args, message", [
    (["build", "--ops", "examples/mish.py"], "--out DIR"),
    (["build", "--ops", "examples/mish.py", "--out", "generated"], "must not be the package's generated/"),
    (["latex", "--ops", "no/such/file.py"], "no such file"),
    (["latex", "--ops", "README.md"], "expected a Python file"),
    (["latex", "--def", "y_i = x_i^2"], "--name"),
    (["latex", "--def", "y_i = x_i^2 +", "--name", "a"], "formula:"),
    (["latex", "--def", r"y_i = \foo(x_i)", "--name", "a"], ""),
    (["latex", "--def", r"y_i = x_i \beta", "--name", "a"], "--hyper beta=VALUE"),
    (["latex", "--def", "y_i = x_i", "--name", "a", "--hyper", "beta=1"], "not used"),
    (["latex", "--def", "y_i = x_i", "--name", "a", "--hyper", "beta"], "NAME=VALUE"),
    (["latex", "--def", "y_{ij} = x_{i+1}", "--name", "a"], "an index is a letter"),
    (["latex", "--def", "y_i = x_i", "--name", "2a"], "identifier"),
    (["latex", "--name", "a"], "are for --def"),
    (["latex", "--def", "y_i = x_i", "--name", "a", "--also-output", "q"], "not a definition before the last"),
    (["latex", "--also-output", "q"], "are for --def"),
], ids=lambda a: a if isinstance(a, str) else "-".join(a)[:40])
def test_bad_input_is_one_line_and_exit_2(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and message in err


def test_a_file_that_fails_is_named_with_its_line(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text("import sympy\nOP = 1 / 0\n")
    assert main(["latex", "--ops", str(bad)]) == 2
    assert f"{bad}, line 2: ZeroDivisionError" in capsys.readouterr().err
    (tmp_path / "empty.py").write_text("x = 1\n")
    assert main(["latex", "--ops", str(tmp_path / "empty.py")]) == 2
    assert "defines neither OP" in capsys.readouterr().err


def test_a_user_op_may_not_take_a_built_in_name(capsys):
    clash = dataclasses.replace(elementwise("relu", lambda x: x ** 2), origin="mine.py")
    with pytest.raises(ValueError, match="defines 'relu', the name of another op"):
        with registry.using([clash]):
            pass


def test_packages_register_ops_through_entry_points(monkeypatch, capsys):
    square = elementwise("plugin_square", lambda x: x ** 2)

    class Point:
        name, value = "plugin_square", "someone.ops:OP"

        def load(self):
            return square

    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [Point()] if group == "derive.ops" else [])
    registry.plugins.cache_clear()
    try:
        assert main(["list"]) == 0
        assert "plugin_square" in capsys.readouterr().out
        assert registry.get("plugin_square") is square
    finally:
        registry.plugins.cache_clear()


def test_the_python_api_takes_an_op_wherever_it_takes_a_name():
    op = runpy.run_path(str(ROOT / "examples" / "swish.py"))["OP"]
    verdict = derive.verify(r"\sum_n g_{nd} x_{nd}^2 \sigma(\beta_d x_{nd})(1 - \sigma(\beta_d x_{nd}))", op=op,
                            wrt="beta")
    assert verdict.equivalent
    shown = derive.show(op)
    assert "swish" in shown._repr_markdown_()


# -- right or refused -------------------------------------------------------------------------

def _residual():
    return runpy.run_path(str(ROOT / "examples" / "residual_block.py"))["OP"]


def test_a_relu_written_as_cases_keeps_its_bracket_inside_the_sum_it_belongs_to():
    d = derive_op(_residual())
    dx = d.gradient("x").expr
    for bracket in dx.atoms(Iverson):
        h = next(iter(bracket.condition.free_symbols & {s for s in dx.atoms(sp.Symbol) if s.name.startswith("h")}))
        enclosing = [s for s in sp.preorder_traversal(dx) if isinstance(s, sp.Sum) and s.has(bracket)]
        assert any(h in {v for v, *_ in s.limits} for s in enclosing), dx
    assert not check.brute_force(d, check.example_sizes(d.op, small=True))


def test_a_wrong_gradient_is_caught_exactly_and_at_points():
    """The check fails on a gradient one term off: through exact cancellation and through branches."""
    for op in (_residual(), elementwise("sq", lambda x: x ** 3)):
        d = derive_unchecked(op)
        g = d.gradients[-1]
        wrong = dataclasses.replace(g, steps=g.steps + (type(g.steps[0])("wrong", g.expr * 1.0001 + 1),))
        bad = dataclasses.replace(d, gradients=d.gradients[:-1] + (wrong,), backprop=())
        assert check.brute_force(bad, check.certification_sizes(op))
        with pytest.raises(Mismatch, match="disagrees with SymPy's derivative"):
            check.certify(bad)


@pytest.mark.parametrize("written", [
    lambda x: sp.Rational(1, 2) * x * (1 + sp.tanh(sp.sqrt(2 / sp.pi) * (x + sp.Float(0.044715) * x ** 3))),
    lambda x: x / 2 * (1 + sp.tanh(sp.sqrt(2 / sp.pi) * (x + sp.Rational(44715, 10 ** 6) * x ** 3))),
    lambda x: x / 2 * (1 + sp.erf(x / sp.sqrt(2))),
], ids=["tanh-float", "tanh-rational", "erf"])
def test_gelu_in_every_natural_form_derives_with_no_step_given_up(written):
    d = derive_op(elementwise("gelu_form", written))
    (g,) = d.gradients
    assert not g.abandoned and d.certificate
    assert not g.expr.has(sp.exp) or g.expr.has(sp.erf)  # through tanh or Phi, never an inversion's exp


def _busy(seconds):
    """Work (not sleep) for ``seconds`` of CPU: the budget counts the CPU a step takes."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_a_step_over_its_budget_is_given_up_and_its_input_stands(monkeypatch):
    def slow(expr):
        _busy(2)
        return expr
    monkeypatch.setattr(rewrite, "textbook", slow)
    seconds = budget.step_seconds()
    budget.set_step_seconds(0.5)
    try:
        d = derive_unchecked(elementwise("slow", lambda x: x * sp.tanh(x)))
    finally:
        budget.set_step_seconds(seconds)
    assert d.gradients[0].abandoned == ("textbook form (over 0.5 s)",)
    assert not check.brute_force(d, check.certification_sizes(d.op))


def test_differentiation_over_its_budget_is_refused_in_one_line(monkeypatch):
    from derive.engine import derivation
    eliminate = derivation._eliminate

    def slow(*args):
        _busy(1)
        return eliminate(*args)
    monkeypatch.setattr(derivation, "_eliminate", slow)
    seconds = budget.step_seconds()
    budget.set_step_seconds(0.2)
    try:
        with pytest.raises(ValueError, match="--step-budget SECONDS"):
            derive_unchecked(_residual())
    finally:
        budget.set_step_seconds(seconds)


def test_a_construct_the_engine_does_not_take_is_refused_naming_it(capsys):
    with pytest.raises(Unsupported, match="sin"):
        derive_unchecked(elementwise("sine", sp.sin))
    assert main(["latex", "--def", r"y_i = x_{i}^{3} + 2^{x_i}", "--name", "a"]) == 0  # powers are fine
    assert main(["latex", "--def", r"y_i = x_{i}^{x_i}", "--name", "b"]) == 1  # NaN for x < 0: refused
    assert "dx is not a number" in capsys.readouterr().err


@pytest.mark.parametrize("written", [lambda x: sp.Piecewise((x, x > 0), (x / 10, True)),
                                     lambda x: sp.Piecewise((x ** 2 / 2, sp.Abs(x) <= 1), (sp.Abs(x) - sp.Rational(1, 2), True))],
                         ids=["prelu-like", "huber-like"])
def test_only_reachable_branches_are_compared(written):
    op = elementwise("cases", written, domain="nonzero")
    d = derive_op(op)
    assert "random points" in d.certificate


# -- textbook forms, stable code ----------------------------------------------------------------

def test_a_derivative_is_written_with_the_function_it_is_a_function_of():
    x = Tensor("x", S)[i]
    g = Tensor("g", S)[i]
    silu = derive_op(elementwise("silu_inline", lambda x: x / (1 + sp.exp(-x))))
    y = silu.op.output[i]
    assert silu.gradients[0].expr in (g * Sigmoid(x) * (x * (1 - Sigmoid(x)) + 1),  # σ(x)(1 + x(1 - σ(x)))
                                      g * (Sigmoid(x) + y * (1 - Sigmoid(x))),  # the same through y and σ
                                      g * (y + Sigmoid(x) * (1 - y)))  # (Ramachandran et al.)
    softplus = derive_op(elementwise("softplus_inline", lambda x: sp.log(1 + sp.exp(x)))).gradients[0].expr
    assert softplus == g * Sigmoid(x)


@pytest.mark.parametrize("written", [lambda x: x / (1 + sp.exp(-x)), lambda x: sp.log(1 + sp.exp(x)),
                                     lambda x: x * sp.tanh(sp.log(1 + sp.exp(x))),
                                     lambda x: x / 2 * (1 + sp.tanh(sp.sqrt(2 / sp.pi) * (x + sp.Float(0.044715) * x ** 3)))],
                         ids=["silu", "softplus", "mish", "gelu-tanh"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_generated_code_is_finite_and_right_at_the_extremes(written, dtype):
    d = derive_op(elementwise("extreme", written))
    module = check.load("extreme", certified(d.source).source)
    assert check.extremes(d, module, dtype) == []


def test_a_definition_without_a_stable_form_is_refused_not_written():
    tanh_by_hand = elementwise("tanh_by_hand", lambda x: (sp.exp(x) - sp.exp(-x)) / (sp.exp(x) + sp.exp(-x)))
    with pytest.raises(CodeCheckFailed, match="no stable form"):
        certified(tanh_by_hand, extremes=True)


def test_names_with_numbers_and_names_the_tool_uses_print_as_valid_latex(capsys):
    assert main(["latex", "--ops", str(ROOT / "examples" / "residual_block.py")]) == 0
    tex = capsys.readouterr().out
    assert "W^{(1)}_{he}" in tex and "_{1}_{" not in tex and "b^{(2)}_{d}" in tex
    N, E = sizes("N E")
    n, e = indices("n e")
    x, g = Tensor("x", N, E), Tensor("g", E)
    clash = Op(name="clash", doc="clash.", inputs=(Input(x), Input(g)),  # a size E, a tensor g
               output=Intermediate("loss", (), (), sp.Sum(x[n, e] * g[e], (e, 0, E - 1), (n, 0, N - 1))))
    with registry.using([dataclasses.replace(clash, origin="clash")]):
        assert main(["latex", "clash"]) == 0
        assert r"\frac{\partial L}{\partial x_{ne}}" in capsys.readouterr().out
        assert main(["verify", "clash", "--symbols"]) == 0
        assert "E (range of e" in capsys.readouterr().out


def test_attention_is_contracted_pairwise_through_its_intermediates_gradients():
    op = runpy.run_path(str(ROOT / "examples" / "causal_attention.py"))["OP"]
    source = certified(op).source
    backward = source[source.index("def backward"):source.index("def _float_array")]
    assert not re.search(r"einsum\('[a-z]+,[a-z]+,[a-z]+", source)  # no one-pass product of three or more
    assert backward.count(" @ ") == 4  # dP = dY V^T, dQ = dS K, dK = dS^T Q, dV = P^T dY
    assert re.search(r"dz = dp - .*\n +dz \*= p\n", backward)  # p*(dp - rowsum), one new array


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_agrees_with_its_own_pytorch_reference(path):
    torch = pytest.importorskip("torch")
    op = runpy.run_path(str(path))["OP"]
    module = check.load(op.name, certified(op).source)
    rng = np.random.default_rng(0)
    inputs = check.sample(op, check.example_sizes(op), rng)
    y, cache = module.forward(**inputs)
    dout = rng.standard_normal(np.shape(y))
    wanted = [i.name for i in op.differentiable]
    tensors = {name: torch.tensor(a, requires_grad=name in wanted) for name, a in inputs.items()}
    ty = op.torch_reference(**tensors)
    grads = torch.autograd.grad(ty, [tensors[name] for name in wanted], grad_outputs=torch.tensor(dout))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    for name, grad in zip(wanted, grads):
        np.testing.assert_allclose(module.backward(dout, cache)[name], grad.numpy(), rtol=1e-10, atol=1e-12,
                                   err_msg=name)


def test_an_embedding_refuses_an_index_out_of_range():
    op = runpy.run_path(str(ROOT / "examples" / "embedding_mean.py"))["OP"]
    module = check.load(op.name, certified(op).source)
    idx, W = np.full((3, 5), 7), np.ones((7, 4))
    with pytest.raises(ValueError, match="idx: expected indices in 0..6"):
        module.forward(idx, W)
