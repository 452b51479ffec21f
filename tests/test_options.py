"""Options that select between forms (a loss's reduction, a bias left out): each form derived on its own,
one generated module running the form chosen, the form's LaTeX, verify against it, bad values refused;
every form against PyTorch, several shapes, both dtypes, values and every gradient, inputs unchanged."""
import importlib
import subprocess
import sys

import numpy as np
import pytest

from codegen.render import environment, module_source
from derive.define.forms import form_label
from derive.define.registry import get, registry
from derive.engine import check
from derive.engine.derivation import derive

LOSSES = ["mse", "half_sse", "cross_entropy", "softmax_cross_entropy", "binary_cross_entropy", "bce_with_logits",
          "huber"]
#: Every form of every op with options, by id ``op[option=value]``.
FORMS = {f"{op.name}[{', '.join(f'{k}={v}' for k, v in form.chosen)}]": form
         for op in registry().values() if op.options for form in op.all_forms}


def derive_cli(*args):
    return subprocess.run([sys.executable, "-m", "derive", *args], capture_output=True, text=True, timeout=600)


def test_every_loss_has_the_three_reductions():
    for name in LOSSES:
        op = get(name)
        reductions = [dict(f.chosen)["reduction"] for f in op.all_forms]
        assert list(dict.fromkeys(reductions)) == ["mean", "sum", "none"], name
        assert op.form(reduction="none").output.index and not op.form(reduction="sum").output.index


@pytest.mark.parametrize("name", FORMS)
def test_each_form_is_derived_from_its_own_definition(name):
    """The form's gradients come out of the engine from its forward definition (the first step
    differentiates that definition), certified against SymPy's derivative of it unrolled."""
    form = FORMS[name]
    d = derive(form)
    assert d.source == form and d.certificate
    assert [g.input.name for g in d.gradients] == [i.name for i in form.differentiable]
    assert check.brute_force(d, check.example_sizes(form, small=True), check.hyper_values(form)) == []


@pytest.mark.parametrize("name", LOSSES)
def test_the_reductions_have_gradients_of_their_own(name):
    """A definition per form, a derivation per form: no form's gradient is another's, rescaled by hand. (Two
    forms may share a definition and differ in what their inputs' domains let the derivation assume: soft
    targets whose rows sum to 1, or not; a target differentiated, or not.)"""
    found = [(derive(form).gradients[0].steps[0].expr, tuple((i.domain, i.differentiable) for i in form.inputs))
             for form in get(name).all_forms]
    assert len(set(found)) == len(found), found


@pytest.mark.parametrize("name", sorted({op.name for op in FORMS.values()}))
def test_the_module_runs_each_forms_own_generated_code(name):
    """Each form's functions in generated/<op>.py are the module template's, for that form alone
    (nothing written by hand); the dispatcher only picks one."""
    op = get(name)
    template = environment().get_template("module.py.j2")
    from codegen.module.context import module_context
    from codegen.render import _read_already
    source = module_source(derive(op))
    for form in op.all_forms:
        label = form_label(form)
        context = _read_already(op, module_context(derive(form)))  # less a check the dispatcher has made
        own = "".join(template.blocks["functions"](template.new_context(dict(
            context, forward_name=f"_forward_{label}", backward_name=f"_backward_{label}"))))
        assert own in source, label


def _draw(form, shapes, dtype, rng):
    """Inputs of the given shapes; integer labels (an index input) in the range of the last axis of the first."""
    return {inp.name: rng.integers(0, shapes[0][-1], shape) if inp.domain == "index"
            else check._draw(inp.domain, shape, rng).astype(dtype) for inp, shape in zip(form.inputs, shapes)}


def _shapes(form):
    """Several shapes per op: any shape for the elementwise losses, [N, K] for the others ([N] labels)."""
    if form.shape_kind == "flat":
        return [((7,), (7,)), ((2, 3, 4), (2, 3, 4)), ((1, 1), (1, 1))]
    return [tuple(shape[:len(inp.shape)] for inp in form.inputs) for shape in [(3, 5), (1, 4), (6, 2)]]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shapes", [0, 1, 2])
@pytest.mark.parametrize("name", [n for n in FORMS if FORMS[n].name in LOSSES and all(
    value == option.default for (_, value), option in zip(FORMS[n].chosen, FORMS[n].options)
    if option.name not in ("reduction", "target", "t_grad"))])  # the cross-entropies' others: test_cross_entropy.py
