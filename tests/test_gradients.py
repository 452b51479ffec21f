"""Each derived gradient, proven twice: exactly against SymPy's unrolled derivative, and numerically."""
import numpy as np
import pytest
import sympy as sp

from derive.engine import check


@pytest.mark.parametrize("case", [0, 1])
def test_symbolic_equals_brute_force_jacobian(op, derivation, case):
    """At tiny explicit sizes the index-form gradient equals SymPy's derivative of the unrolled forward."""
    for small in (True, False) if case == 0 else (True,):
        wrong = check.brute_force(derivation, check.example_sizes(op, small=small), check.hyper_values(op, case))
        assert not wrong, "\n".join(wrong[:5])


@pytest.mark.parametrize("case", [0, 1])
def test_finite_differences_float64(op, module, rng, case):
    """Central differences of sum(forward * dout), every element, against backward."""
    inputs = check.sample(op, check.example_sizes(op), rng)
    result = check.finite_differences(op, module, inputs, check.hyper_values(op, case), seed=case)
    assert result.passed, f"max relative error per input: {result.errors}"
    assert result.max_error < 1e-5


def test_forward_matches_lambdify_of_definition(op, module, rng):
    """The generated forward computes the forward expression, element by element."""
    sizes = check.example_sizes(op, small=True)
    inputs = check.sample(op, sizes, rng, leading=())
    hyper = check.hyper_values(op)
    out, _ = module.forward(**inputs, **hyper)
    expected = _reference(op, sizes, inputs, hyper)
    np.testing.assert_allclose(np.reshape(out, np.shape(expected)), expected, rtol=1e-12, atol=1e-12)


def _reference(op, sizes, inputs, hyper, precision=None):
    """The forward definition, unrolled at explicit sizes and evaluated by lambdify (or mpmath)."""
    from derive.engine.check import _unroll
    from derive.engine.rewrite import inline
    node = op.output
    definition = inline(node.definition)
    subs_sizes = {s: sp.Integer(v) for s, v in sizes.items()}
    hyper = {k: (hyper[h.default_to] if v is None and h.default_to else v)
             for h in op.hyper for k, v in hyper.items() if k == h.name}
    subs_sizes.update({h.symbol: sp.Integer(hyper[h.name]) for h in op.hyper if h.whole})
    hyper_values = {h.symbol: h_value for h in op.hyper for name, h_value in hyper.items() if name == h.name}
    shape = [int(sp.sympify(s).subs(subs_sizes)) for s in node.shape]
    values = {}
    for inp in op.inputs:
        arr = np.asarray(inputs[inp.name]).reshape([int(sp.sympify(s).subs(subs_sizes)) for s in inp.shape])
        for idx in np.ndindex(arr.shape):
            values[inp.tensor[idx]] = sp.Integer(int(arr[idx])) if inp.domain == "index" else float(arr[idx])
    if precision:  # every number at that precision before anything is evaluated: 1 - σ(1000) keeps its digits
        values = {k: v if isinstance(v, sp.Integer) else sp.Float(v, precision) for k, v in values.items()}
        hyper_values = {k: sp.Float(v, precision) if isinstance(v, float) else v for k, v in hyper_values.items()}
    out = np.zeros(shape)
    for idx in np.ndindex(*shape):
        expr = _unroll(definition, dict(zip(node.index, idx)), subs_sizes).xreplace(hyper_values)
        expr = check.at_numbers(expr, {k: v for k, v in values.items() if isinstance(v, sp.Integer)})  # ids first
        expr = check.at_numbers(expr, values)
        if precision:
            out[idx] = float(sp.N(expr, precision))
        else:
            symbols = sorted(expr.free_symbols & set(values), key=str)
            out[idx] = sp.lambdify(symbols, expr, "math")(*[values[s] for s in symbols])
    return out if shape else float(out)


def test_extreme_inputs_stay_finite_and_correct(op, module, rng):
    """Inputs of +-1000 give finite outputs and gradients, equal to the definition evaluated to 50 digits
    beyond what e^{+-1000} cancels (1 - σ(1000) is e^{-1000}: 435 digits of 1 lost in the subtraction)."""
    if any(inp.domain in ("probability", "simplex", "positive") and inp.differentiable for inp in op.inputs):
        pytest.skip("inputs are probabilities or positive numbers: +-1000 is outside the domain")
    sizes = check.example_sizes(op, small=True)
    inputs = check.sample(op, sizes, rng, leading=())
    for inp in op.differentiable:
        inputs[inp.name] = np.sign(inputs[inp.name] + 1e-9) * 1000.0 + inputs[inp.name]
    hyper = check.hyper_values(op)
    out, cache = module.forward(**inputs, **hyper)
    dout = 1.0 if op.is_loss else np.ones(np.shape(out))
    grads = module.backward(dout, cache)
    assert np.all(np.isfinite(out))
    assert all(np.all(np.isfinite(g)) for g in grads.values())
    expected = _reference(op, sizes, inputs, hyper, precision=50 + 500)
    np.testing.assert_allclose(np.reshape(out, np.shape(expected)), expected, rtol=1e-12, atol=1e-300)


