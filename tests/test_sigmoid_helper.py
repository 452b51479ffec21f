"""The generated sigmoid helper: exact to rounding over the whole range; no overflow, no invalid operation."""
import mpmath
import numpy as np
import pytest

from generated import sigmoid


@pytest.mark.parametrize("dtype, ulps", [(np.float64, 4), (np.float32, 4)])
def test_sigmoid_is_correctly_rounded_within_a_few_ulps_everywhere(dtype, ulps):
    limit = 740 if dtype == np.float64 else 100
    x = np.concatenate([np.linspace(-limit, limit, 2001), [-0.0, 0.0, 1e-30, -1e-30]]).astype(dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y, _ = sigmoid.forward(x)
    assert y.dtype == dtype
    mpmath.mp.dps = 50
    exact = np.array([float(1 / (1 + mpmath.exp(-mpmath.mpf(float(v))))) for v in x]).astype(dtype)
    normal = exact >= np.finfo(dtype).tiny
    assert np.all(np.abs(y[normal] - exact[normal]) <= ulps * np.spacing(exact[normal]))
    assert np.all(np.abs(y[~normal] - exact[~normal]) <= np.finfo(dtype).tiny)


def test_sigmoid_saturates_and_keeps_nan():
    y, _ = sigmoid.forward(np.array([-np.inf, np.inf, np.nan, -1e308, 1e308]))
    assert y[0] == 0 and y[1] == 1 and np.isnan(y[2]) and y[3] == 0 and y[4] == 1