def test_each_reduction_matches_pytorch(name, shapes, dtype, rng):
    torch = pytest.importorskip("torch")
    from tests.test_torch import REFERENCE, _arguments
    form = FORMS[name]
    module = importlib.import_module(f"generated.{form.name}")
    inputs = _draw(form, _shapes(form)[shapes], dtype, rng)
    before = {k: v.copy() for k, v in inputs.items()}
    for case in (0, 1):
        hyper = check.hyper_values(form, case)
        out, cache = module.forward(**inputs, **hyper)
        tensors = {k: torch.tensor(v, requires_grad=any(i.name == k for i in form.differentiable))
                   for k, v in inputs.items()}
        expected = REFERENCE[form.name](*tensors.values(), *_arguments(hyper))
        rtol, atol = (1e-10, 1e-12) if dtype == np.float64 else (2e-5, 1e-6)
        assert np.asarray(out).dtype == dtype and np.shape(out) == tuple(expected.shape)
        np.testing.assert_allclose(out, expected.detach().numpy(), rtol=rtol, atol=atol)
        dout = rng.standard_normal(np.shape(out)).astype(dtype)
        expected.backward(torch.tensor(dout))
        grads = module.backward(dout if np.ndim(out) else float(dout), cache)
        assert set(grads) == {i.name for i in form.differentiable}
        for inp in form.differentiable:
            assert grads[inp.name].dtype == dtype and grads[inp.name].shape == inputs[inp.name].shape
            np.testing.assert_allclose(grads[inp.name], tensors[inp.name].grad.numpy(), rtol=rtol, atol=atol,
                                       err_msg=inp.name)
    for k in inputs:
        np.testing.assert_array_equal(inputs[k], before[k], err_msg=f"{k} was modified")


def test_a_loss_without_reduction_takes_an_upstream_gradient_of_its_shape(rng):
    from generated import softmax_cross_entropy
    z, t = rng.standard_normal((4, 3)), np.full((4, 3), 1 / 3)
    losses, cache = softmax_cross_entropy.forward(z, t, reduction="none")
    assert losses.shape == (4,)
    with pytest.raises(ValueError, match=r"dout: expected the output's shape \(4,\)"):
        softmax_cross_entropy.backward(cache)
    assert softmax_cross_entropy.backward(np.ones(4), cache)["z"].shape == (4, 3)
    # the mean is the sum over N, which is the sum of the per-sample losses over N
    mean, _ = softmax_cross_entropy.forward(z, t)
    total, _ = softmax_cross_entropy.forward(z, t, reduction="sum")
    np.testing.assert_allclose([mean * 4, total], [losses.sum(), losses.sum()], rtol=1e-12)


@pytest.mark.parametrize("bad", ["avg", "Mean", None, 1, ["sum"]])
def test_a_bad_option_value_is_a_value_error_naming_the_option_and_its_choices(bad):
    from generated import mse
    with pytest.raises(ValueError, match=r"^reduction: expected one of 'mean', 'sum', 'none', got "):
        mse.forward(np.ones(3), np.zeros(3), reduction=bad)
    with pytest.raises(ValueError, match=r"^reduction: expected one of 'mean', 'sum', 'none', got "):
        get("mse").form(reduction=bad)


def test_an_unknown_option_is_a_value_error():
    with pytest.raises(ValueError, match="option: mse has no option 'reductions'; its options are reduction"):
        get("mse").form(reductions="sum")
    with pytest.raises(ValueError, match="option: sigmoid has no option 'reduction'; it has none"):
        get("sigmoid").form(reduction="sum")


def test_latex_of_a_chosen_form():
    default = derive_cli("latex", "mse")
    summed = derive_cli("latex", "mse", "--option", "reduction=sum")
    unreduced = derive_cli("latex", "mse", "--option", "reduction=none", "--lang", "zh")
    assert default.returncode == summed.returncode == unreduced.returncode == 0
    assert r"E = \frac{1}{S} \sum_{i} \left(y_{i} - t_{i}\right)^{2}" in default.stdout
    assert r"E = \sum_{i} \left(y_{i} - t_{i}\right)^{2}" in summed.stdout and r"\frac{1}{S}" not in summed.stdout
    assert r"L_{i} = \left(y_{i} - t_{i}\right)^{2}" in unreduced.stdout
    assert r"g_{i} = \frac{\partial E}{\partial L_{i}}" in unreduced.stdout


