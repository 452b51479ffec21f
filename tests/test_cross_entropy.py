"""The cross-entropies' options (issue 13 part B): targets read as PyTorch reads them (integer class
labels or probabilities, the form chosen by t's dtype), each form derived from its own definition."""
import inspect

import numpy as np
import pytest
import sympy as sp

from derive.define import Option, forms
from derive.define.registry import get
from derive.define.symbols import Iverson
from derive.engine.derivation import derive

CROSS_ENTROPIES = ["softmax_cross_entropy", "cross_entropy"]


@pytest.mark.parametrize("name", CROSS_ENTROPIES)
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8])
def test_integer_targets_are_labels_and_run_the_labels_form(name, dtype, rng):
    module = __import__(f"generated.{name}", fromlist=["forward"])
    first = rng.uniform(0.1, 1.0, (4, 3))
    labels = np.array([2, 0, 1, 1], dtype=dtype)
    out, cache = module.forward(first, labels)
    assert cache["form"][:2] == ("mean", "labels")
    one_hot = np.eye(3)[labels.astype(int)]
    expected, _ = module.forward(first, one_hot)
    np.testing.assert_allclose(out, expected, rtol=1e-12)  # a label is its one-hot row
    assert set(module.backward(cache)) == {get(name).inputs[0].name}


@pytest.mark.parametrize("name", CROSS_ENTROPIES)
@pytest.mark.parametrize("labels, message", [
    ([0, 3], r"^t: expected indices in 0\.\.2 or -100, got values from 0 to 3$"),
    ([-1, 0], r"^t: expected indices in 0\.\.2 or -100, got values from -1 to 0$"),
    ([[0, 1], [1, 2]], r"^t: expected shape \(N\), got \(2, 2\)$"),
])
def test_bad_labels_are_a_value_error_naming_t(name, labels, message, rng):
    module = __import__(f"generated.{name}", fromlist=["forward"])
    with pytest.raises(ValueError, match=message):
        module.forward(rng.uniform(0.1, 1.0, (2, 3)), np.array(labels))


@pytest.mark.parametrize("name", CROSS_ENTROPIES)
def test_the_labels_form_is_derived_from_its_one_hot_definition(name):
    """The labels form's gradient comes from its own definition: the bracket [k = t_n] where the
    probabilities form has t_{nk}, derived, not substituted into the other form's result."""
    labels = derive(get(name).form(target="labels"))
    probabilities = derive(get(name).form(target="probabilities"))
    assert labels.gradients[0].steps[0].expr != probabilities.gradients[0].steps[0].expr
    assert "KroneckerDelta(k, t[n])" in str(labels.gradients[0].expr)
    assert labels.gradients[0].index == probabilities.gradients[0].index


@pytest.mark.parametrize("name", CROSS_ENTROPIES)
def test_a_label_is_known_to_be_a_class_wherever_it_is_not_ignored(name):
    """The forward checks each label (0 <= t_n < K or ignore_index): the one-hot row's range bracket
    [t_n <= K - 1] is 1 beside [t_n != ignore_index], and only that bracket is left."""
    gradient = derive(get(name).form(target="labels")).gradients[0].expr
    assert {type(b.condition) for b in gradient.atoms(Iverson)} == {sp.Ne}


@pytest.mark.parametrize("name", CROSS_ENTROPIES)
def test_the_labels_backward_makes_no_full_size_one_hot(name):
    """A label's one-hot row is added one entry per row (dz[n, t_n]), never compared against every class."""
    module = __import__(f"generated.{name}", fromlist=["forward"])
    labels = [f for f in vars(module) if f.startswith("_backward_") and "target_labels" in f]
    assert labels
    for function in labels:
        source = inspect.getsource(getattr(module, function))
        assert "np.arange(K) ==" not in source and "<= K - 1" not in source, function


