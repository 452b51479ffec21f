"""Each op against PyTorch's own function (CONTRACT.md's last column): forward and every gradient.

PyTorch is an optional extra; without it these tests are skipped.
"""
import numpy as np
import pytest

from derive.define.forms import keywords
from derive.engine import check

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _cell(kind, x, h, *rest):
    """PyTorch's own recurrent cell (nn.RNNCell, nn.GRUCell; nn.LSTMCell with the cell state c before
    the weights) run with these tensors as its weights."""
    *c, W_ih, W_hh, b_ih, b_hh = rest
    cell = getattr(torch.nn, kind)(x.shape[-1], h.shape[-1], dtype=x.dtype)
    weights = {"weight_ih": W_ih, "weight_hh": W_hh, "bias_ih": b_ih, "bias_hh": b_hh}
    return torch.func.functional_call(cell, weights, (x, (h, *c) if c else h))


def _matches(op, out, expected, dout, rtol, atol):
    """The outputs (one or several) equal PyTorch's; then PyTorch's backward from the same upstream."""
    expected = check.as_outputs(op, expected)
    for got, want in zip(check.as_outputs(op, out), expected):
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=rtol, atol=atol)
    torch.autograd.backward(expected, [torch.tensor(g) for g in check.as_outputs(op, dout)])


def _arguments(hyper: dict) -> list:
    """The hyper-parameters and options a reference takes, in order: not t_grad, which is PyTorch's
    t.requires_grad (set on the tensors from the form's differentiable inputs)."""
    return [v for k, v in hyper.items() if k != "t_grad"]


def _reduced(losses, reduction):
    """Per-sample (or per-element) losses reduced as PyTorch's ``reduction`` does."""
    return {"mean": losses.mean, "sum": losses.sum, "none": lambda: losses}[reduction]()


def _ce(y, t, ignore_index=-100, reduction="mean"):
    if not t.is_floating_point():  # class labels: PyTorch's negative log-likelihood of log y
        return F.nll_loss(torch.log(y), t, ignore_index=ignore_index, reduction=reduction)
    return _reduced(-(t * torch.log(y)).sum(-1), reduction)


def _half_sse(y, t, reduction="mean"):
    """Ours (README, "Options"): the article's E = sum_k (t - y)^2 / 2 of each sample, then reduced."""
    return _reduced(0.5 * ((t - y) ** 2).sum(-1), reduction)


