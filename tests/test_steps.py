"""The split of a cell's statements over time (codegen.module.steps): what reads no state runs once for
every step, the weights' gradients once after the steps; refused where the batch index is no pure batch
index, and right on a cell unlike the built-in ones."""
import numpy as np
import pytest
import sympy as sp

from codegen.module import steps
from codegen.render import unrolled_source
from derive.define import Input, Intermediate, Op, Tensor, indices, sizes
from derive.engine.unroll import unroll

N, H = sizes("N H")
n, j, k = indices("n j k")
x, h, W = Tensor("x", N, H), Tensor("h", N, H), Tensor("W", H, H)


def _cell(name, pre_activation):
    """hn = tanh(a), the pre-activation a named (the error term the recursion runs on)."""
    a = Intermediate("a", (n, k), (N, H), pre_activation)
    return Op(name=name, doc=f"{name}.", inputs=(Input(x), Input(h), Input(W)),
              output=Intermediate("hn", (n, k), (N, H), sp.tanh(a[n, k])))


def _module(cell):
    namespace = {}
    exec(compile(unrolled_source(unroll(cell)), f"{cell.name}.py", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("hn, construct", [
    (x[n, k] + h[n, k] - sp.Sum(h[j, k], (j, 0, N - 1)), "sums over the samples"),
    (x[n, k] + h[n, k] / N, "reads the batch size N"),
    (x[n, k] + h[n, k] * h[0, k], "reads another sample"),
])
def test_a_cell_that_mixes_samples_is_refused_naming_the_construct(hn, construct):
    with pytest.raises(ValueError, match=construct) as error:
        unrolled_source(unroll(_cell("mixing", hn)))
    assert "no module over a sequence" in str(error.value) and "\n" not in str(error.value)


def test_a_cell_that_reads_its_input_beside_its_state_is_split_and_right(rng):
    """x enters both a product with the weights (hoisted, all steps at once) and an elementwise product
    with the state (read at each step as its rows); the gradients agree with central differences."""
    cell = _cell("gated", x[n, k] * h[n, k] + sp.Sum(W[k, j] * x[n, j], (j, 0, H - 1)))
    module = _module(cell)
    source = unrolled_source(unroll(cell))
    assert "x_t = x[rows]" in source and "for t in range(T)" in source
    inputs = {"x": rng.standard_normal((2, 5, 3)), "h": rng.standard_normal((2, 3)), "W": rng.standard_normal((3, 3))}
    (output, last), cache = module["forward"](*inputs.values())
    dout = (rng.standard_normal(output.shape), rng.standard_normal(last.shape))
    grads = module["backward"](dout, cache)

    def loss(values):
        (o, hn), _ = module["forward"](*values.values())
        return float((o * dout[0]).sum() + (hn * dout[1]).sum())

    for key, array in inputs.items():
        assert grads[key].shape == array.shape
        for idx in np.ndindex(array.shape):
            plus, minus = dict(inputs), dict(inputs)
            plus[key], minus[key] = array.copy(), array.copy()
            plus[key][idx] += 1e-6
            minus[key][idx] -= 1e-6
            assert grads[key][idx] == pytest.approx((loss(plus) - loss(minus)) / 2e-6, rel=1e-6, abs=1e-8), (key, idx)


def test_a_sum_is_split_into_the_part_that_reads_no_state_and_the_rest():
    kinds = {"x": steps.FOLDED, "h": steps.STEP, "U": steps.STATIC, "W": steps.STATIC, "b": steps.STATIC}
    forward = steps.split_forward(["a = h @ U", "a += x @ W", "a += b", "y = np.tanh(a)"], kinds, "N",
                                  lambda name: True, set(kinds))
    assert forward.hoisted == ["a_x = x @ W + b"]
    assert forward.step == ["a = h @ U", "a += a_x_t", "y = np.tanh(a)"]
    assert forward.rows == {"a_x": "a_x_t"}


def test_a_line_that_reads_no_state_stays_at_its_step_where_moving_it_would_change_what_a_step_reads():
    kinds = {"x": steps.FOLDED, "h": steps.STEP}
    lines = ["u = x*2", "v = u*h", "u = x*3", "y = u*v"]  # the second u must not overwrite the first before v
    forward = steps.split_forward(lines, kinds, "N", lambda name: True, set(kinds))
    assert forward.hoisted == [] and forward.step == [text.replace("x", "x_t") for text in lines]
    unsliceable = steps.split_forward(["u = x*2", "y = u*h"], kinds, "N", lambda name: name != "u", set(kinds))
    assert unsliceable.hoisted == [] and unsliceable.step == ["u = x_t*2", "y = u*h"]


def test_the_batch_size_is_never_read_with_the_steps_folded_into_the_batch():
    kinds = {"x": steps.FOLDED, "h": steps.STEP}
    forward = steps.split_forward(["u = x/N", "y = u*h"], kinds, "N", lambda name: True, set(kinds))
    assert forward.hoisted == [] and forward.step == ["u = x_t/N", "y = u*h"]
    with pytest.raises(steps.Unsplittable, match="batch size"):
        steps.split_backward(["dh = dout*u", "dW = dout.sum(axis=0)/N"], {"u": steps.STEP}, {"dout"}, {"dh"},
                             {"dW"}, "N", lambda name: True, {"u", "dout"})


def test_renaming_leaves_attributes_and_keywords_alone():
    assert steps.renamed("y = x.T @ x + f(x=x) + z.x", {"x": "x_t"}) == "y = x_t.T @ x_t + f(x=x_t) + z.x"
    assert steps.renamed("y = h @ W.T + W.shape[0]", {"W.T": "W_T"}) == "y = h @ W_T + W.shape[0]"


def test_a_weight_a_step_reads_transposed_is_transposed_once_before_the_steps():
    kinds = {"x": steps.FOLDED, "h": steps.STEP, "U": steps.STATIC}
    forward = steps.split_forward(["a = h @ U.T", "y = np.tanh(a)"], kinds, "N", lambda name: True, set(kinds))
    assert forward.hoisted == ["U_T = np.ascontiguousarray(U.T)"]
    assert forward.step == ["a = h @ U_T", "y = np.tanh(a)"]


def test_a_weights_gradient_must_be_a_sum_over_the_samples_of_their_own_terms():
    """Folded, a sum over n runs over (t, n): right for a sum of per-sample terms, wrong for a product of
    two such sums, a term outside them (T times too few) or a sum over pairs of samples."""
    batched = {x}
    own = sp.Sum(x[n, k] * W[k, j], (n, 0, N - 1))
    assert steps._summed_over_samples(2 * own + W[k, j] * own, batched, N) is None
    assert "no sum over the samples" in steps._summed_over_samples(own ** 2, batched, N)
    assert "no sum over the samples" in steps._summed_over_samples(own + W[k, j], batched, N)
    assert "pairs" in steps._summed_over_samples(sp.Sum(x[n, k] * x[j, k], (n, 0, N - 1), (j, 0, N - 1)), batched, N)
