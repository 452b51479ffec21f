"""Convolution and pooling: every stride/padding/shape case against a direct reference, the tie rule, bad hyper-parameters."""
import re
from pathlib import Path

import numpy as np
import pytest

from derive.engine import check
from derive.define.registry import get, registry
from generated import avg_pool2d, conv2d, max_pool2d

GENERATED = Path(__file__).resolve().parent.parent / "generated"


def reference_conv(x, W, b, stride, padding):
    """The definition, loop by loop: y[n,o,i,j] = sum_c,p,q W[o,c,p,q] xpad[n,c,i s + p, j s + q] + b[o]."""
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    N, C, H, Wd = xp.shape
    O, _, KH, KW = W.shape
    OH, OW = (H - KH) // stride + 1, (Wd - KW) // stride + 1
    y = np.zeros((N, O, OH, OW))
    for i in range(OH):
        for j in range(OW):
            window = xp[:, :, i * stride:i * stride + KH, j * stride:j * stride + KW]
            y[:, :, i, j] = np.einsum("ncpq,ocpq->no", window, W) + b
    return y


CONV_CASES = [  # (x shape, W shape, stride, padding)
    ((2, 3, 5, 5), (4, 3, 3, 3), 1, 0),
    ((2, 2, 5, 6), (3, 2, 3, 3), 2, 1),  # stride 2 with padding 1, a non-square image
    ((2, 3, 4, 4), (2, 3, 1, 1), 1, 0),  # 1x1
    ((2, 2, 4, 4), (3, 2, 4, 4), 1, 0),  # kernel equals input: one output pixel
    ((1, 2, 6, 7), (2, 2, 2, 3), 2, 0),  # a non-square kernel
    ((1, 1, 3, 3), (2, 1, 3, 3), 1, 2),  # more padding than image
]


@pytest.mark.parametrize("xs, ws, stride, padding", CONV_CASES, ids=[str(c) for c in range(len(CONV_CASES))])
def test_conv2d_every_case(xs, ws, stride, padding, rng):
    x, W, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    out, _ = conv2d.forward(x, W, b, stride=stride, padding=padding)
    np.testing.assert_allclose(out, reference_conv(x, W, b, stride, padding), rtol=1e-12, atol=1e-12)
    result = check.finite_differences(get("conv2d"), conv2d, {"x": x, "W": W, "b": b},
                                      {"stride": stride, "padding": padding})
    assert result.passed, result.errors


def reference_pool(x, kernel, stride, reduce):
    N, C, H, W = x.shape
    OH, OW = (H - kernel) // stride + 1, (W - kernel) // stride + 1
    y = np.zeros((N, C, OH, OW))
    for i in range(OH):
        for j in range(OW):
            y[:, :, i, j] = reduce(x[:, :, i * stride:i * stride + kernel, j * stride:j * stride + kernel], axis=(2, 3))
    return y


POOL_CASES = [((2, 3, 6, 6), 2, None), ((1, 2, 7, 5), 3, 2), ((2, 1, 5, 5), 2, 1), ((1, 2, 3, 3), 3, None)]


@pytest.mark.parametrize("module, reduce", [(max_pool2d, np.max), (avg_pool2d, np.mean)], ids=["max", "avg"])
@pytest.mark.parametrize("shape, kernel, stride", POOL_CASES, ids=[str(c) for c in range(len(POOL_CASES))])
def test_pooling_every_case(module, reduce, shape, kernel, stride, rng):
    x = rng.permutation(np.arange(np.prod(shape), dtype=float)).reshape(shape) / 7  # no ties
    out, _ = module.forward(x, kernel=kernel, stride=stride)
    np.testing.assert_allclose(out, reference_pool(x, kernel, stride or kernel, reduce), rtol=1e-12)
    op = get(module.__name__.rsplit(".", 1)[-1])
    result = check.finite_differences(op, module, {"x": x}, {"kernel": kernel, "stride": stride})
    assert result.passed, result.errors


def test_max_pool_ties_go_to_the_first_maximum():
    """Every window has two equal maxima: the gradient goes to the first in row-major order, as in PyTorch."""
    x = np.array([[[[1.0, 5.0, 5.0, 0.0],
                    [5.0, 2.0, 3.0, 5.0],
                    [7.0, 7.0, 1.0, 1.0],
                    [7.0, 7.0, 1.0, 1.0]]]])
    out, cache = max_pool2d.forward(x, kernel=2)
    np.testing.assert_array_equal(out, [[[[5.0, 5.0], [7.0, 1.0]]]])
    dx = max_pool2d.backward(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]), cache)["x"]
    np.testing.assert_array_equal(dx, [[[[0, 1, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]]]])
    torch = pytest.importorskip("torch")
    tx = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(tx, 2).backward(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64))
    np.testing.assert_array_equal(dx, tx.grad.numpy())