#: op name -> torch function of the op's inputs (as tensors) and hyper-parameters.
REFERENCE = {
    "linear": lambda x, W, b: F.linear(x, W, b),
    "sigmoid": lambda x: torch.sigmoid(x),
    "tanh": lambda x: torch.tanh(x),
    "relu": lambda x: F.relu(x),
    "leaky_relu": lambda x, alpha: F.leaky_relu(x, alpha),
    "softmax": lambda x, dim=-1: F.softmax(x, dim),
    "half_sse": _half_sse,
    "mse": lambda y, t, reduction="mean": F.mse_loss(y, t, reduction=reduction),
    "cross_entropy": _ce,
    "softmax_cross_entropy": lambda z, t, ignore_index=-100, label_smoothing=0.0, reduction="mean": F.cross_entropy(
        z, t, ignore_index=ignore_index, label_smoothing=label_smoothing, reduction=reduction),
    "batch_norm": lambda x, gamma, beta, eps: F.batch_norm(x, None, None, gamma, beta, training=True, eps=eps),
    "batch_norm_eval": lambda x, gamma, beta, running_mean, running_var, eps: F.batch_norm(
        x, running_mean, running_var, gamma, beta, training=False, eps=eps),
    "layer_norm": lambda x, gamma, beta, eps: F.layer_norm(x, (x.shape[-1],), gamma, beta, eps),
    "dropout": lambda x, mask, p: x * mask / (1 - p),
    "conv2d": lambda x, W, b, stride, padding, dilation, groups: F.conv2d(x, W, b, stride=stride, padding=padding,
                                                                          dilation=dilation, groups=groups),
    "max_pool2d": lambda x, kernel, stride, padding, dilation, ceil_mode=False: F.max_pool2d(
        x, kernel, stride, padding, dilation, ceil_mode),
    "avg_pool2d": lambda x, kernel, stride, padding, ceil_mode=False, count_include_pad=True: F.avg_pool2d(
        x, kernel, stride, padding, ceil_mode, count_include_pad),
    "flatten": lambda x: torch.flatten(x, 1),
    "gelu": lambda x: F.gelu(x),
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": lambda x: F.silu(x),
    "softplus": lambda x, beta: F.softplus(x, beta, threshold=float("inf")),
    "elu": lambda x, alpha: F.elu(x, alpha),
    "prelu": lambda x, a: F.prelu(x, a),
    "log_softmax": lambda x, dim=-1: F.log_softmax(x, dim),
    "binary_cross_entropy": lambda y, t, reduction="mean": F.binary_cross_entropy(y, t, reduction=reduction),
    "bce_with_logits": lambda z, t, reduction="mean": F.binary_cross_entropy_with_logits(z, t, reduction=reduction),
    "huber": lambda y, t, delta, reduction="mean": F.huber_loss(y, t, reduction=reduction, delta=delta),
    "rms_norm": lambda x, gamma, eps: F.rms_norm(x, (x.shape[-1],), gamma, eps),
    "rnn_cell": lambda *tensors: _cell("RNNCell", *tensors),
    "embedding": lambda idx, W: F.embedding(idx, W),
    "attention": lambda q, k, v, causal=False: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
    "group_norm": lambda x, gamma, beta, groups, eps: F.group_norm(x, groups, gamma, beta, eps),
    "gru_cell": lambda *tensors: _cell("GRUCell", *tensors),
    "lstm_cell": lambda *tensors: _cell("LSTMCell", *tensors),
}

ELEMENTWISE = [(7,), (2, 3, 4), (1, 1)]
#: Shapes of each input, several per op: any shape for the elementwise ops and the losses, any leading
#: axes for the row ops, [N, C, ...] with any trailing axes for PReLU.
SHAPES = {
    **{name: [(shape,) for shape in ELEMENTWISE] for name in ("gelu", "gelu_tanh", "silu", "softplus", "elu")},
    **{name: [(shape, shape) for shape in ELEMENTWISE]
       for name in ("binary_cross_entropy", "bce_with_logits", "huber")},
    "prelu": [((4, 3), (3,)), ((2, 3, 5), (3,)), ((2, 3, 4, 5), (3,))],
    "log_softmax": [((5,),), ((3, 7),), ((2, 3, 6),)],
    "rms_norm": [((5,), (5,)), ((3, 7), (7,)), ((2, 3, 6), (6,))],
    "rnn_cell": [((4, 3), (4, 5), (5, 3), (5, 5), (5,), (5,)), ((1, 6), (1, 2), (2, 6), (2, 2), (2,), (2,)),
                 ((7, 1), (7, 4), (4, 1), (4, 4), (4,), (4,))],
    # L = S, more keys than queries and fewer (the causal mask aligned at the top left, as PyTorch's is_causal)
    "flatten": [((3, 4),), ((2, 3, 5),), ((2, 4, 3, 5),)],
    "group_norm": [((3, 4), (4,), (4,)), ((2, 6, 5), (6,), (6,)), ((2, 4, 3, 5), (4,), (4,))],
    "attention": [((2, 4, 3), (2, 4, 3), (2, 4, 5)), ((1, 3, 8), (1, 6, 8), (1, 6, 2)),
                  ((3, 5, 2), (3, 2, 2), (3, 2, 4))],
    "lstm_cell": [((4, 3), (4, 5), (4, 5), (20, 3), (20, 5), (20,), (20,)),
                  ((1, 6), (1, 2), (1, 2), (8, 6), (8, 2), (8,), (8,)),
                  ((7, 1), (7, 4), (7, 4), (16, 1), (16, 4), (16,), (16,))],
    "gru_cell": [((4, 3), (4, 5), (15, 3), (15, 5), (15,), (15,)), ((1, 6), (1, 2), (6, 6), (6, 2), (6,), (6,)),
                 ((7, 1), (7, 4), (12, 1), (12, 4), (12,), (12,)), ((64, 32), (64, 16), (48, 32), (48, 16), (48,), (48,))],
}


