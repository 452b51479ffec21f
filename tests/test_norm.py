"""Normalisation layers: both input layouts, huge means, a batch of one, running statistics, the compact form."""
import re

import numpy as np
import pytest
import sympy as sp

from derive.engine import check
from derive.engine.derivation import derive
from derive.define.registry import get
from derive.train import update_running_stats
from generated import batch_norm, batch_norm_eval, dropout, layer_norm


def reference_batch_norm(x, gamma, beta, eps=1e-5):
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    return gamma.reshape(shape) * (x - mean) / np.sqrt(var + eps) + beta.reshape(shape)


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (2, 3, 4, 5)], ids=["NC", "NCL", "NCHW"])
def test_batch_norm_on_every_layout(shape, rng):
    x, gamma, beta = rng.standard_normal(shape), rng.standard_normal(3), rng.standard_normal(3)
    out, _ = batch_norm.forward(x, gamma, beta)
    assert out.shape == shape
    np.testing.assert_allclose(out, reference_batch_norm(x, gamma, beta), rtol=1e-12, atol=1e-12)
    op = get("batch_norm")
    result = check.finite_differences(op, batch_norm, {"x": x, "gamma": gamma, "beta": beta}, {})
    assert result.passed, result.errors


@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1), (1, 3, 1, 1), (2, 3), (1, 3, 2), (1, 3, 1, 2)])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_refuses_one_value_per_channel_as_pytorch_does(shape, affine, rng):
    """m = 1 value per channel: its variance is 0, the output beta whatever x; PyTorch raises, and so do we."""
    x = rng.standard_normal(shape)
    gamma, beta = (rng.standard_normal(3), rng.standard_normal(3)) if affine else (None, None)
    one_value = np.prod(shape) // shape[1] == 1
    if one_value:
        with pytest.raises(ValueError, match=r"^x: expected more than 1 value per channel when training, got shape "
                                             + re.escape(str(shape))):
            batch_norm.forward(x, gamma, beta)
    else:
        np.testing.assert_allclose(batch_norm.forward(x, gamma, beta)[0], reference_batch_norm(
            x, *((gamma, beta) if affine else (np.ones(3), np.zeros(3)))), rtol=1e-12, atol=1e-12)
    torch = pytest.importorskip("torch")
    as_tensor = (lambda a: None if a is None else torch.from_numpy(a))
    try:
        torch.nn.functional.batch_norm(torch.from_numpy(x), None, None, as_tensor(gamma), as_tensor(beta), training=True)
        raised = False
    except ValueError:
        raised = True
    assert raised == one_value


