"""What a user would run instead of our generated code, keyed by op name.

* ``torch_reference(op)``: the PyTorch function from the last column of
  ``shared/CONTRACT.md``, with our argument and hyper-parameter names;
  PyTorch's autograd computes its backward.
* ``autograd_reference(op)``: the forward formula written with
  ``autograd.numpy``; HIPS autograd computes its backward. This is a
  reference for timing and cross-checking, not our product.
* ``BARE``: the least work that computes the same thing, where there is a
  clear one (``linear``: its three matrix products; the normalisations,
  softmax, its cross-entropy and the convolution: a careful hand-written
  NumPy version), as a yardstick of what NumPy can do: where the generated
  code misses a floor and this misses it too, the floor is beyond NumPy.

Both libraries are optional extras (``pip install -e '.[bench]'``); each
lookup returns None when the library or the op's entry is missing. Adding
an op here is one entry per table; its sizes live on the op (``bench_sizes``).
"""
from __future__ import annotations

import importlib.util

import numpy as np


def available(library: str) -> bool:
    """Whether an optional library can be imported (without importing it)."""
    return importlib.util.find_spec(library) is not None


def torch_reference(op):
    """The PyTorch function for ``op`` (an Op or a built-in op's name; keyword arguments named as
    the op's), or None: a user's op brings its own (``Op.torch_reference``)."""
    if not available("torch"):
        return None
    if not isinstance(op, str) and op.torch_reference is not None:
        return op.torch_reference
    return _torch_table().get(op if isinstance(op, str) else op.name)


def autograd_reference(op):
    """The op's forward in ``autograd.numpy`` (keyword arguments named as the op's), or None."""
    if not available("autograd"):
        return None
    return _autograd_table().get(op if isinstance(op, str) else op.name)


def _torch_table() -> dict:
    import torch
    import torch.nn.functional as F

    return {
        "linear": lambda x, W, b: F.linear(x, W, b),
        "sigmoid": lambda x: torch.sigmoid(x),
        "tanh": lambda x: torch.tanh(x),
        "relu": lambda x: F.relu(x),
        "leaky_relu": lambda x, alpha=0.01: F.leaky_relu(x, alpha),
        "softmax": lambda x: F.softmax(x, -1),
        "half_sse": lambda y, t: 0.5 * F.mse_loss(y, t, reduction="sum") / y.shape[0],
        "mse": lambda y, t: F.mse_loss(y, t),
        # The contract's F.nll_loss(log y, labels) needs one-hot targets; ours are any probabilities.
        "cross_entropy": lambda y, t, ignore_index=-100: F.nll_loss(torch.log(y), t, ignore_index=ignore_index)
        if not t.is_floating_point() else -(t * torch.log(y)).sum() / y.shape[0],
        "softmax_cross_entropy": lambda z, t, ignore_index=-100, label_smoothing=0.0: F.cross_entropy(
            z, t, ignore_index=ignore_index, label_smoothing=label_smoothing),
        "conv2d": lambda x, W, b, stride=1, padding=0, dilation=1, groups=1: F.conv2d(
            x, W, b, stride=stride, padding=padding, dilation=dilation, groups=groups),
        "max_pool2d": lambda x, kernel=2, stride=None, padding=0, dilation=1, ceil_mode=False: F.max_pool2d(
            x, kernel, stride, padding, dilation, ceil_mode),
        "avg_pool2d": lambda x, kernel=2, stride=None, padding=0, ceil_mode=False, count_include_pad=True: F.avg_pool2d(
            x, kernel, stride, padding, ceil_mode, count_include_pad),
        "flatten": lambda x: torch.flatten(x, 1),
        "batch_norm": lambda x, gamma, beta, eps=1e-5: F.batch_norm(x, None, None, gamma, beta,
                                                                    training=True, eps=eps),
        "batch_norm_eval": lambda x, gamma, beta, running_mean, running_var, eps=1e-5: F.batch_norm(
            x, running_mean, running_var, gamma, beta, training=False, eps=eps),
        "layer_norm": lambda x, gamma, beta, eps=1e-5: F.layer_norm(x, x.shape[-1:], gamma, beta, eps),
        "dropout": lambda x, mask, p=0.5: x * mask / (1 - p),  # PyTorch has no dropout with a given mask
        "gelu": lambda x: F.gelu(x),
        "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
        "silu": lambda x: F.silu(x),
        "softplus": lambda x, beta=1.0: F.softplus(x, beta, threshold=float("inf")),
        "elu": lambda x, alpha=1.0: F.elu(x, alpha),
        "prelu": lambda x, a: F.prelu(x, a),
        "log_softmax": lambda x: F.log_softmax(x, -1),
        "binary_cross_entropy": lambda y, t: F.binary_cross_entropy(y, t),
        "bce_with_logits": lambda z, t: F.binary_cross_entropy_with_logits(z, t),
        "huber": lambda y, t, delta=1.0: F.huber_loss(y, t, delta=delta),
        "rms_norm": lambda x, gamma, eps=1e-6: F.rms_norm(x, x.shape[-1:], gamma, eps),
        "rnn_cell": lambda x, h, W_ih, W_hh, b_ih, b_hh: torch.func.functional_call(  # nn.RNNCell, these weights
            torch.nn.RNNCell(x.shape[-1], h.shape[-1], dtype=x.dtype),
            {"weight_ih": W_ih, "weight_hh": W_hh, "bias_ih": b_ih, "bias_hh": b_hh}, (x, h)),
        "embedding": lambda idx, W: F.embedding(idx, W),
        "group_norm": lambda x, gamma, beta, groups=1, eps=1e-5: F.group_norm(x, groups, gamma, beta, eps),
        "attention": lambda q, k, v, causal=False: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
        "lstm_cell": lambda x, h, c, W_ih, W_hh, b_ih, b_hh: torch.func.functional_call(  # nn.LSTMCell
            torch.nn.LSTMCell(x.shape[-1], h.shape[-1], dtype=x.dtype),
            {"weight_ih": W_ih, "weight_hh": W_hh, "bias_ih": b_ih, "bias_hh": b_hh}, (x, (h, c))),
        "gru_cell": lambda x, h, W_ih, W_hh, b_ih, b_hh: torch.func.functional_call(  # nn.GRUCell, these weights
            torch.nn.GRUCell(x.shape[-1], h.shape[-1], dtype=x.dtype),
            {"weight_ih": W_ih, "weight_hh": W_hh, "bias_ih": b_ih, "bias_hh": b_hh}, (x, h)),
    }