def test_every_op_has_a_reference(op):
    assert op.name in REFERENCE, f"add {op.name}'s PyTorch function to REFERENCE"


def test_forward_and_gradients_match_pytorch(op, module, rng):
    if op.name not in REFERENCE:
        pytest.skip("no reference yet")
    inputs = check.sample(op, check.example_sizes(op), rng)
    hyper = check.hyper_values(op)
    out, cache = module.forward(**inputs, **hyper)
    tensors = {k: torch.tensor(v, requires_grad=any(i.name == k for i in op.differentiable))
               for k, v in inputs.items()}
    expected = REFERENCE[op.name](*tensors.values(), *_arguments(hyper))
    dout = np.asarray(1.0) if op.is_loss else check.upstream_like(op, out, rng.standard_normal)
    _matches(op, out, expected, dout, rtol=1e-10, atol=1e-12)
    grads = module.backward(float(dout) if op.is_loss else dout, cache)
    for inp in op.differentiable:
        np.testing.assert_allclose(grads[inp.name], tensors[inp.name].grad.numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=inp.name)


def test_batch_norm_running_statistics_match_pytorch(rng):
    from derive.train import update_running_stats
    from generated import batch_norm
    x = rng.standard_normal((4, 3, 5, 2))
    mean, var = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    _, cache = batch_norm.forward(x, np.ones(3), np.zeros(3))
    new_mean, new_var = update_running_stats(mean, var, cache, momentum=0.2)
    t_mean, t_var = torch.tensor(mean), torch.tensor(var)
    F.batch_norm(torch.tensor(x), t_mean, t_var, training=True, momentum=0.2)
    np.testing.assert_allclose(new_mean, t_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(new_var, t_var.numpy(), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", [0, 1])
@pytest.mark.parametrize("name, shapes", [(name, shapes) for name, all_shapes in SHAPES.items()
                                          for shapes in all_shapes])
def test_several_shapes_and_both_dtypes_match_pytorch(name, shapes, case, dtype, rng):
    """Values and every gradient at several shapes, each hyper-parameter case, in float64 and float32
    (PyTorch computing in the same dtype; float32 within its rounding)."""
    import importlib
    from derive.define.registry import get
    op = get(name)
    module = importlib.import_module(f"generated.{name}")
    inputs = {inp.name: check._draw(inp.domain, shape, rng).astype(dtype) for inp, shape in zip(op.inputs, shapes)}
    hyper = check.hyper_values(op, case)
    if case and not op.hyper and op.forms:  # an op whose options are forms (attention's causal): the second
        hyper = keywords(op.forms[0])
    out, cache = module.forward(**inputs, **hyper)
    assert all(np.asarray(y).dtype == dtype for y in check.as_outputs(op, out))
    tensors = {k: torch.tensor(v, requires_grad=any(i.name == k for i in op.differentiable)) for k, v in inputs.items()}
    expected = REFERENCE[name](*tensors.values(), *_arguments(hyper))
    rtol, atol = (1e-10, 1e-12) if dtype == np.float64 else (2e-5, 1e-6)
    dout = np.asarray(1.0, dtype) if op.is_loss else \
        check.upstream_like(op, out, lambda shape: rng.standard_normal(shape).astype(dtype))
    _matches(op, out, expected, dout, rtol, atol)
    grads = module.backward(float(dout) if op.is_loss else dout, cache)
    for inp in op.differentiable:
        assert grads[inp.name].dtype == dtype and grads[inp.name].shape == inputs[inp.name].shape, inp.name
        np.testing.assert_allclose(grads[inp.name], tensors[inp.name].grad.numpy(), rtol=rtol, atol=atol,
                                   err_msg=inp.name)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("idx_shape", [(7,), (3, 5), (2, 3, 4), ()])
def test_embedding_of_any_index_shape_matches_pytorch(idx_shape, dtype, rng):
    """idx of shape [N], [N, L], more axes or none; repeated ids, whose rows sum their gradients."""
    from generated import embedding
    W = rng.standard_normal((6, 4)).astype(dtype)
    idx = rng.integers(0, 6, idx_shape)
    out, cache = embedding.forward(idx, W)
    assert out.shape == idx_shape + (4,) and out.dtype == dtype
    tW = torch.tensor(W, requires_grad=True)
    expected = F.embedding(torch.tensor(idx), tW)
    np.testing.assert_array_equal(out, expected.detach().numpy())
    dout = rng.standard_normal(out.shape).astype(dtype)
    expected.backward(torch.tensor(dout))
    grads = embedding.backward(dout, cache)
    assert grads["W"].dtype == dtype and grads["W"].shape == W.shape
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(grads["W"], tW.grad.numpy(), rtol=rtol, atol=rtol)


def test_causal_attention_ignores_the_keys_after_each_query(rng):
    """Changing the keys and values after query l changes nothing at l (and does without the mask)."""
    from generated import attention
    q, k, v = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 5, 4))
    k2, v2 = k.copy(), v.copy()
    k2[:, 3:], v2[:, 3:] = rng.standard_normal((2, 2, 3)), rng.standard_normal((2, 2, 4))
    masked, _ = attention.forward(q, k, v, causal=True)
    changed, _ = attention.forward(q, k2, v2, causal=True)
    np.testing.assert_allclose(masked[:, :3], changed[:, :3], rtol=1e-13)
    assert not np.allclose(masked[:, 3:], changed[:, 3:])
    assert not np.allclose(attention.forward(q, k, v)[0][:, :3], attention.forward(q, k2, v2)[0][:, :3])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape, groups", [((2, 6, 4, 3), 3), ((2, 6, 4, 3), 6), ((3, 8, 5), 4), ((2, 5), 5)])