def test_an_option_read_from_an_argument_is_checked():
    with pytest.raises(ValueError, match="read is"):
        Option("target", ("a", "b"), read=("t", "dtype"))
    with pytest.raises(ValueError, match="read is"):
        Option("target", ("a", "b", "c"), read=("t", "integer"))
    op = get("mse")
    with pytest.raises(ValueError, match="reads 'u', which no form has"):
        forms(lambda kind: op, Option("kind", ("a", "b"), read=("u", "integer")))


def _torch_loss(name, first, t, weight, ignore_index, label_smoothing, reduction):
    """PyTorch's own: F.cross_entropy on logits; for probabilities y, F.nll_loss of log y (labels) or
    the weighted sum of -t log y (probability targets), reduced as PyTorch reduces."""
    import torch
    F = torch.nn.functional
    keywords = {} if ignore_index is None else {"ignore_index": ignore_index}
    if name == "softmax_cross_entropy":
        return F.cross_entropy(first, t, weight=weight, label_smoothing=label_smoothing, reduction=reduction,
                               **keywords)
    if not t.is_floating_point():
        return F.nll_loss(torch.log(first), t, weight=weight, reduction=reduction, **keywords)
    per_class = 1 if weight is None else weight.reshape(-1, *[1] * (first.ndim - 2))  # along the class axis 1
    losses = -(per_class * t * torch.log(first)).sum(1)
    return {"mean": losses.mean, "sum": losses.sum, "none": lambda: losses}[reduction]()


OPTIONS = [(name, target, weighted, smoothing, ignore_index, t_grad)
           for name in CROSS_ENTROPIES for target in ("labels", "probabilities", "unnormalized")
           for weighted in (False, True)
           for smoothing in ((0.0, 0.2) if name == "softmax_cross_entropy" else (0.0,))
           for ignore_index in ((None, -100, 2) if target == "labels" else (None,))
           for t_grad in ((False,) if target == "labels" else (False, True))]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name, target, weighted, smoothing, ignore_index, t_grad", OPTIONS)
def test_every_option_matches_pytorch(name, target, weighted, smoothing, ignore_index, t_grad, reduction, dtype, rng):
    """Values and every gradient (t's too, with t_grad) against PyTorch for each combination of the
    options, ignored samples among the labels (ignore_index out of range, -100, or a class), inputs
    unchanged."""
    torch = pytest.importorskip("torch")
    module = __import__(f"generated.{name}", fromlist=["forward"])
    n, k = 6, 4
    first = (rng.standard_normal((n, k)) if name == "softmax_cross_entropy" else
             rng.uniform(0.05, 1.0, (n, k))).astype(dtype)
    if name == "cross_entropy":
        first /= first.sum(axis=1, keepdims=True)
    if target == "labels":
        t = rng.integers(0, k, n)
        if ignore_index is not None:
            t[[1, 4]] = ignore_index
    else:  # soft targets; rows summing to 1 or not (F.cross_entropy takes either)
        t = rng.uniform(0.1, 1.0, (n, k)).astype(dtype)
        if target == "probabilities":
            t /= t.sum(axis=1, keepdims=True)
    weight = rng.uniform(0.5, 2.0, k).astype(dtype) if weighted else None
    keywords = {"reduction": reduction} | ({} if ignore_index is None else {"ignore_index": ignore_index}) \
        | ({"label_smoothing": smoothing} if smoothing else {}) | ({"t_grad": True} if t_grad else {})
    before = [a.copy() for a in (first, t, weight) if a is not None]
    out, cache = module.forward(first, t, weight, **keywords)
    tensor, target_tensor = torch.tensor(first, requires_grad=True), torch.tensor(t, requires_grad=t_grad)
    expected = _torch_loss(name, tensor, target_tensor, None if weight is None else torch.tensor(weight),
                           ignore_index, smoothing, reduction)
    rtol, atol = (1e-10, 1e-12) if dtype == np.float64 else (2e-5, 1e-6)
    assert np.asarray(out).dtype == dtype and np.shape(out) == tuple(expected.shape)
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=rtol, atol=atol)
    dout = rng.standard_normal(np.shape(out)).astype(dtype)
    expected.backward(torch.tensor(dout))
    grads = module.backward(dout if np.ndim(out) else float(dout), cache)
    first_name = get(name).inputs[0].name
    assert set(grads) == {first_name} | ({"t"} if t_grad else set())
    for got, want, like in [(grads[first_name], tensor, first)] + ([(grads["t"], target_tensor, t)] if t_grad else []):
        assert got.dtype == dtype and got.shape == like.shape
        np.testing.assert_allclose(got, want.grad.numpy(), rtol=rtol, atol=atol)
    for array, copy in zip([a for a in (first, t, weight) if a is not None], before):
        np.testing.assert_array_equal(array, copy)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("trailing", [(5,), (2, 3)])