def test_verify_against_a_chosen_form():
    right = derive_cli("verify", "mse", "--option", "reduction=sum", "--wrt", "y", r"2 (y_i - t_i)")
    wrong = derive_cli("verify", "mse", "--option", "reduction=sum", "--wrt", "y", r"\frac{2}{S} (y_i - t_i)")
    per_sample = derive_cli("verify", "softmax_cross_entropy", "--option", "reduction=none", "--wrt", "z",
                            r"g_n (y_{nk} - t_{nk})")
    assert (right.returncode, wrong.returncode, per_sample.returncode) == (0, 1, 0), (right, wrong, per_sample)
    assert right.stdout.startswith("EQUIVALENT") and wrong.stdout.startswith("NOT EQUIVALENT")


@pytest.mark.parametrize("args, message", [
    (["latex", "mse", "--option", "reduction=avg"], "--option: reduction: expected one of mean, sum, none, got 'avg'"),
    (["latex", "mse", "--option", "reduce=sum"], "--option: mse has no option 'reduce'; its options are reduction"),
    (["latex", "mse", "--option", "reduction"], "--option: expected NAME=VALUE, got 'reduction'"),
    (["latex", "sigmoid", "--option", "reduction=sum"], "--option: sigmoid has no option 'reduction'; it has none"),
    (["latex", "--chain", "linear,mse", "--option", "reduction=sum"], "--option is for an op"),
    (["verify", "mse", "--option", "reduction=avg", "--wrt", "y", "2 (y_i - t_i)"],
     "--option: reduction: expected one of mean, sum, none, got 'avg'"),
    (["doc", "mse", "--option", "reduction=avg"], "--option: reduction: expected one of mean, sum, none, got 'avg'"),
])
def test_a_bad_option_on_the_command_line_is_one_line_and_exit_2(args, message):
    found = derive_cli(*args)
    assert found.returncode == 2 and found.stdout == ""
    assert found.stderr.count("\n") == 1 and message in found.stderr, found.stderr


def test_doc_of_a_chosen_form():
    found = derive_cli("doc", "huber", "--option", "reduction=sum", "--lang", "en")
    assert found.returncode == 0, found.stderr
    assert "summed over all elements" in found.stdout and r"\frac{1}{N}" not in found.stdout


#: (x, W, b) shapes: linear on any leading axes (none, one, two), conv2d on images.
LAYER_SHAPES = {
    "linear": [((4,), (3, 4), (3,)), ((5, 4), (3, 4), (3,)), ((2, 3, 4), (6, 4), (6,))],
    "conv2d": [((2, 2, 5, 4), (3, 2, 3, 2), (3,)), ((1, 3, 4, 4), (2, 3, 2, 2), (2,))],
}
TORCH_LAYERS = {
    "linear": lambda x, W, b=None: __import__("torch").nn.functional.linear(x, W, b),
    "conv2d": lambda x, W, b=None, stride=1, padding=0, dilation=1, groups=1: __import__("torch").nn.functional.conv2d(
        x, W, b, stride=stride, padding=padding, dilation=dilation, groups=groups),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bias", ["given", None])
@pytest.mark.parametrize("name, shapes", [(name, s) for name, all_shapes in LAYER_SHAPES.items() for s in all_shapes])
def test_a_layer_with_and_without_its_bias_matches_pytorch(name, shapes, bias, dtype, rng):
    torch = pytest.importorskip("torch")
    form = get(name).form(b=bias)
    module = importlib.import_module(f"generated.{name}")
    inputs = {k: rng.standard_normal(shape).astype(dtype) for k, shape in zip(("x", "W", "b"), shapes)}
    if bias is None:
        del inputs["b"]
    before = {k: v.copy() for k, v in inputs.items()}
    for case in (0, 1):
        hyper = {h.name: h.cases[case] for h in form.hyper}
        out, cache = module.forward(**inputs, **hyper)
        tensors = {k: torch.tensor(v, requires_grad=True) for k, v in inputs.items()}
        expected = TORCH_LAYERS[name](**tensors, **hyper)
        tolerance = (1e-10, 1e-12) if dtype == np.float64 else (2e-5, 2e-5)
        _agrees_with_torch(module, out, cache, inputs, tensors, expected, dtype, tolerance, rng,
                           "no b key without a bias")
    for k in inputs:
        np.testing.assert_array_equal(inputs[k], before[k], err_msg=f"{k} was modified")


def _agrees_with_torch(module, out, cache, inputs, tensors, expected, dtype, tolerance, rng, which_gradients):
    """The generated output, and every gradient for a random upstream one, equal PyTorch's (``expected``, computed
    from ``tensors``), in the inputs' dtype and shapes; the gradients are one per input (``which_gradients``)."""
    import torch
    rtol, atol = tolerance
    assert out.dtype == dtype and out.shape == tuple(expected.shape)
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=rtol, atol=atol)
    dout = rng.standard_normal(out.shape).astype(dtype)
    expected.backward(torch.tensor(dout))
    grads = module.backward(dout, cache)
    assert set(grads) == set(inputs), which_gradients
    for k, v in inputs.items():
        assert grads[k].dtype == dtype and grads[k].shape == v.shape, k
        np.testing.assert_allclose(grads[k], tensors[k].grad.numpy(), rtol=rtol, atol=atol, err_msg=k)


