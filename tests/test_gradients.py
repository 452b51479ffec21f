"""Each derived gradient, proven twice: exactly against SymPy's unrolled derivative, and numerically."""
import numpy as np
import pytest
import sympy as sp

from derive.define.forms import case_count
from derive.engine import check


@pytest.mark.parametrize("case", [0, 1])
def test_symbolic_equals_brute_force_jacobian(op, derivation, case):
    """At tiny explicit sizes the index-form gradient equals SymPy's derivative of the unrolled forward."""
    for small in (True, False) if case == 0 else (True,):
        wrong = check.brute_force(derivation, check.example_sizes(op, small=small), check.hyper_values(op, case))
        assert not wrong, "\n".join(wrong[:5])


@pytest.mark.parametrize("case", [0, 1, 2])
def test_finite_differences_float64(op, module, rng, case):
    """Central differences of sum(forward * dout), every element, against backward; a third case only for
    an op that has one (a grouped conv2d's groups=2)."""
    if case >= max(2, case_count(op)):
        pytest.skip(f"{op.name} has {case_count(op)} hyper-parameter cases")
    inputs = check.sample(op, check.example_sizes(op), rng, hyper=check.hyper_values(op, case))
    result = check.finite_differences(op, module, inputs, check.hyper_values(op, case), seed=case)
    assert result.passed, f"max relative error per input: {result.errors}"
    assert result.max_error < 1e-5


def test_forward_matches_lambdify_of_definition(op, module, rng):
    """The generated forward computes the forward expression, element by element."""
    sizes = check.example_sizes(op, small=True)
    inputs = check.sample(op, sizes, rng, leading=())
    hyper = check.hyper_values(op)
    out, _ = module.forward(**inputs, **hyper)
    for node, got in zip(op.outputs, check.as_outputs(op, out)):
        expected = _reference(op, sizes, inputs, hyper, node=node)
        np.testing.assert_allclose(np.reshape(got, np.shape(expected)), expected, rtol=1e-12, atol=1e-12)


def _reference(op, sizes, inputs, hyper, precision=None, node=None):
    """The forward definition (of ``node``, one of the outputs, default the first), unrolled at explicit
    sizes and evaluated by lambdify (or mpmath)."""
    from derive.engine.check import _unroll
    from derive.engine.rewrite import inline
    node = node or op.output
    definition = inline(node.definition)
    hyper = {k: (hyper[h.default_to] if v is None and h.default_to else v)
             for h in op.hyper for k, v in hyper.items() if k == h.name}
    subs_sizes = check.with_hyper(op, sizes, hyper)
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
        ids = {k: v for k, v in values.items() if isinstance(v, sp.Integer)}
        expr = check.at_numbers(expr, ids) if ids else expr  # token ids first: W[idx[n], d] is then an element
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
    dout = 1.0 if op.is_loss else check.upstream_like(op, out, np.ones)
    grads = module.backward(dout, cache)
    assert all(np.all(np.isfinite(y)) for y in check.as_outputs(op, out))
    assert all(np.all(np.isfinite(g)) for g in grads.values())
    # an output that terms of the inputs' size cancel to (group norm's gamma xhat + beta near 0) keeps only the
    # absolute accuracy of those terms: a few units in the last place of 1000
    scale = max(float(np.max(np.abs(v))) for k, v in inputs.items() if op.input(k).domain != "index")
    for node, got in zip(op.outputs, check.as_outputs(op, out)):
        expected = _reference(op, sizes, inputs, hyper, precision=50 + 500, node=node)
        np.testing.assert_allclose(np.reshape(got, np.shape(expected)), expected, rtol=1e-12, atol=1e-15 * scale)


def test_float32_in_float32_out(op, module, rng):
    inputs64 = check.sample(op, check.example_sizes(op), rng)
    inputs32 = check.as_dtype(op, inputs64, np.float32)
    hyper = check.hyper_values(op)
    out32, cache32 = module.forward(**inputs32, **hyper)
    out64, cache64 = module.forward(**inputs64, **hyper)
    assert all(np.asarray(y).dtype == np.float32 for y in check.as_outputs(op, out32))
    dout = 1.0 if op.is_loss else check.upstream_like(op, out64, rng.standard_normal)
    single = tuple(g.astype(np.float32) for g in check.as_outputs(op, dout)) if not op.is_loss else (dout,)
    dout32 = single if op.also_outputs else single[0]
    grads32 = module.backward(dout32, cache32)
    grads64 = module.backward(dout, cache64)
    for y32, y64 in zip(check.as_outputs(op, out32), check.as_outputs(op, out64)):
        np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-5)
    for name, g in grads32.items():
        assert g.dtype == np.float32 and g.shape == inputs32[name].shape, name
        np.testing.assert_allclose(g, grads64[name], rtol=1e-3, atol=1e-4)


def test_inputs_are_never_modified(op, module, rng):
    inputs = check.sample(op, check.example_sizes(op), rng)
    before = {k: v.copy() for k, v in inputs.items()}
    out, cache = module.forward(**inputs, **check.hyper_values(op))
    dout = 1.0 if op.is_loss else check.upstream_like(op, out, rng.standard_normal)
    dout_before = [np.copy(g) for g in check.as_outputs(op, dout)]
    module.backward(dout, cache)
    for name, value in inputs.items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    for g, g_before in zip(check.as_outputs(op, dout), dout_before):
        np.testing.assert_array_equal(g, g_before)


def test_gradients_have_their_inputs_shape_and_dtype(op, module, rng):
    inputs = check.sample(op, check.example_sizes(op), rng)
    out, cache = module.forward(**inputs, **check.hyper_values(op))
    grads = module.backward(1.0 if op.is_loss else check.upstream_like(op, out, np.ones), cache)
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
