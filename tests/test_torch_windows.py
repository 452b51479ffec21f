"""conv2d's and pooling's options against PyTorch: an int or an (h, w) pair for each window option, and
conv2d's groups, several combinations each, float64 and float32, the values and every gradient, the inputs left unchanged.

PyTorch is an optional extra; without it these tests are skipped.
"""
import numpy as np
import pytest

from generated import avg_pool2d, conv2d, max_pool2d

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _against_torch(module, reference, arrays, options, dtype, rng):
    """Run the generated forward and backward and PyTorch's function on the same arrays; compare the
    output and every gradient, and check that neither call changed an input."""
    arrays = {name: (a.astype(dtype) if a is not None else None) for name, a in arrays.items()}
    before = {name: a.copy() for name, a in arrays.items() if a is not None}
    out, cache = module.forward(**arrays, **options)
    assert out.dtype == dtype
    tensors = {name: torch.tensor(a, requires_grad=True) if a is not None else None for name, a in arrays.items()}
    expected = reference(*tensors.values(), **options)
    rtol, atol = (1e-10, 1e-12) if dtype == np.float64 else (2e-5, 1e-5)
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=rtol, atol=atol)
    dout = rng.standard_normal(out.shape).astype(dtype)
    expected.backward(torch.tensor(dout))
    grads = module.backward(dout, cache)
    given = [name for name, a in arrays.items() if a is not None]
    assert sorted(grads) == sorted(given)
    for name in given:
        assert grads[name].dtype == dtype and grads[name].shape == arrays[name].shape, name
        np.testing.assert_allclose(grads[name], tensors[name].grad.numpy(), rtol=rtol, atol=atol, err_msg=name)
    for name, a in before.items():
        np.testing.assert_array_equal(arrays[name], a, err_msg=f"{name} was changed")


def _conv(x, W, b=None, **options):
    return F.conv2d(x, W, b, **options)


