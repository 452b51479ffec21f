"""Each op against PyTorch's own function (CONTRACT.md's last column): forward and every gradient.

PyTorch is an optional extra; without it these tests are skipped.
"""
import numpy as np
import pytest

from derive.engine import check

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _cell(kind, x, h, W_ih, W_hh, b_ih, b_hh):
    """PyTorch's own recurrent cell (nn.RNNCell, nn.GRUCell) run with these tensors as its weights."""
    cell = getattr(torch.nn, kind)(x.shape[-1], h.shape[-1], dtype=x.dtype)
    weights = {"weight_ih": W_ih, "weight_hh": W_hh, "bias_ih": b_ih, "bias_hh": b_hh}
    return torch.func.functional_call(cell, weights, (x, h))


def _ce(y, t):
    return -(t * torch.log(y)).sum() / y.shape[0]


#: op name -> torch function of the op's inputs (as tensors) and hyper-parameters.
REFERENCE = {
    "linear": lambda x, W, b: F.linear(x, W, b),
    "sigmoid": lambda x: torch.sigmoid(x),
    "tanh": lambda x: torch.tanh(x),
    "relu": lambda x: F.relu(x),
    "leaky_relu": lambda x, alpha: F.leaky_relu(x, alpha),
    "softmax": lambda x: F.softmax(x, -1),
    "half_sse": lambda y, t: 0.5 * F.mse_loss(y, t, reduction="sum") / y.shape[0],
    "mse": lambda y, t: F.mse_loss(y, t),
    "cross_entropy": _ce,
    "softmax_cross_entropy": lambda z, t: F.cross_entropy(z, t),
    "batch_norm": lambda x, gamma, beta, eps: F.batch_norm(x, None, None, gamma, beta, training=True, eps=eps),
    "batch_norm_eval": lambda x, gamma, beta, running_mean, running_var, eps: F.batch_norm(
        x, running_mean, running_var, gamma, beta, training=False, eps=eps),
    "layer_norm": lambda x, gamma, beta, eps: F.layer_norm(x, (x.shape[-1],), gamma, beta, eps),
    "dropout": lambda x, mask, p: x * mask / (1 - p),
    "conv2d": lambda x, W, b, stride, padding: F.conv2d(x, W, b, stride=stride, padding=padding),
    "max_pool2d": lambda x, kernel, stride: F.max_pool2d(x, kernel, stride),
    "avg_pool2d": lambda x, kernel, stride: F.avg_pool2d(x, kernel, stride),
    "gelu": lambda x: F.gelu(x),
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": lambda x: F.silu(x),
    "softplus": lambda x, beta: F.softplus(x, beta, threshold=float("inf")),
    "elu": lambda x, alpha: F.elu(x, alpha),
    "prelu": lambda x, a: F.prelu(x, a),
    "log_softmax": lambda x: F.log_softmax(x, -1),
    "binary_cross_entropy": lambda y, t: F.binary_cross_entropy(y, t),
    "bce_with_logits": lambda z, t: F.binary_cross_entropy_with_logits(z, t),
    "huber": lambda y, t, delta: F.huber_loss(y, t, delta=delta),
    "rms_norm": lambda x, gamma, eps: F.rms_norm(x, (x.shape[-1],), gamma, eps),
    "rnn_cell": lambda *tensors: _cell("RNNCell", *tensors),
    "gru_cell": lambda *tensors: _cell("GRUCell", *tensors),
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
    expected = REFERENCE[op.name](*tensors.values(), *hyper.values())
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    dout = np.asarray(1.0) if op.is_loss else rng.standard_normal(np.shape(out))
    expected.backward(torch.tensor(dout))
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
    out, cache = module.forward(**inputs, **hyper)
    assert np.asarray(out).dtype == dtype
    tensors = {k: torch.tensor(v, requires_grad=any(i.name == k for i in op.differentiable)) for k, v in inputs.items()}
    expected = REFERENCE[name](*tensors.values(), *hyper.values())
    rtol, atol = (1e-10, 1e-12) if dtype == np.float64 else (2e-5, 1e-6)
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=rtol, atol=atol)
    dout = np.asarray(1.0, dtype) if op.is_loss else rng.standard_normal(np.shape(out)).astype(dtype)
    expected.backward(torch.tensor(dout))
    grads = module.backward(float(dout) if op.is_loss else dout, cache)
    for inp in op.differentiable:
        assert grads[inp.name].dtype == dtype and grads[inp.name].shape == inputs[inp.name].shape, inp.name
        np.testing.assert_allclose(grads[inp.name], tensors[inp.name].grad.numpy(), rtol=rtol, atol=atol,
                                   err_msg=inp.name)