def test_group_norm_with_several_groups_matches_pytorch(shape, groups, dtype, rng):
    """groups > 1 and groups = C (instance norm), values and every gradient."""
    from generated import group_norm
    C = shape[1]
    x = rng.standard_normal(shape).astype(dtype)
    gamma, beta = rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)
    out, cache = group_norm.forward(x, gamma, beta, groups=groups)
    tensors = [torch.tensor(a, requires_grad=True) for a in (x, gamma, beta)]
    expected = F.group_norm(tensors[0], groups, tensors[1], tensors[2], 1e-5)
    rtol, atol = (1e-10, 1e-12) if dtype == np.float64 else (2e-5, 2e-5)
    assert out.dtype == dtype and out.shape == shape
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=rtol, atol=atol)
    dout = rng.standard_normal(shape).astype(dtype)
    expected.backward(torch.tensor(dout))
    grads = group_norm.backward(dout, cache)
    for name, t in zip(("x", "gamma", "beta"), tensors):
        assert grads[name].dtype == dtype and grads[name].shape == t.shape, name
        np.testing.assert_allclose(grads[name], t.grad.numpy(), rtol=rtol, atol=atol * 10, err_msg=name)


def test_group_norm_refuses_groups_that_do_not_divide_the_channels(rng):
    from generated import group_norm
    with pytest.raises(ValueError, match=r"^groups: expected a divisor of C = 6, got 4"):
        group_norm.forward(rng.standard_normal((2, 6, 3)), np.ones(6), np.zeros(6), groups=4)