#: (x shape, W shape, options): ints and pairs, each option on its own and together.
CONV_CASES = [
    ((2, 3, 7, 6), (4, 3, 3, 2), {"stride": (2, 1)}),
    ((2, 3, 7, 6), (4, 3, 3, 2), {"stride": (1, 3), "padding": (0, 2)}),
    ((1, 2, 6, 8), (3, 2, 2, 3), {"stride": 2, "padding": (2, 1)}),
    ((2, 2, 5, 5), (2, 2, 3, 3), {"stride": [3, 2], "padding": 1}),
    ((2, 3, 9, 8), (4, 3, 3, 2), {"dilation": 2}),
    ((2, 3, 9, 8), (4, 3, 3, 3), {"dilation": (2, 3), "padding": (1, 2)}),
    ((1, 2, 11, 9), (3, 2, 3, 2), {"dilation": (3, 1), "stride": (2, 2), "padding": 2}),
    ((2, 2, 8, 8), (2, 2, 2, 2), {"dilation": 2, "stride": 3}),  # windows apart: nothing overlaps
    # groups: W[O, C / groups, KH, KW], output channel o reading its group's input channels only
    ((2, 4, 6, 5), (6, 2, 3, 2), {"groups": 2}),
    ((2, 6, 7, 6), (3, 2, 2, 3), {"groups": 3, "stride": (2, 1), "padding": 1}),
    ((1, 4, 9, 8), (8, 1, 3, 3), {"groups": 4, "dilation": 2, "padding": (2, 1)}),  # depthwise, two per channel
    ((2, 4, 11, 9), (4, 2, 3, 2), {"groups": 2, "dilation": (3, 1), "stride": 2, "padding": (0, 2)}),
    ((2, 3, 5, 5), (3, 1, 2, 2), {"groups": 3, "stride": 3}),  # depthwise, windows apart
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("xs, ws, options", CONV_CASES, ids=range(len(CONV_CASES)))
def test_conv2d_options_match_pytorch(xs, ws, options, bias, dtype, rng):
    arrays = {"x": rng.standard_normal(xs), "W": rng.standard_normal(ws),
              "b": rng.standard_normal(ws[0]) if bias else None}
    _against_torch(conv2d, _conv, arrays, options, dtype, rng)


POOL_CASES = [
    ((2, 3, 7, 6), {"kernel": (3, 2)}),
    ((2, 3, 7, 6), {"kernel": (2, 3), "stride": (1, 2)}),
    ((1, 2, 6, 9), {"kernel": 3, "stride": (2, 3)}),
    ((2, 1, 5, 5), {"kernel": (1, 2), "stride": 1}),
]


#: Each option on its own and together; ceil_mode where a partial last window is kept, and where it would
#: start in the right padding and is dropped (6 + 2 - 2 = 6 = 3 * 2: the window at 6 starts past 6 + 1 - 1).
MAX_CASES = [
    ((2, 3, 7, 6), {"kernel": 3, "padding": 1}),
    ((2, 2, 6, 7), {"kernel": (2, 3), "stride": 1, "padding": (1, 0)}),
    ((2, 2, 9, 8), {"kernel": 3, "dilation": 2}),
    ((1, 2, 9, 10), {"kernel": (3, 2), "stride": (2, 1), "dilation": (2, 3), "padding": (1, 1)}),
    ((2, 2, 7, 6), {"kernel": 2, "ceil_mode": True}),
    ((2, 2, 6, 6), {"kernel": 2, "stride": 3, "padding": 1, "ceil_mode": True}),
    ((1, 3, 8, 7), {"kernel": 3, "stride": 2, "padding": 1, "dilation": 2, "ceil_mode": True}),
]
AVG_CASES = [
    ((2, 3, 7, 6), {"kernel": 3, "padding": 1}),
    ((2, 2, 6, 7), {"kernel": (2, 3), "stride": 1, "padding": (1, 0), "count_include_pad": False}),
    ((2, 3, 7, 6), {"kernel": 3, "stride": 2, "padding": 1, "count_include_pad": False}),
    ((2, 2, 7, 6), {"kernel": 2, "ceil_mode": True}),
    ((2, 2, 6, 6), {"kernel": 2, "stride": 3, "padding": 1, "ceil_mode": True}),
    ((1, 2, 7, 8), {"kernel": (3, 2), "stride": 2, "padding": 1, "ceil_mode": True}),
    ((1, 2, 7, 8), {"kernel": (3, 2), "stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False}),
]
POOLS = [(max_pool2d, F.max_pool2d, shape, options) for shape, options in POOL_CASES + MAX_CASES] \
    + [(avg_pool2d, F.avg_pool2d, shape, options) for shape, options in POOL_CASES + AVG_CASES]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("module, reference, shape, options", POOLS,
                         ids=[f"{m.__name__.split('.')[-1][:3]}{k}" for k, (m, *_) in enumerate(POOLS)])
def test_pooling_options_match_pytorch(module, reference, shape, options, dtype, rng):
    def call(x, kernel, stride=None, **rest):
        return reference(x, kernel, stride, **rest)
    _against_torch(module, call, {"x": rng.standard_normal(shape)}, options, dtype, rng)


def test_max_pooling_never_takes_the_padding(rng):
    """Windows of negative values at the edge: zero padding would be their maximum; PyTorch's is -inf."""
    x = -np.abs(rng.standard_normal((1, 2, 5, 5))) - 1
    options = {"kernel": 3, "stride": 2, "padding": 1}
    _against_torch(max_pool2d, lambda x, kernel, stride, padding: F.max_pool2d(x, kernel, stride, padding), {"x": x},
                   options, np.float64, rng)
    out, _ = max_pool2d.forward(x, kernel=3, stride=2, padding=1)
    assert (out < 0).all()


@pytest.mark.parametrize("module", [max_pool2d, avg_pool2d], ids=["max", "avg"])
@pytest.mark.parametrize("options", [{"kernel": 3, "padding": 2}, {"kernel": (2, 4), "padding": (1, 3)},
                                     {"kernel": 1, "padding": 1}])
def test_padding_beyond_half_the_kernel_is_refused_as_pytorch_does(module, options, rng):
    x = rng.standard_normal((1, 1, 8, 8))
    with pytest.raises(RuntimeError, match="pad should be"):
        (F.max_pool2d if module is max_pool2d else F.avg_pool2d)(torch.tensor(x), options["kernel"],
                                                                 padding=options["padding"])
    with pytest.raises(ValueError, match=r"^padding: expected 0 <= 2 \* padding <= kernel"):
        module.forward(x, **options)


@pytest.mark.parametrize("module, options, message", [
    (conv2d, {"stride": (1, 2, 3)}, "stride: expected an integer or a pair"),
    (conv2d, {"stride": (1, 0)}, "stride: expected stride >= 1"),
    (conv2d, {"padding": (-1, 0)}, "padding: expected padding >= 0"),
    (conv2d, {"padding": ()}, "padding: expected an integer or a pair"),
    (conv2d, {"dilation": 0}, "dilation: expected dilation >= 1"),
    (conv2d, {"dilation": (1, 9)}, "the output would be empty"),
    (max_pool2d, {"kernel": (2,)}, "kernel: expected an integer or a pair"),
    (avg_pool2d, {"kernel": 2, "stride": (0, 1)}, "stride: expected stride >= 1"),
])
def test_a_bad_pair_is_a_value_error_naming_the_option(module, options, message, rng):
    x = rng.standard_normal((1, 2, 6, 6))
    inputs = {"x": x, "W": rng.standard_normal((2, 2, 2, 2))} if module is conv2d else {"x": x}
    with pytest.raises(ValueError, match=message):
        module.forward(**inputs, **options)


@pytest.mark.parametrize("xs, ws, groups, message", [
    ((1, 3, 5, 5), (4, 1, 2, 2), 2, "groups: expected a divisor of C = 3, got 2"),
    ((1, 4, 5, 5), (3, 2, 2, 2), 2, "groups: expected a divisor of O = 3, got 2"),
    ((1, 4, 5, 5), (4, 4, 2, 2), 2, r"W: expected shape \(O, C_g, KH, KW\) with C_g = C / groups = 2"),
    ((1, 4, 5, 5), (4, 2, 2, 2), 0, "groups: expected groups >= 1"),
])
def test_bad_groups_are_a_value_error_naming_them(xs, ws, groups, message, rng):
    """As PyTorch refuses them: C and O must be divisible by groups, W must have C / groups channels."""
    with pytest.raises(ValueError, match=message):
        conv2d.forward(rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0]), groups=groups)
    with pytest.raises(RuntimeError):
        _conv(torch.zeros(xs), torch.zeros(ws), groups=groups)


def test_a_pair_of_non_integers_is_a_type_error_naming_the_option(rng):
    with pytest.raises(TypeError, match="stride: expected an integer"):
        conv2d.forward(rng.standard_normal((1, 1, 4, 4)), rng.standard_normal((1, 1, 2, 2)), stride=(1, 1.5))
