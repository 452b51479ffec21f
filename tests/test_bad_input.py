"""Bad input gets a ValueError or TypeError that names the argument: never a broadcasting surprise."""
import numpy as np
import pytest

from derive.define.forms import ClassAxis
from derive.engine import check


def _call(module, op, inputs):
    return module.forward(**inputs, **check.hyper_values(op))


def test_wrong_rank_names_the_argument(op, module, rng):
    if op.shape_kind == "flat":
        pytest.skip("any shape is valid for an elementwise op")
    inputs = check.sample(op, check.example_sizes(op), rng)
    for inp in op.inputs:
        if op.shape_kind == "leading" and inp.tensor.rank == 1 and inp.shape[0] == op.inputs[0].shape[0]:
            continue  # any shape is valid: an embedding's indices
        if inp is op.inputs[0] and any(isinstance(o, ClassAxis) for o in op.options):
            continue  # valid too: a cross-entropy's z[N, K, d...], more samples (the targets then must follow)
        bad = dict(inputs)
        bad[inp.name] = inputs[inp.name][..., None, None] if op.shape_kind == "fixed" else np.float64(1.0)[()]
        with pytest.raises(ValueError, match=rf"^{inp.name}: expected .*got"):
            _call(module, op, bad)


def test_mismatched_sizes_name_the_argument(op, module, rng):
    if len(op.inputs) < 2:
        pytest.skip("one input: nothing to mismatch")
    inputs = check.sample(op, check.example_sizes(op), rng)
    last = next((i for i in reversed(op.inputs) if any(i.shape[-1] in j.shape for j in op.inputs if j != i)), None)
    if last is None:
        pytest.skip("no size shared between inputs")
    bad = dict(inputs)
    bad[last.name] = np.concatenate([inputs[last.name], inputs[last.name]], axis=-1)
    with pytest.raises(ValueError, match=rf"^{last.name}: expected .*got"):
        _call(module, op, bad)


def test_integer_and_mixed_dtypes_are_refused(op, module, rng):
    inputs = check.sample(op, check.example_sizes(op), rng)
    indices = [i.name for i in op.inputs if i.domain == "index"]
    if indices:
        with pytest.raises(TypeError, match=rf"^{indices[0]}: expected an array of integers"):
            _call(module, op, {**inputs, indices[0]: inputs[indices[0]].astype(np.float64)})
    first, *others = [i.name for i in op.inputs if i.domain != "index"]
    with pytest.raises(TypeError, match=rf"^{first}: expected a float32 or float64"):
        _call(module, op, {**inputs, first: inputs[first].astype(np.int64)})
    floats = [i for i in others if op.input(i).domain != "mask"]  # a mask of any dtype is converted
    if floats:
        with pytest.raises(TypeError, match=rf"^{floats[0]}: expected dtype"):
            _call(module, op, {**inputs, floats[0]: inputs[floats[0]].astype(np.float32)})


def test_masks_take_bool_and_refuse_other_values(op, module, rng):
    masks = [i.name for i in op.inputs if i.domain == "mask"]
    if not masks:
        pytest.skip("no mask input")
    inputs = check.sample(op, check.example_sizes(op), rng)
    as_bool = {**inputs, masks[0]: inputs[masks[0]].astype(bool)}
    np.testing.assert_array_equal(_call(module, op, as_bool)[0], _call(module, op, inputs)[0])
    with pytest.raises(ValueError, match=rf"^{masks[0]}: expected only 0 and 1"):
        _call(module, op, {**inputs, masks[0]: inputs[masks[0]] * 2 + 0.5})


def test_hyper_parameters_are_checked(op, module, rng):
    checked = [h for h in op.hyper if h.valid]
    if not checked:
        pytest.skip("no constrained hyper-parameter")
    inputs = check.sample(op, check.example_sizes(op), rng)
    from derive.engine.network import _holds
    for h in checked:
        defaults = {o.name: o.default for o in op.hyper if o.default is not None}  # pooling's padding names the kernel
        invalid = [v for v in (-5, 5) if not _holds(h.valid, h.name, v, defaults)]  # -5 for most; 5 for ignore_index < 0
        assert invalid, f"{h.name}: neither -5 nor 5 is out of range"
        for value in invalid:  # (a valid 5 may still be refused for another reason: a dilation wider than x)
            with pytest.raises(ValueError, match=rf"^{h.name}: expected"):
                module.forward(**inputs, **{h.name: value})
        with pytest.raises(TypeError, match=rf"^{h.name}: expected"):
            module.forward(**inputs, **{h.name: "0.5"})


def test_dout_of_the_wrong_shape(op, module, rng):
    inputs = check.sample(op, check.example_sizes(op), rng)
    out, cache = _call(module, op, inputs)
    with pytest.raises(ValueError, match=r"^dout: expected"):
        module.backward(np.ones(np.shape(out) + (2,)), cache)


def test_a_loss_backward_takes_dout_1_by_default(op, module, rng):
    if not op.is_loss:
        pytest.skip("not a loss")
    inputs = check.sample(op, check.example_sizes(op), rng)
    _, cache = _call(module, op, inputs)
    explicit = module.backward(1.0, cache)
    for name, g in module.backward(cache=cache).items():
        np.testing.assert_array_equal(g, explicit[name])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_simplex_assumption_is_enforced(op, module, rng, dtype):
    """An op whose gradient used 'each row sums to 1' refuses rows that do not, in float32 too."""
    simplex = [i for i in op.inputs if i.domain == "simplex"]
    if not simplex:
        pytest.skip("no simplex input")
    inputs = check.sample(op, {**check.example_sizes(op), "K": 1000}, rng, dtype)
    _call(module, op, inputs)  # rows that sum to 1 up to rounding pass
    bad = dict(inputs)
    bad[simplex[0].name] = inputs[simplex[0].name] * dtype(0.75)
    if any("unnormalized" in o.read[1:] and o.read[0] == simplex[0].name for o in op.options if getattr(o, "read", ())):
        _, cache = _call(module, op, bad)  # a form of its own takes such rows (softmax_cross_entropy's soft targets)
        assert "unnormalized" in cache["form"]
        return
    with pytest.raises(ValueError, match=rf"^{simplex[0].name}: each row must sum to 1"):
        _call(module, op, bad)