def _autograd_table() -> dict:
    import autograd.numpy as anp

    def sigmoid(x):
        return 0.5 * (anp.tanh(x / 2) + 1)

    def softplus(x):
        return anp.logaddexp(0, x)

    def log_softmax(z):
        shifted = z - anp.max(z, axis=-1, keepdims=True)
        return shifted - anp.log(anp.sum(anp.exp(shifted), axis=-1, keepdims=True))

    def windows(x, kernel, stride, padding=0, dilation=1, fill=0.0):
        """Every (i, j) offset of a kernel window, as strided slices of x padded with ``fill``:
        (kernel², N, C, Ho, Wo)."""
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (v if isinstance(v, tuple) else (v, v)
                                                  for v in (kernel, stride or kernel, padding, dilation))
        if ph or pw:
            x = anp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), "constant", constant_values=fill)
        height = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
        width = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
        return anp.stack([x[:, :, i * dh:i * dh + sh * (height - 1) + 1:sh, j * dw:j * dw + sw * (width - 1) + 1:sw]
                          for i in range(kh) for j in range(kw)])

    def conv2d(x, W, b, stride=1, padding=0, dilation=1, groups=1):
        (sh, sw), (ph, pw), (dh, dw) = (v if isinstance(v, tuple) else (v, v) for v in (stride, padding, dilation))
        x = anp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), "constant")
        o, cg, kh, kw = W.shape
        og = o // groups
        height = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
        width = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
        parts = []
        for g in range(groups):  # each group's output channels from its own input channels
            out = b[None, g * og:(g + 1) * og, None, None]
            for i in range(kh):
                for j in range(kw):
                    patch = x[:, g * cg:(g + 1) * cg, i * dh:i * dh + sh * (height - 1) + 1:sh,
                              j * dw:j * dw + sw * (width - 1) + 1:sw]
                    weights = W[g * og:(g + 1) * og, :, i, j]
                    out = out + anp.transpose(anp.tensordot(patch, weights, axes=([1], [1])), (0, 3, 1, 2))
            parts.append(out)
        return anp.concatenate(parts, axis=1)

    def normalize(x, axes, eps):
        mean = anp.mean(x, axis=axes, keepdims=True)
        variance = anp.mean((x - mean) ** 2, axis=axes, keepdims=True)
        return (x - mean) / anp.sqrt(variance + eps)

    def batch_norm(x, gamma, beta, eps=1e-5):
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return gamma.reshape(shape) * normalize(x, axes, eps) + beta.reshape(shape)

    def group_norm(x, gamma, beta, groups=1, eps=1e-5):
        grouped = anp.reshape(x, (x.shape[0], groups, -1))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return gamma.reshape(shape) * anp.reshape(normalize(grouped, (-1,), eps), x.shape) + beta.reshape(shape)

    def attention(q, k, v, causal=False):
        scores = anp.einsum("nld,nsd->nls", q, k) / np.sqrt(q.shape[-1])
        if causal:
            scores = anp.where(np.tril(np.ones(scores.shape[-2:], bool)), scores, -np.inf)
        return anp.einsum("nls,nse->nle", anp.exp(log_softmax(scores)), v)

    def mean_against(log_p, t, ignore_index, label_smoothing=0.0):
        """The mean of -log p against the target: t's own probabilities (over N), or each row's label, the
        rows labelled ignore_index left out (over the rows kept). No label smoothing (the benchmark's 0)."""
        if label_smoothing:
            raise ValueError("label_smoothing: the autograd reference has none")
        if not np.issubdtype(t.dtype, np.integer):
            return -anp.sum(t * log_p) / t.shape[0]
        kept = t != ignore_index
        return -anp.sum(log_p[np.arange(len(t))[kept], t[kept]]) / kept.sum()

    table = {
        "linear": lambda x, W, b: anp.dot(x, W.T) + b,
        "sigmoid": lambda x: 1 / (1 + anp.exp(-x)),
        "tanh": lambda x: anp.tanh(x),
        "relu": lambda x: anp.maximum(x, 0),
        "leaky_relu": lambda x, alpha=0.01: anp.where(x > 0, x, alpha * x),
        "softmax": lambda x: anp.exp(log_softmax(x)),
        "half_sse": lambda y, t: 0.5 * anp.sum((t - y) ** 2) / y.shape[0],
        "mse": lambda y, t: anp.mean((y - t) ** 2),
        "cross_entropy": lambda y, t, ignore_index=-100: mean_against(anp.log(y), t, ignore_index),
        "softmax_cross_entropy": lambda z, t, ignore_index=-100, label_smoothing=0.0: mean_against(
            log_softmax(z), t, ignore_index, label_smoothing),
        "conv2d": conv2d,
        "max_pool2d": lambda x, kernel=2, stride=None, padding=0, dilation=1: anp.max(
            windows(x, kernel, stride, padding, dilation, fill=-anp.inf), axis=0),
        "avg_pool2d": lambda x, kernel=2, stride=None, padding=0: anp.mean(windows(x, kernel, stride, padding), axis=0),
        "flatten": lambda x: anp.reshape(x, (x.shape[0], -1)),
        "batch_norm": batch_norm,
        "batch_norm_eval": lambda x, gamma, beta, running_mean, running_var, eps=1e-5: (
            gamma[None, :, None] * (x - running_mean[None, :, None]) / anp.sqrt(running_var[None, :, None] + eps)
            + beta[None, :, None]),
        "layer_norm": lambda x, gamma, beta, eps=1e-5: gamma * normalize(x, (-1,), eps) + beta,
        "dropout": lambda x, mask, p=0.5: x * mask / (1 - p),
        "gelu_tanh": lambda x: x * (1 + anp.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3))) / 2,
        "silu": lambda x: x * sigmoid(x),
        "softplus": lambda x, beta=1.0: softplus(beta * x) / beta,
        "elu": lambda x, alpha=1.0: anp.where(x > 0, x, alpha * (anp.exp(anp.minimum(x, 0)) - 1)),
        "prelu": lambda x, a: anp.where(x > 0, x, a.reshape((1, -1) + (1,) * (x.ndim - 2)) * x),
        "log_softmax": lambda x: log_softmax(x),
        "binary_cross_entropy": lambda y, t: -anp.mean(t * anp.log(y) + (1 - t) * anp.log(1 - y)),
        "bce_with_logits": lambda z, t: anp.mean(t * softplus(-z) + (1 - t) * softplus(z)),
        "huber": lambda y, t, delta=1.0: anp.mean(anp.where(anp.abs(y - t) < delta, 0.5 * (y - t) ** 2,
                                                            delta * (anp.abs(y - t) - 0.5 * delta))),
        "rms_norm": lambda x, gamma, eps=1e-6: gamma * x / anp.sqrt(anp.mean(x ** 2, axis=-1, keepdims=True) + eps),
        "rnn_cell": lambda x, h, W_ih, W_hh, b_ih, b_hh: anp.tanh(x @ W_ih.T + b_ih + h @ W_hh.T + b_hh),
        "embedding": lambda idx, W: W[idx],
        "group_norm": group_norm,
        "attention": attention,
        "gru_cell": _autograd_gru_cell,
        "lstm_cell": _autograd_lstm_cell,
    }
    if available("scipy"):  # autograd's erf is SciPy's, which the bench extra does not bring
        from autograd.scipy.special import erf
        table["gelu"] = lambda x: x * (1 + erf(x / np.sqrt(2))) / 2
    return table