def test_batch_norm_is_exact_for_a_huge_mean_and_a_tiny_spread(rng):
    """x = 1e4 + 1e-3 z: the two-pass variance keeps the spread; the results equal those for z."""
    z = rng.standard_normal((8, 2, 3))
    gamma, beta = rng.standard_normal(2), rng.standard_normal(2)
    dout = rng.standard_normal(z.shape)
    out_big, cache_big = batch_norm.forward(1e4 + 1e-3 * z, gamma, beta)
    out_small, cache_small = batch_norm.forward(1e-3 * z, gamma, beta, eps=1e-5)
    exact = reference_batch_norm(np.longdouble(1e4) + np.longdouble(1e-3) * z.astype(np.longdouble),
                                 gamma.astype(np.longdouble), beta.astype(np.longdouble))
    np.testing.assert_allclose(out_big, exact.astype(np.float64), rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(out_big, out_small, rtol=1e-6, atol=1e-7)
    grads_big, grads_small = batch_norm.backward(dout, cache_big), batch_norm.backward(dout, cache_small)
    for name in grads_big:
        np.testing.assert_allclose(grads_big[name], grads_small[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_batch_norm_float32_with_a_large_mean(rng):
    x = (1e4 + rng.standard_normal((16, 4, 3))).astype(np.float32)
    gamma, beta = np.ones(4, np.float32), np.zeros(4, np.float32)
    out, cache = batch_norm.forward(x, gamma, beta)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, reference_batch_norm(x.astype(np.float64), gamma, beta), atol=5e-3)
    assert all(g.dtype == np.float32 for g in batch_norm.backward(np.ones_like(out), cache).values())


@pytest.mark.parametrize("shape", [(1, 7), (7,), (2, 3, 7)], ids=["N=1", "one row", "3-d"])
def test_layer_norm_on_any_leading_axes(shape, rng):
    x, gamma, beta = rng.standard_normal(shape), rng.standard_normal(7), rng.standard_normal(7)
    out, _ = layer_norm.forward(x, gamma, beta)
    expected = gamma * (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) + beta
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    result = check.finite_differences(get("layer_norm"), layer_norm, {"x": x, "gamma": gamma, "beta": beta}, {})
    assert result.passed, result.errors


def test_layer_norm_with_a_huge_mean(rng):
    z = rng.standard_normal((3, 6))
    gamma, beta = rng.standard_normal(6), rng.standard_normal(6)
    np.testing.assert_allclose(layer_norm.forward(1e4 + 1e-3 * z, gamma, beta)[0],
                               layer_norm.forward(1e-3 * z, gamma, beta)[0], rtol=1e-6, atol=1e-7)


def test_dropout_scales_what_it_keeps(rng):
    x, mask = rng.standard_normal((4, 5)), rng.random((4, 5)) >= 0.3
    out, cache = dropout.forward(x, mask, p=0.3)
    np.testing.assert_array_equal(out, np.where(mask, x / 0.7, 0.0))
    np.testing.assert_array_equal(dropout.backward(np.ones_like(x), cache)["x"], np.where(mask, 1 / 0.7, 0.0))


def test_running_statistics_use_the_unbiased_variance(rng):
    x = rng.standard_normal((5, 2, 3))
    _, cache = batch_norm.forward(x, np.ones(2), np.zeros(2))
    mean, var = update_running_stats(np.zeros(2), np.ones(2), cache, momentum=0.1)
    np.testing.assert_allclose(mean, 0.1 * x.mean(axis=(0, 2)))
    np.testing.assert_allclose(var, 0.9 + 0.1 * x.var(axis=(0, 2), ddof=1))


def test_inference_mode_normalises_by_the_running_statistics(rng):
    x, gamma, beta = rng.standard_normal((4, 3, 2)), rng.standard_normal(3), rng.standard_normal(3)
    mean, var = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    out, _ = batch_norm_eval.forward(x, gamma, beta, mean, var)
    expected = gamma[:, None] * (x - mean[:, None]) / np.sqrt(var[:, None] + 1e-5) + beta[:, None]
    np.testing.assert_allclose(out, expected, rtol=1e-12)


@pytest.mark.parametrize("name", ["batch_norm", "layer_norm"])
def test_input_gradient_comes_out_compact(name):
    """gamma rstd / m (m g - sum g - xhat sum g xhat): one product, three terms, no raw input, no variance."""
    grad = derive(get(name)).gradient("x")
    expr = grad.expr
    assert isinstance(expr, sp.Mul)
    (inner,) = [f for f in expr.args if isinstance(f, sp.Add)]
    assert len(inner.args) == 3
    names = {str(e.base.label) for e in sp.preorder_traversal(expr) if isinstance(e, sp.Indexed)}
    assert names <= {"g", "gamma", "rstd", "xhat"}
    assert [s.name for s in grad.steps][-2:] == ["apply identities", "textbook form"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("gamma, beta", [("given", "given"), ("given", None), (None, None)])
@pytest.mark.parametrize("shape, k", [((2, 3, 4), 2), ((2, 3, 4), 3), ((4, 5), 1), ((2, 3, 4, 5), 2), ((3, 1, 6), 2)])
def test_layer_norm_over_several_trailing_axes_matches_pytorch(shape, k, gamma, beta, dtype, rng):
    """normalized_ndim=k normalises the last k axes together, as F.layer_norm(x, x.shape[-k:]); gamma and
    beta have those axes' shape, and so do their gradients."""
    torch = pytest.importorskip("torch")
    row = shape[-k:]
    x = (3 * rng.standard_normal(shape) + 1).astype(dtype)
    params = {name: rng.standard_normal(row).astype(dtype) for name, given in (("gamma", gamma), ("beta", beta))
              if given}
    inputs = {"x": x, **params}
    before = {name: v.copy() for name, v in inputs.items()}
    out, cache = layer_norm.forward(**inputs, normalized_ndim=k)
    tensors = {name: torch.tensor(v, requires_grad=True) for name, v in inputs.items()}
    expected = torch.nn.functional.layer_norm(tensors["x"], row, tensors.get("gamma"), tensors.get("beta"))
    rtol, atol = (1e-10, 1e-12) if dtype == np.float64 else (2e-4, 2e-4)
    assert out.dtype == dtype and out.shape == shape
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=rtol, atol=atol)
    dout = rng.standard_normal(shape).astype(dtype)
    expected.backward(torch.tensor(dout))
    grads = layer_norm.backward(dout, cache)
    assert set(grads) == set(inputs)
    for name, v in inputs.items():
        assert grads[name].dtype == dtype and grads[name].shape == v.shape, name
        np.testing.assert_allclose(grads[name], tensors[name].grad.numpy(), rtol=rtol, atol=atol, err_msg=name)
    for name in inputs:
        np.testing.assert_array_equal(inputs[name], before[name], err_msg=f"{name} was modified")


def test_layer_norm_over_two_axes_passes_finite_differences(rng):
    x, gamma, beta = rng.standard_normal((2, 3, 4)), rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    out, _ = layer_norm.forward(x, gamma, beta, normalized_ndim=2)
    flat = x.reshape(2, 12)
    expected = (flat - flat.mean(-1, keepdims=True)) / np.sqrt(flat.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(out, gamma * expected.reshape(x.shape) + beta, rtol=1e-12, atol=1e-12)
    result = check.finite_differences(get("layer_norm"), layer_norm, {"x": x, "gamma": gamma, "beta": beta},
                                      {"normalized_ndim": 2})
    assert result.passed, result.errors


@pytest.mark.parametrize("arguments, normalized_ndim, error, words", [
    (((2, 3, 4), (4,), (4,)), 2, ValueError, ["gamma", "(3, 4)", "(4,)"]),
    (((2, 3, 4), (3, 4), (4, 3)), 2, ValueError, ["beta", "(3, 4)", "(4, 3)"]),
    (((2, 3, 4), (3, 4), None), 1, ValueError, ["gamma", "(4,)", "(3, 4)"]),
    (((3, 4), (3, 4), (3, 4)), 3, ValueError, ["x", "3 axes", "(3, 4)"]),
    (((3, 4), (4,), (4,)), 0, ValueError, ["normalized_ndim", "0"]),
    (((3, 4), (4,), (4,)), 1.0, TypeError, ["normalized_ndim", "1.0"]),
    (((3, 4), (4,), (4,)), True, TypeError, ["normalized_ndim", "True"]),
])
def test_layer_norm_refuses_a_bad_normalized_ndim_or_parameter_shape(arguments, normalized_ndim, error, words, rng):
    x, gamma, beta = (None if s is None else rng.standard_normal(s) for s in arguments)
    with pytest.raises(error) as raised:
        layer_norm.forward(x, gamma, beta, normalized_ndim=normalized_ndim)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(words[0] + ":") and all(w in message for w in words), message


def test_layer_norm_backward_refuses_dout_of_another_shape(rng):
    x = rng.standard_normal((2, 3, 4))
    _, cache = layer_norm.forward(x, np.ones((3, 4)), np.zeros((3, 4)), normalized_ndim=2)
    with pytest.raises(ValueError, match=r"^dout: expected the output's shape \(2, 3, 4\), got \(2, 12\)"):
        layer_norm.backward(np.ones((2, 12)), cache)