@pytest.mark.parametrize("kernel, stride", [(2, None), (2, 1)], ids=["apart", "overlapping"])
def test_max_pool_infinities_and_nan_as_the_definition_says(kernel, stride):
    """A mask leaves values out (no inf * 0 = NaN): -inf beside a finite maximum, inf tied with inf, NaN wins."""
    x = np.array([[[[-np.inf, 1.0, np.inf, np.inf],
                    [2.0, -np.inf, np.inf, 0.0],
                    [np.nan, 3.0, -np.inf, -np.inf],
                    [4.0, 5.0, -np.inf, -np.inf]]]])
    out, cache = max_pool2d.forward(x, kernel=kernel, stride=stride)
    np.testing.assert_array_equal(out, reference_pool(x, kernel, stride or kernel, np.max))
    dx = max_pool2d.backward(np.ones_like(out), cache)["x"]
    assert dx.sum() == out.size and set(np.unique(dx)) <= set(range(out.size + 1))  # one pixel per window
    infinite = max_pool2d.backward(np.full_like(out, np.inf), cache)["x"]  # the mask selects: no inf * 0
    np.testing.assert_array_equal(infinite, np.where(dx > 0, np.inf, 0.0))


@pytest.mark.parametrize("options", [{"kernel": 2, "stride": 2, "padding": 1}, {"kernel": 3, "stride": 1, "padding": 1},
                                     {"kernel": 2, "stride": 1, "padding": 1, "dilation": 2}])
def test_max_pool_padding_is_never_the_maximum_not_even_of_minus_infinities(options):
    """A window of -inf and padding: its maximum is -inf and its gradient goes to its first cell in the image,
    as in PyTorch (which pads with -inf and starts each window's argmax inside the image)."""
    torch = pytest.importorskip("torch")
    x = np.array([[[[-np.inf, 1.0, np.inf, -np.inf],
                    [2.0, -np.inf, np.inf, -np.inf],
                    [-np.inf, -np.inf, -np.inf, -np.inf],
                    [4.0, 5.0, -np.inf, -np.inf]]]])
    out, cache = max_pool2d.forward(x, **options)
    tx = torch.tensor(x, requires_grad=True)
    expected = torch.nn.functional.max_pool2d(tx, options["kernel"], options["stride"], options["padding"],
                                              options.get("dilation", 1))
    dout = np.arange(1.0, out.size + 1).reshape(out.shape)
    expected.backward(torch.tensor(dout))
    np.testing.assert_array_equal(out, expected.detach().numpy())
    np.testing.assert_array_equal(max_pool2d.backward(dout, cache)["x"], tx.grad.numpy())


def test_a_condition_may_name_only_the_hyper_parameters_before_it():
    """``valid`` reads another hyper-parameter axis by axis (pooling's padding and its kernel); one listed after
    it would not be checked yet in the generated forward."""
    from derive.define import Hyper, Input, Intermediate, Op, Tensor, indices, pair, sizes
    from derive.engine.network import _holds
    (N,), (n,) = sizes("N"), indices("n")
    x = Tensor("x", N)
    (ph, pw), (kh, kw) = pair("padding", nonnegative=True), pair("kernel", positive=True)
    with pytest.raises(ValueError, match="^valid: .* only hyper-parameters before it"):
        Op(name="late", doc="d", inputs=(Input(x),), output=Intermediate("y", (n,), (N,), x[n] * (ph + kh)),
           hyper=(Hyper((ph, pw), 0, valid="2 * padding <= kernel"), Hyper((kh, kw), 2, valid="kernel >= 1")))
    assert _holds("0 <= 2 * padding <= kernel", "padding", 1, {"kernel": 2})
    assert not _holds("0 <= 2 * padding <= kernel", "padding", 2, {"kernel": 3})
    with pytest.raises(ValueError, match=r"^padding: expected 0 <= 2 \* padding <= kernel, got 2"):
        avg_pool2d.forward(np.ones((1, 1, 6, 6)), kernel=(4, 3), padding=2)  # right for the height, not the width


@pytest.mark.parametrize("kwargs, error, message", [
    ({"W": np.ones((2, 3, 5, 5))}, ValueError, r"^x: the output would be empty"),
    ({"stride": 0}, ValueError, r"^stride: expected stride >= 1"),
    ({"stride": 1.5}, TypeError, r"^stride: expected an integer"),
    ({"padding": -1}, ValueError, r"^padding: expected padding >= 0"),
    ({"W": np.ones((2, 2, 3, 3))}, ValueError, r"^W: expected shape \(O, C_g, KH, KW\) with C_g = C / groups = 3"),
    ({"b": np.ones(3)}, ValueError, r"^b: expected shape \(O\)"),
])
def test_conv2d_bad_hyper_parameters_say_why(kwargs, error, message):
    args = {"x": np.ones((1, 3, 4, 4)), "W": np.ones((2, 3, 3, 3)), "b": np.ones(2)}
    hyper = {k: kwargs.pop(k) for k in ("stride", "padding") if k in kwargs}
    with pytest.raises(error, match=message):
        conv2d.forward(**{**args, **kwargs}, **hyper)