@pytest.mark.parametrize("name", ["linear", "conv2d"])
def test_the_form_without_a_bias_has_no_bias_at_all(name):
    """Derived on its own: no b among its inputs or in its definition (not a zero bias)."""
    form = get(name).form(b=None)
    assert [i.name for i in form.inputs] == ["x", "W"]
    assert "b" not in {str(e.base) for e in form.output.definition.atoms(__import__("sympy").Indexed)}
    assert [g.input.name for g in derive(form).gradients] == ["x", "W"]
    latex = derive_cli("latex", name, "--option", "b=None")
    assert latex.returncode == 0 and "b_{" not in latex.stdout and r"\partial b" not in latex.stdout


def test_linear_keeps_its_matrix_form_with_leading_axes():
    found = derive_cli("latex", "linear", "--form", "matrix")
    assert found.returncode == 0 and r"\boldsymbol{\delta}^{T} X" in found.stdout


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape, dim", [((5,), 0), ((5,), -1), ((3, 4), 0), ((3, 4), 1), ((2, 3, 4), 0),
                                        ((2, 3, 4), 1), ((2, 3, 4), -2), ((2, 3, 4), -1)])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_along_any_axis_matches_pytorch(name, shape, dim, dtype, rng):
    torch = pytest.importorskip("torch")
    module = importlib.import_module(f"generated.{name}")
    x = rng.standard_normal(shape).astype(dtype) * 3
    before = x.copy()
    out, cache = module.forward(x, dim=dim)
    tensor = torch.tensor(x, requires_grad=True)
    expected = getattr(torch.nn.functional, name)(tensor, dim)
    rtol, atol = (1e-10, 1e-12) if dtype == np.float64 else (2e-5, 1e-6)
    assert out.dtype == dtype and out.shape == shape
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=rtol, atol=atol)
    dout = rng.standard_normal(shape).astype(dtype)
    expected.backward(torch.tensor(dout))
    dx = module.backward(dout, cache)["x"]
    assert dx.dtype == dtype and dx.shape == shape
    np.testing.assert_allclose(dx, tensor.grad.numpy(), rtol=rtol, atol=atol)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("dim, error, message", [
    (2, ValueError, r"^dim: expected an axis of x, from -2 to 1, got 2$"),
    (-3, ValueError, r"^dim: expected an axis of x, from -2 to 1, got -3$"),
    (1.0, TypeError, r"^dim: expected an integer axis of x, got 1.0$"),
    (True, TypeError, r"^dim: expected an integer axis of x, got True$"),
])
def test_a_bad_axis_is_refused_naming_dim(dim, error, message):
    from generated import softmax
    with pytest.raises(error, match=message):
        softmax.forward(np.zeros((3, 4)), dim=dim)


def test_the_upstream_gradient_of_a_moved_axis_is_checked_in_the_callers_layout():
    from generated import softmax
    _, cache = softmax.forward(np.zeros((3, 4)), dim=0)
    with pytest.raises(ValueError, match=r"^dout: expected the output's shape \(3, 4\), got \(4, 3\)$"):
        softmax.backward(np.zeros((4, 3)), cache)


def test_an_axis_is_no_form_on_the_command_line():
    found = derive_cli("latex", "softmax", "--option", "dim=0")
    assert found.returncode == 2 and "dim of softmax is an axis, not a form" in found.stderr
    assert found.stderr.count("\n") == 1


USER_LOSS = """
import sympy as sp
from derive.define import Input, Intermediate, Op, Option, Tensor, forms, indices, sizes

(S,) = sizes("S")
(i,) = indices("i")
y, t = Tensor("y", S), Tensor("t", S)


def l1(reduction):
    error = sp.Abs(y[i] - t[i])
    output = {"mean": Intermediate("E", (), (), sp.Sum(error, (i, 0, S - 1)) / S),
              "sum": Intermediate("E", (), (), sp.Sum(error, (i, 0, S - 1)))}[reduction]
    return Op(name="my_l1", doc="L1 loss.", inputs=(Input(y, domain="nonzero"), Input(t, differentiable=False)),
              output=output, shape_kind="flat")


OP = forms(l1, Option("reduction", ("mean", "sum")))
"""