@pytest.mark.parametrize("name, target", [(name, target) for name in CROSS_ENTROPIES
                                          for target in ("labels", "probabilities", "unnormalized")])
def test_more_axes_after_the_class_axis_are_more_samples_as_in_pytorch(name, target, trailing, reduction, dtype, rng):
    """z[N, K, d...] with labels t[N, d...] (some ignored) or probabilities t[N, K, d...]: the class axis is
    axis 1, the others samples (the mean over all of them, weighted); reduction='none' gives (N, d...).
    Values and every gradient (t's too) against PyTorch, with a weight and label smoothing, inputs unchanged."""
    torch = pytest.importorskip("torch")
    module = __import__(f"generated.{name}", fromlist=["forward"])
    n, k = 3, 4
    shape = (n, k, *trailing)
    first = (rng.standard_normal(shape) if name == "softmax_cross_entropy" else rng.uniform(0.05, 1.0, shape))
    first = (first / first.sum(axis=1, keepdims=True) if name == "cross_entropy" else first).astype(dtype)
    if target == "labels":
        t = rng.integers(0, k, (n, *trailing))
        t[0, 1] = t[2, 0] = -100
    else:
        t = rng.uniform(0.1, 1.0, shape).astype(dtype)
        t = t / t.sum(axis=1, keepdims=True) if target == "probabilities" else t
    t_grad = target != "labels"
    weight = rng.uniform(0.5, 2.0, k).astype(dtype)
    smoothing = 0.1 if name == "softmax_cross_entropy" else 0.0
    keywords = {"reduction": reduction, "t_grad": t_grad} | ({"label_smoothing": smoothing} if smoothing else {})
    before = [a.copy() for a in (first, t, weight)]
    out, cache = module.forward(first, t, weight, **keywords)
    tensor, target_tensor = torch.tensor(first, requires_grad=True), torch.tensor(t, requires_grad=t_grad)
    expected = _torch_loss(name, tensor, target_tensor, torch.tensor(weight), None, smoothing, reduction)
    rtol, atol = (1e-10, 1e-12) if dtype == np.float64 else (2e-5, 1e-6)
    assert np.asarray(out).dtype == dtype and np.shape(out) == tuple(expected.shape)
    assert np.shape(out) == ((n, *trailing) if reduction == "none" else ())
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=rtol, atol=atol)
    dout = rng.standard_normal(np.shape(out)).astype(dtype)
    expected.backward(torch.tensor(dout))
    grads = module.backward(dout if np.ndim(out) else float(dout), cache)
    first_name = get(name).inputs[0].name
    assert set(grads) == {first_name} | ({"t"} if t_grad else set())
    for got, want, like in [(grads[first_name], tensor, first)] + ([(grads["t"], target_tensor, t)] if t_grad else []):
        assert got.dtype == dtype and got.shape == like.shape
        np.testing.assert_allclose(got, want.grad.numpy(), rtol=rtol, atol=atol)
    for array, copy in zip((first, t, weight), before):
        np.testing.assert_array_equal(array, copy)