def _autograd_gru_cell(x, h, W_ih, W_hh, b_ih, b_hh):
    """nn.GRUCell in autograd.numpy: the gates' rows r, z, n stacked in the weights."""
    import autograd.numpy as anp
    H = h.shape[-1]
    gi, gh = x @ W_ih.T + b_ih, h @ W_hh.T + b_hh
    r = 0.5 * (anp.tanh((gi[:, :H] + gh[:, :H]) / 2) + 1)
    z = 0.5 * (anp.tanh((gi[:, H:2 * H] + gh[:, H:2 * H]) / 2) + 1)
    n = anp.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
    return (1 - z) * n + z * h


def _autograd_lstm_cell(x, h, c, W_ih, W_hh, b_ih, b_hh):
    """nn.LSTMCell in autograd.numpy: the gates' rows i, f, g, o stacked in the weights; (h', c')."""
    import autograd.numpy as anp
    from autograd.builtins import tuple as outputs  # two outputs, each with its own upstream gradient
    H = h.shape[-1]
    a = x @ W_ih.T + b_ih + h @ W_hh.T + b_hh
    i, f, o = (0.5 * (anp.tanh(a[:, k * H:(k + 1) * H] / 2) + 1) for k in (0, 1, 3))
    c_next = f * c + i * anp.tanh(a[:, 2 * H:3 * H])
    return outputs((o * anp.tanh(c_next), c_next))