def test_float32_in_float32_out(op, module, rng):
    inputs64 = check.sample(op, check.example_sizes(op), rng)
    inputs32 = check.as_dtype(op, inputs64, np.float32)
    hyper = check.hyper_values(op)
    out32, cache32 = module.forward(**inputs32, **hyper)
    out64, cache64 = module.forward(**inputs64, **hyper)
    assert np.asarray(out32).dtype == np.float32
    dout = 1.0 if op.is_loss else rng.standard_normal(np.shape(out64))
    grads32 = module.backward(dout if op.is_loss else dout.astype(np.float32), cache32)
    grads64 = module.backward(dout, cache64)
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-5)
    for name, g in grads32.items():
        assert g.dtype == np.float32 and g.shape == inputs32[name].shape, name
        np.testing.assert_allclose(g, grads64[name], rtol=1e-3, atol=1e-4)


def test_inputs_are_never_modified(op, module, rng):
    inputs = check.sample(op, check.example_sizes(op), rng)
    before = {k: v.copy() for k, v in inputs.items()}
    out, cache = module.forward(**inputs, **check.hyper_values(op))
    dout = 1.0 if op.is_loss else rng.standard_normal(np.shape(out))
    dout_before = np.copy(dout)
    module.backward(dout, cache)
    for name, value in inputs.items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    np.testing.assert_array_equal(dout, dout_before)


def test_gradients_have_their_inputs_shape_and_dtype(op, module, rng):
    inputs = check.sample(op, check.example_sizes(op), rng)
    out, cache = module.forward(**inputs, **check.hyper_values(op))
    grads = module.backward(1.0 if op.is_loss else np.ones(np.shape(out)), cache)
    assert sorted(grads) == sorted(i.name for i in op.differentiable)
    for name, g in grads.items():
        assert g.shape == inputs[name].shape and g.dtype == inputs[name].dtype, name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("alpha", [0.0, 0.01, 2.0])
def test_leaky_relu_selects_its_branch_even_where_the_other_overflows(dtype, alpha):
    """A slope chosen per element, times the array, is np.where's branch exactly: an infinite or overflowing
    other branch stays out, infinities and NaN (in x or in dout) come out as np.where has them."""
    from generated import leaky_relu
    x = np.array([np.inf, -np.inf, 3.0, -3.0, 1.0, -1.0, 3e38, -3e38, np.nan, 2.0, -2.0, 0.0, -0.0], dtype)
    dout = np.array([1, 1, np.inf, np.inf, 3e38, 3e38, 1, 1, 1, np.nan, -np.inf, -np.inf, np.nan], dtype)
    with np.errstate(all="ignore"):  # products overflow where they are not chosen (and 0 * -inf where alpha = 0)
        y, cache = leaky_relu.forward(x, alpha=alpha)
        dx = leaky_relu.backward(dout, cache)["x"]
        np.testing.assert_array_equal(y, np.where(x > 0, x, dtype(alpha) * x))
        np.testing.assert_array_equal(dx, np.where(x > 0, dout, dtype(alpha) * dout))
    assert y.dtype == dx.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("if_true, if_false", [(1, 0.01), (1, 1.0), (1, 0.0), (1, 2.0), (2.5, -3.0), (-1, 0.5)])
def test_a_factor_chosen_per_element_is_np_where_exactly(dtype, if_true, if_false):
    """_scaled (branches A*a and A*b, printed without np.where) rounds, overflows and keeps NaN as np.where."""
    from generated.leaky_relu import _scaled
    values = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1.5, -1.5, 3e38, -3e38, 1e-45], dtype)
    array = np.repeat(values, 2)
    condition = np.tile([True, False], len(values))
    with np.errstate(all="ignore"):
        got = _scaled(array, condition, if_true, if_false)
        want = np.where(condition, array * dtype(if_true), array * dtype(if_false))
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)
    signed = ~np.isnan(want)
    np.testing.assert_array_equal(np.signbit(got[signed]), np.signbit(want[signed]))