def test_a_users_op_gets_forms_the_same_way(tmp_path):
    path = tmp_path / "l1.py"
    path.write_text(USER_LOSS)
    summed = derive_cli("latex", "--ops", str(path), "--option", "reduction=sum")
    assert summed.returncode == 0, summed.stderr
    assert f"from {path}" in summed.stdout and r"E = \sum_{i} \left|{t_{i} - y_{i}}\right|" in summed.stdout
    built = derive_cli("build", "--ops", str(path), "--out", str(tmp_path / "out"))
    assert built.returncode == 0, built.stderr
    namespace = {}
    exec(compile((tmp_path / "out" / "my_l1.py").read_text(), "my_l1", "exec"), namespace)
    y, t = np.array([1.0, -2.0, 3.0]), np.array([0.5, 0.5, 0.5])
    assert namespace["forward"](y, t)[0] == pytest.approx(np.abs(y - t).mean())
    out, cache = namespace["forward"](y, t, reduction="sum")
    assert out == pytest.approx(np.abs(y - t).sum())
    np.testing.assert_array_equal(namespace["backward"](cache)["y"], np.sign(y - t))


#: Normalization layers on their shapes: batch norm on [N, C] and images, layer norm on [N, D] and [N, L, D].
NORM_SHAPES = {"batch_norm": [(6, 3), (2, 3, 4, 5)], "layer_norm": [(5, 4), (2, 3, 4)]}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("gamma, beta", [("given", "given"), ("given", None), (None, "given"), (None, None)])
@pytest.mark.parametrize("name, shape", [(name, s) for name, shapes in NORM_SHAPES.items() for s in shapes])
def test_a_norm_with_and_without_its_affine_parameters_matches_pytorch(name, shape, gamma, beta, dtype, rng):
    """gamma=None and beta=None (PyTorch's affine=False when both are): each a form derived on its own."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    module = importlib.import_module(f"generated.{name}")
    width = shape[1] if name == "batch_norm" else shape[-1]
    x = (3 * rng.standard_normal(shape) + 1).astype(dtype)
    params = {k: rng.standard_normal(width).astype(dtype) for k, given in (("gamma", gamma), ("beta", beta)) if given}
    inputs = {"x": x, **params}
    before = {k: v.copy() for k, v in inputs.items()}
    out, cache = module.forward(**inputs)
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in inputs.items()}
    if name == "batch_norm":
        expected = F.batch_norm(tensors["x"], None, None, tensors.get("gamma"), tensors.get("beta"), training=True)
    else:
        expected = F.layer_norm(tensors["x"], (width,), tensors.get("gamma"), tensors.get("beta"))
    tolerance = (1e-10, 1e-12) if dtype == np.float64 else (2e-4, 2e-4)
    _agrees_with_torch(module, out, cache, inputs, tensors, expected, dtype, tolerance, rng,
                       "a gradient for each input given, none for one left out")
    for k in inputs:
        np.testing.assert_array_equal(inputs[k], before[k], err_msg=f"{k} was modified")


def test_row_axes_and_a_class_axis_are_refused_where_they_mean_nothing():
    """RowAxes need a row op whose output has its first input's shape; a ClassAxis a loss per sample over
    classes whose first input is (N, K): anything else is a ValueError naming the op."""
    from derive.define import ClassAxis, Option, RowAxes, forms
    from derive.ops import layer_norm, linear, mse, softmax_cross_entropy
    with pytest.raises(ValueError, match=r"^linear: the row axes 'normalized_ndim' are for an op whose output"):
        forms(linear.linear, Option("b", input=True), RowAxes("normalized_ndim", of="x"))
    with pytest.raises(ValueError, match=r"^mse: the axis 'normalized_ndim' is for an op on rows"):
        forms(mse.mse, *mse.OP.options, RowAxes("normalized_ndim", of="y"))
    with pytest.raises(ValueError, match=r"^layer_norm: the class axis is for a loss per sample over classes"):
        forms(layer_norm.layer_norm, Option("gamma", input=True), Option("beta", input=True), ClassAxis("x"))
    with pytest.raises(ValueError, match=r"^softmax_cross_entropy: the class axis is for a loss per sample"):
        forms(softmax_cross_entropy.softmax_cross_entropy, *softmax_cross_entropy.OP.options[:-1], ClassAxis("t"))