@pytest.mark.parametrize("name", CROSS_ENTROPIES)
@pytest.mark.parametrize("t_shape, message", [
    ((2, 5), r"^t: expected shape \(2, 3, 4\) like (z|y), or \(2, 4\) \(labels, (z|y)'s without its class axis 1\), "
             r"got \(2, 5\)$"),
    ((2, 4, 3), r"^t: expected shape \(2, 3, 4\) like (z|y), or \(2, 4\) .*got \(2, 4, 3\)$"),
    ((2,), r"^t: expected shape \(2, 3, 4\) like (z|y), or \(2, 4\) .*got \(2,\)$"),
])
def test_targets_beside_more_axes_must_have_the_samples_shape(name, t_shape, message, rng):
    module = __import__(f"generated.{name}", fromlist=["forward"])
    first = rng.uniform(0.1, 1.0, (2, 3, 4))
    with pytest.raises(ValueError, match=message):
        module.forward(first, rng.integers(0, 3, t_shape))
    with pytest.raises(ValueError, match=message):
        module.forward(first, rng.uniform(0.1, 1.0, t_shape))


@pytest.mark.parametrize("name", CROSS_ENTROPIES)
def test_the_per_sample_gradient_beside_more_axes_has_their_shape(name, rng):
    module = __import__(f"generated.{name}", fromlist=["forward"])
    out, cache = module.forward(rng.uniform(0.1, 1.0, (2, 3, 4)), rng.integers(0, 3, (2, 4)), reduction="none")
    assert out.shape == (2, 4)
    for dout, shape in ((np.ones(8), r"\(8,\)"), (1.0, r"\(\)")):
        with pytest.raises(ValueError, match=rf"^dout: expected the output's shape \(2, 4\), got {shape}$"):
            module.backward(dout, cache)
    assert module.backward(np.ones((2, 4)), cache)[get(name).inputs[0].name].shape == (2, 3, 4)


@pytest.mark.parametrize("name", CROSS_ENTROPIES)
def test_ignore_index_with_probability_targets_is_refused_as_pytorch_does(name, rng):
    module = __import__(f"generated.{name}", fromlist=["forward"])
    t = np.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"^ignore_index: expected ignore_index < 0, got 1$"):
        module.forward(rng.uniform(0.1, 1.0, (2, 3)), t, ignore_index=1)


def test_bad_options_are_value_errors_naming_them(rng):
    from generated import softmax_cross_entropy as sce
    z, labels = rng.standard_normal((2, 3)), np.array([0, 2])
    with pytest.raises(ValueError, match=r"^label_smoothing: expected 0 <= label_smoothing <= 1, got 1.5$"):
        sce.forward(z, labels, label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"^weight: expected shape \(K\) = \(3,\), got \(2,\)$"):
        sce.forward(z, labels, np.ones(2))
    with pytest.raises(ValueError, match=r"^t: expected indices in 0\.\.2 or -100, got values from 0 to 5$"):
        sce.forward(z, np.array([0, 5]))


def test_an_unused_option_is_a_form_without_it():
    """The default form has no weight, no ignore bracket and no smoothing in its definition: it
    costs what it cost before the options came."""
    op = get("softmax_cross_entropy")
    assert dict(op.chosen) == {"reduction": "mean", "target": "probabilities", "weight": None, "smoothed": False,
                               "t_grad": False}
    assert [i.name for i in op.inputs] == ["z", "t"]
    assert not op.output.definition.free_symbols & {h.symbol for h in op.hyper}
    assert len(op.all_forms) == 60 and len(get("cross_entropy").all_forms) == 18


@pytest.mark.parametrize("rows", [1.0, 0.5, 3.0])
def test_soft_targets_whose_rows_do_not_sum_to_1_run_the_general_form(rows, rng):
    """Rows summing to 1 run the textbook's form (y - t); any other sums the form derived without that
    assumption, y sum_j t_nj - t_nk: the gradient that holds in general, as F.cross_entropy computes."""
    from generated import softmax_cross_entropy as sce
    z, t = rng.standard_normal((3, 4)), rng.uniform(0.1, 1.0, (3, 4))
    t *= rows / t.sum(axis=1, keepdims=True)
    loss, cache = sce.forward(z, t)
    assert cache["form"][1] == ("probabilities" if rows == 1.0 else "unnormalized")
    y = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(sce.backward(cache)["z"], (y * t.sum(axis=1, keepdims=True) - t) / 3, rtol=1e-12)
    general = derive(get("softmax_cross_entropy").form(target="unnormalized")).gradients[0].expr
    assert "Sum(t[n, j], (j, 0, K - 1))" in str(general)
    assert str(derive(get("softmax_cross_entropy")).gradients[0].expr) == "g*(-t[n, k] + y[n, k])/N"