def _linear_products(x, W, b, dout):
    """The three matrix products of a fully connected layer, nothing else (no bias, no checks)."""
    return x @ W.T, dout @ W, dout.T @ x


def _batch_norm_by_hand(x, gamma, beta, dout, eps=1e-5):
    """Batch norm as a careful person writes it in NumPy (x laid out (N, C, S)): reductions through
    einsum, every full-size update in place, two new arrays each way. Typed in by hand, as the
    yardstick of what NumPy can do here; the product derives its own."""
    m = x.shape[0] * x.shape[2]
    xhat = x - (np.einsum("ncs->c", x) / m)[:, None]
    rstd = 1 / np.sqrt(np.einsum("ncs,ncs->c", xhat, xhat) / m + eps)
    xhat *= rstd[:, None]
    y = xhat * gamma[:, None]
    y += beta[:, None]
    dbeta, dgamma = np.einsum("ncs->c", dout), np.einsum("ncs,ncs->c", dout, xhat)
    k = gamma * rstd / m
    dx = xhat * (-dgamma * k)[:, None]
    dx += dout * (m * k)[:, None]
    dx -= (dbeta * k)[:, None]
    return y, dx, dgamma, dbeta


def _layer_norm_by_hand(x, gamma, beta, dout, eps=1e-5):
    """Layer norm over rows (N, D) as a careful person writes it in NumPy; the yardstick, as above."""
    D = x.shape[-1]
    xhat = x - (x.sum(axis=1) / D)[:, None]
    rstd = 1 / np.sqrt(np.einsum("nd,nd->n", xhat, xhat) / D + eps)
    xhat *= rstd[:, None]
    y = xhat * gamma
    y += beta
    g = dout * gamma
    dx = xhat * (-np.einsum("nd,nd->n", g, xhat) / D)[:, None]
    dx += g
    dx -= (g.sum(axis=1) / D)[:, None]
    dx *= rstd[:, None]
    return y, dx, np.einsum("nd,nd->d", dout, xhat), dout.sum(axis=0)


