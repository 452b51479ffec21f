"""The cross-entropies' options (issue 13 part B): targets read as PyTorch reads them (integer class
labels or probabilities, the form chosen by t's dtype), each form derived from its own definition."""
import numpy as np
import pytest

from derive.define import Option, forms
from derive.define.registry import get
from derive.engine.derivation import derive

CROSS_ENTROPIES = ["softmax_cross_entropy", "cross_entropy"]


@pytest.mark.parametrize("name", CROSS_ENTROPIES)
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8])
def test_integer_targets_are_labels_and_run_the_labels_form(name, dtype, rng):
    module = __import__(f"generated.{name}", fromlist=["forward"])
    first = rng.uniform(0.1, 1.0, (4, 3))
    labels = np.array([2, 0, 1, 1], dtype=dtype)
    out, cache = module.forward(first, labels)
    assert cache["form"] == ("mean", "labels")
    one_hot = np.eye(3)[labels.astype(int)]
    expected, _ = module.forward(first, one_hot)
    np.testing.assert_allclose(out, expected, rtol=1e-12)  # a label is its one-hot row
    assert set(module.backward(cache)) == {get(name).inputs[0].name}


@pytest.mark.parametrize("name", CROSS_ENTROPIES)
@pytest.mark.parametrize("labels, message", [
    ([0, 3], r"^t: expected indices in 0\.\.2, got values from 0 to 3$"),
    ([-1, 0], r"^t: expected indices in 0\.\.2, got values from -1 to 0$"),
    ([[0, 1], [1, 2]], r"^t: expected shape \(N\), got \(2, 2\)$"),
])
def test_bad_labels_are_a_value_error_naming_t(name, labels, message, rng):
    module = __import__(f"generated.{name}", fromlist=["forward"])
    with pytest.raises(ValueError, match=message):
        module.forward(rng.uniform(0.1, 1.0, (2, 3)), np.array(labels))


@pytest.mark.parametrize("name", CROSS_ENTROPIES)
def test_the_labels_form_is_derived_from_its_one_hot_definition(name):
    """The labels form's gradient comes from its own definition: the bracket [k = t_n] where the
    probabilities form has t_{nk}, derived, not substituted into the other form's result."""
    labels = derive(get(name).form(target="labels"))
    probabilities = derive(get(name).form(target="probabilities"))
    assert labels.gradients[0].steps[0].expr != probabilities.gradients[0].steps[0].expr
    assert "KroneckerDelta(k, t[n])" in str(labels.gradients[0].expr)
    assert labels.gradients[0].index == probabilities.gradients[0].index


def test_an_option_read_from_an_argument_is_checked():
    with pytest.raises(ValueError, match="read is"):
        Option("target", ("a", "b"), read=("t", "dtype"))
    with pytest.raises(ValueError, match="read is"):
        Option("target", ("a", "b", "c"), read=("t", "integer"))
    op = get("mse")
    with pytest.raises(ValueError, match="reads 'u', which no form has"):
        forms(lambda kind: op, Option("kind", ("a", "b"), read=("u", "integer")))