def test_pooling_kernel_larger_than_the_image():
    with pytest.raises(ValueError, match="output would be empty"):
        max_pool2d.forward(np.ones((1, 1, 2, 2)), kernel=3)


@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("outer, layout", [(0, "grnk"), (1, "ngrk")])
def test_batch_tensordot_is_a_tensordot_per_group(groups, outer, layout, rng):
    """The grouped conv's product, in either layout (b's first other axis ahead of the groups or not), and
    with one group (a single large product) as with several: each group's tensordot."""
    a = rng.standard_normal((groups, 2, 4, 3))
    b = rng.standard_normal((5, groups, 3, 4, 6))
    got = conv2d._batch_tensordot(a, b, ((2, 3), (3, 2)), ((0,), (1,)), outer=outer)
    np.testing.assert_allclose(got, np.einsum(f"grst,ngtsk->{layout}", a, b), rtol=1e-12, atol=1e-12)


def test_generated_code_has_no_python_loops_but_over_kernel_offsets():
    """Batch, channels and pixels are vectorised; only the window helpers (col2im, a window's maximum) loop,
    over the kernel offsets."""
    for name in registry():
        source = (GENERATED / f"{name}.py").read_text()
        bodies = re.findall(r"^def (?:forward|backward)\(.*?(?=^def |\Z)", source, flags=re.M | re.S)
        assert len(bodies) == 2, name
        for body in bodies:
            assert not re.search(r"^\s+for\s", body, flags=re.M), name
        if "_col2im(" in source:
            loops = re.findall(r"^\s+for (\w+) in range\((\w+)\):", source, flags=re.M)
            assert set(loops) == {("p", "kh"), ("q", "kw")}, name


def test_the_convolutional_network_trains():
    from derive.demo import run
    losses, accuracy = run(network="conv", epochs=40, quiet=True)
    assert losses[-1] < 0.3 * losses[0] and accuracy > 0.9


def test_the_convolutional_network_matches_finite_differences(rng):
    from derive.demo import bars_and_stripes, conv_network
    net = conv_network(rng)
    net.params[0]["b"] += 0.1  # away from the ReLU kink
    x, t = bars_and_stripes(3, rng)
    _, grads = net.loss_and_grads(x, t=t)
    for layer, params in enumerate(net.params):
        for name, value in params.items():
            for idx in list(np.ndindex(value.shape))[:12]:
                old = value[idx]
                value[idx] = old + 1e-6
                plus, _ = net.loss_and_grads(x, t=t)
                value[idx] = old - 1e-6
                minus, _ = net.loss_and_grads(x, t=t)
                value[idx] = old
                assert grads[layer][name][idx] == pytest.approx((plus - minus) / 2e-6, rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("padding", [0, 1, 2])
def test_full_convolution_reading_equals_the_gradient(padding, rng):
    """The LaTeX's stride-1 form, evaluated from its own definitions, equals the generated backward."""
    import sympy as sp

    from codegen.latex.explain import full_convolution
    from derive.engine.derivation import derive
    d = derive(get("conv2d"))
    form = full_convolution(d, d.gradient("x"))
    x, W, b = rng.standard_normal((2, 2, 4, 5)), rng.standard_normal((3, 2, 3, 2)), rng.standard_normal(3)
    out, cache = conv2d.forward(x, W, b, padding=padding)
    g = rng.standard_normal(out.shape)
    expected = conv2d.backward(g, cache)["x"]
    op = get("conv2d")
    from derive.ops.conv2d import Og, groups
    sizes = dict(zip(op.inputs[0].shape, x.shape)) | dict(zip(op.inputs[1].shape, W.shape)) \
        | {groups: 1, Og: W.shape[0]}  # one group
    pads = next(h for h in op.hyper if h.name == "padding").bind(padding)
    (flip, kernel), (pad, shifted) = form.flipped, form.padded

    def value(expr, at):
        """An element of a display tensor, from its definition (0 outside the upstream gradient)."""
        if expr.base == flip.base:
            e = kernel.xreplace(dict(zip(flip.indices, at))).xreplace(sizes)
            return W[tuple(int(i) for i in e.indices)]
        e = shifted.xreplace(dict(zip(pad.indices, at))).xreplace(sizes | pads)
        idx = tuple(int(i) for i in e.indices)
        inside = all(0 <= i < n for i, n in zip(idx, g.shape))
        return g[idx] if inside else 0.0

    got = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        expr = check.expand_sums(form.gradient.xreplace(dict(zip(d.gradient("x").index, idx))).xreplace(
            {s: sp.Integer(v) for s, v in sizes.items()}))
        got[idx] = float(expr.replace(lambda e: isinstance(e, sp.Indexed),
                                      lambda e: sp.Float(value(e, e.indices))))
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