def _batch_norm_eval_by_hand(x, gamma, beta, running_mean, running_var, dout, eps=1e-5):
    """Batch norm with running statistics (x laid out (N, C, S)) as a careful person writes it: one
    scale and shift per channel each way, and dgamma from x itself, so that nothing full-size is
    kept between the passes: two new arrays in all, the output and dx."""
    rstd = 1 / np.sqrt(running_var + eps)
    scale = gamma * rstd
    y = x * scale[:, None]
    y += (beta - running_mean * scale)[:, None]
    dx = dout * scale[:, None]
    dbeta = np.einsum("ncs->c", dout)
    dgamma = (np.einsum("ncs,ncs->c", dout, x) - running_mean * dbeta) * rstd
    return y, dx, dgamma, dbeta


def _softmax_by_hand(x, dout):
    """Softmax over rows (N, K) as a careful person writes it: the exponentials in place, two new arrays."""
    y = x - x.max(axis=1, keepdims=True)
    np.exp(y, out=y)
    y /= y.sum(axis=1, keepdims=True)
    dx = dout - np.einsum("nk,nk->n", dout, y)[:, None]
    dx *= y
    return y, dx


def _softmax_cross_entropy_by_hand(z, t, dout=1.0, ignore_index=-100, label_smoothing=0.0):
    """Softmax cross-entropy (rows of t sum to 1, or t integer labels) as a careful person writes it,
    forward and backward in one: the shifted logits summed against t first, then turned into
    probabilities in place, then into the gradient: one new full-size array."""
    n = z.shape[0]
    labels = np.issubdtype(t.dtype, np.integer)
    if label_smoothing or labels and np.any(t == ignore_index):
        raise ValueError("ignore_index, label_smoothing: the hand-written version has neither (the benchmark's "
                         "labels are all in range, its label_smoothing 0)")
    u = z - z.max(axis=1, keepdims=True)
    against_t = u[np.arange(n), t].sum() if labels else np.einsum("nk,nk->", u, t)
    np.exp(u, out=u)
    s = u.sum(axis=1)
    loss = (np.log(s).sum() - against_t) / n
    u /= s[:, None]
    if labels:
        u[np.arange(n), t] -= 1
    else:
        u -= t
    u *= dout / n
    return loss, u


def _conv2d_by_hand(x, W, b, dout, stride=1, padding=0, dilation=1, groups=1):
    """A convolution through im2col as a careful person writes it: the windows gathered once into a
    matrix (groups, C_g KH KW, N OH OW) for both products that read them, three (batched) matrix products,
    and the windows' gradients added back onto the image one kernel offset at a time (one int per option)."""
    n, c, height, width = x.shape
    o, cg, kh, kw = W.shape
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    extent = (dilation * (kh - 1) + 1, dilation * (kw - 1) + 1)
    windows = np.lib.stride_tricks.sliding_window_view(padded, extent, axis=(2, 3))[
        :, :, ::stride, ::stride, ::dilation, ::dilation]
    oh, ow = windows.shape[2:4]
    cols = windows.reshape(n, groups, cg, oh, ow, kh, kw).transpose(1, 2, 5, 6, 0, 3, 4) \
        .reshape(groups, cg * kh * kw, n * oh * ow)
    weights = W.reshape(groups, o // groups, -1)
    y = (weights @ cols).reshape(o, n, oh, ow).transpose(1, 0, 2, 3) + b[:, None, None]
    grad = dout.transpose(1, 0, 2, 3).reshape(groups, o // groups, -1)
    dW = (grad @ cols.transpose(0, 2, 1)).reshape(W.shape)
    dcols = (weights.transpose(0, 2, 1) @ grad).reshape(c, kh, kw, n, oh, ow)
    dpadded = np.zeros_like(padded)
    for p in range(kh):
        for q in range(kw):
            dpadded[:, :, p * dilation:p * dilation + stride * oh:stride,
                    q * dilation:q * dilation + stride * ow:stride] += dcols[:, p, q].transpose(1, 0, 2, 3)
    dx = dpadded[:, :, padding:padding + height, padding:padding + width]
    return y, dx, dW, dout.sum(axis=(0, 2, 3))


#: op name -> (what it is, a function of the op's inputs, its hyper-parameters and ``dout``).
BARE = {"linear": ("3 matrix products", _linear_products),
        "conv2d": ("hand-written NumPy (im2col)", _conv2d_by_hand),
        "batch_norm": ("hand-written NumPy", _batch_norm_by_hand),
        "batch_norm_eval": ("hand-written NumPy", _batch_norm_eval_by_hand),
        "layer_norm": ("hand-written NumPy", _layer_norm_by_hand),
        "softmax": ("hand-written NumPy", _softmax_by_hand),
        "softmax_cross_entropy": ("hand-written NumPy", _softmax_cross_entropy_by_hand)}
