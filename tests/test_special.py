"""The generated erfc, erf, Φ and softplus helpers: accurate over the whole range, in both dtypes, and fast."""
import mpmath
import numpy as np
import pytest
import sympy as sp

from codegen.module import special
from codegen.render import module_source
from derive.define.op import Input, Op
from derive.define.symbols import Intermediate, Tensor, indices, sizes
from derive.engine import check
from derive.engine.derivation import derive
from generated import gelu

#: Relative error allowed, by dtype (the rational form's own rounding, a few units in the last place).
TOLERANCE = {np.float64: 2e-15, np.float32: 6e-7}
LIMIT = {np.float64: 27.5, np.float32: 10.5}  # beyond: erfc is 0 in the dtype


def exact(function, values):
    with mpmath.workdps(50):
        return np.array([float(function(mpmath.mpf(float(v)))) for v in values])


def relative_error(got, want, dtype):
    normal = np.abs(want) >= np.finfo(dtype).tiny  # below: subnormal, compared absolutely
    assert np.all(np.abs(got[~normal] - want[~normal]) <= 2 * np.finfo(dtype).tiny)
    return np.max(np.abs(got[normal] - want[normal]) / np.abs(want[normal]))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_erfc_is_accurate_over_the_whole_range(dtype):
    x = np.concatenate([np.linspace(-6, LIMIT[dtype] + 1, 4001), [0.0, -0.0, 1e-30, -1e-30]]).astype(dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        got = gelu._erfc(x)
    assert got.dtype == dtype
    assert relative_error(got, exact(mpmath.erfc, x), dtype) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_normal_cdf_keeps_its_digits_in_the_far_lower_tail(dtype):
    """Φ(a) = erfc(-a/√2)/2 with e^{-a²/2} from a: dividing by √2 first would cost 1e-13 at a = -37."""
    top = LIMIT[dtype] * np.sqrt(2)
    a = np.concatenate([np.linspace(-top, 8, 4001), [-0.0, 0.0]]).astype(dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        got = gelu._normal_cdf(a)
    assert relative_error(got, exact(mpmath.ncdf, a), dtype) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_infinities_nan_and_every_shape(dtype):
    special_values = np.array([np.inf, -np.inf, np.nan, 1e30, -1e30], dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        np.testing.assert_array_equal(gelu._erfc(special_values), np.array([0, 2, np.nan, 0, 2], dtype))
        np.testing.assert_array_equal(gelu._normal_cdf(special_values), np.array([1, 0, np.nan, 1, 0], dtype))
    assert gelu._erfc(np.array(0.5, dtype)).shape == ()
    grid = np.linspace(-3, 3, 24, dtype=dtype).reshape(2, 3, 4)
    np.testing.assert_array_equal(gelu._erfc(grid), gelu._erfc(grid.ravel()).reshape(2, 3, 4))
    np.testing.assert_array_equal(gelu._erfc(grid.T), gelu._erfc(np.ascontiguousarray(grid.T)))


def test_chunks_give_the_values_of_one_pass():
    """The helper works through the array a chunk at a time: every chunk, the last one short, is computed."""
    x = np.random.default_rng(3).standard_normal(2 * gelu._CHUNK + 17) * 4
    whole = gelu._erfc(x)
    pieces = np.concatenate([gelu._erfc(x[i:i + 1000]) for i in range(0, x.size, 1000)])
    np.testing.assert_array_equal(whole, pieces)
    assert relative_error(whole[-50:], exact(mpmath.erfc, x[-50:]), np.float64) <= TOLERANCE[np.float64]


def test_the_coefficients_are_the_same_on_every_build():
    special.erfc_rational.cache_clear()
    first = special.erfc_table()
    special.erfc_rational.cache_clear()
    assert special.erfc_table() == first


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_erf_of_a_definition_that_names_no_normal_distribution(dtype):
    """y = erf(x) written alone (no 1 + erf to name Φ): the module's _erf, Taylor near 0, erfc beyond."""
    (S,) = sizes("S")
    (i,) = indices("i")
    x = Tensor("x", S)
    op = Op("erf_alone", "erf by itself.", (Input(x),), Intermediate("y", (i,), (S,), sp.erf(x[i])), shape_kind="flat")
    module = check.load("erf_alone", module_source(derive(op)))
    values = np.concatenate([np.linspace(-7, 7, 2001), [1e-8, -1e-8]]).astype(dtype)
    y, _ = module.forward(values)
    assert relative_error(y, exact(mpmath.erf, values), dtype) <= 4 * TOLERANCE[dtype]


@pytest.mark.parametrize("dtype, limit", [(np.float64, 740), (np.float32, 100)])
def test_softplus_helper_is_accurate_and_never_overflows(dtype, limit):
    from generated import softplus
    x = np.concatenate([np.linspace(-limit, limit, 4001), [-0.0, 1e-30, -1e-30]]).astype(dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        got = softplus._softplus(x)
    assert got.dtype == dtype
    assert relative_error(got, exact(lambda v: mpmath.log1p(mpmath.exp(v)), x), dtype) <= 4 * np.finfo(dtype).eps
    np.testing.assert_array_equal(softplus._softplus(np.array([np.inf, -np.inf, np.nan], dtype)),
                                  np.array([np.inf, 0, np.nan], dtype))


def test_a_cube_is_two_products_not_a_power():
    """NumPy squares fast but calls pow for x**3, fifty times slower: the tanh GELU's cubic is x*x*x."""
    from pathlib import Path
    source = (Path(__file__).resolve().parent.parent / "generated" / "gelu_tanh.py").read_text()
    code = source[source.index("def forward"):]  # the docstring above keeps the formula's x[i]**3
    assert "x*x*x" in code and "**3" not in code