@pytest.mark.parametrize("name", ["mse", "half_sse", "huber", "binary_cross_entropy", "bce_with_logits",
                                  "cross_entropy", "softmax_cross_entropy"])
def test_the_target_gradient_is_a_form_of_its_own(name, rng):
    """t_grad=True: t differentiable in the definition, its gradient derived (backward returns "t");
    the default form has none, and integer labels refuse one."""
    op = get(name)
    assert not op.input("t").differentiable and op.form(t_grad=True).input("t").differentiable
    assert [g.input.name for g in derive(op.form(t_grad=True)).gradients][-1] == "t"
    if name in CROSS_ENTROPIES:
        module = __import__(f"generated.{name}", fromlist=["forward"])
        with pytest.raises(ValueError, match=r"^t_grad: integer class labels have no gradient$"):
            module.forward(rng.uniform(0.1, 1.0, (2, 3)), np.array([0, 1]), t_grad=True)
        with pytest.raises(ValueError, match=r"^t_grad: integer class labels have no gradient$"):
            op.form(target="labels", t_grad=True)


def test_the_target_gradient_is_finite_where_a_probability_underflows():
    """dE/dt = -log y / N, computed as z - log sum e^z: 2000/N where y = e^{-2000} is 0 and log y -inf."""
    from generated import softmax_cross_entropy as sce
    _, cache = sce.forward(np.array([[1000.0, -1000.0, 5.0]]), np.array([[0.2, 0.3, 0.5]]), t_grad=True)
    np.testing.assert_allclose(sce.backward(cache)["t"], [[0.0, 2000.0, 995.0]], atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5)])
@pytest.mark.parametrize("name, weighted, smoothing", [(name, weighted, smoothing) for name in CROSS_ENTROPIES
                                                       for weighted in (False, True)
                                                       for smoothing in ((0.0, 0.1) if name == "softmax_cross_entropy"
                                                                         else (0.0,))])
@pytest.mark.filterwarnings("error")
def test_the_mean_over_no_sample_is_nan_with_a_zero_gradient_as_in_pytorch(name, weighted, smoothing, shape, dtype,
                                                                           rng):
    """Every label ignore_index, reduction='mean': PyTorch's loss is nan (0/0) and its gradient 0; ours
    too, and without NumPy's 'invalid value' or 'divide by zero' warning (warnings are errors here)."""
    torch = pytest.importorskip("torch")
    module = __import__(f"generated.{name}", fromlist=["forward"])
    first = rng.uniform(0.1, 1.0, shape).astype(dtype)
    first = first / first.sum(axis=1, keepdims=True) if name == "cross_entropy" else first
    t = np.full(shape[:1] + shape[2:], -100)
    weight = rng.uniform(0.5, 2.0, shape[1]).astype(dtype) if weighted else None
    out, cache = module.forward(first, t, weight, **({"label_smoothing": smoothing} if smoothing else {}))
    grad = module.backward(cache)[get(name).inputs[0].name]
    tensor = torch.tensor(first, requires_grad=True)
    expected = _torch_loss(name, tensor, torch.tensor(t), None if weight is None else torch.tensor(weight), None,
                           smoothing, "mean")
    expected.backward()
    assert np.isnan(out) and np.isnan(expected.item()) and np.asarray(out).dtype == dtype
    assert grad.dtype == dtype and grad.shape == shape
    np.testing.assert_array_equal(grad, tensor.grad.numpy())
    assert not grad.any()
