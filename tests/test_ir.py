"""The vector IR's rewrites for speed: they change what is stored, never what is computed."""
import numpy as np
import sympy as sp

from codegen.ir import (Contract, Elementwise, Leaf, Reduce, canonical, rows_sum_to_one, share_arithmetic,
                        split_sums, subtrees)
from codegen.module.printer import ArrayPrinter

n, k, j = sp.symbols("n k j", integer=True)
a, b, c = sp.symbols("_h0 _h1 _h2")
z, t = Leaf((n, k), "z"), Leaf((n, k), "t")
m = Reduce((n,), "max", Leaf((n, j), "z"), sp.Symbol("K"))
s = Leaf((n,), "s")
shifted = Elementwise((n, k), a - b, ((a, z), (b, m)))


def full_size_arithmetic(tree):
    return {canonical(x) for x in subtrees(tree) if isinstance(x, Elementwise) and set(x.axes) == {n, k}}


def test_a_difference_two_statements_compute_becomes_one_node():
    exp_of_shift = Elementwise((n, k), sp.exp(a - b), ((a, z), (b, m)))
    log_softmax = Elementwise((n, k), a - b - sp.log(c), ((a, z), (b, m), (c, s)))
    first, second = share_arithmetic([exp_of_shift, Contract((), (t, log_softmax))])
    assert canonical(shifted) in full_size_arithmetic(first) & full_size_arithmetic(second)


def test_statements_with_nothing_in_common_are_left_alone():
    trees = [Elementwise((n, k), sp.exp(a), ((a, z),)), Elementwise((n, k), sp.log(a), ((a, t),))]
    assert share_arithmetic(trees) == trees


def test_a_sum_of_products_with_a_smaller_term_splits_and_keeps_its_value():
    u = Leaf((n, k), "u")
    tree = Contract((), (t, Elementwise((n, k), a - sp.log(b), ((a, u), (b, s)))))
    split = split_sums(tree)
    assert isinstance(split, Elementwise) and all(isinstance(x, Contract) for _, x in split.holes)
    assert not full_size_arithmetic(split)  # no full-size temporary left to build
    rng = np.random.default_rng(0)
    arrays = {"t": rng.random((4, 5)), "u": rng.standard_normal((4, 5)), "s": rng.random(4) + 1}
    printer = ArrayPrinter("fixed", {"t": (n, k), "u": (n, k), "s": (n,)})
    printer.assign("out", split, ())
    assert np.isclose(_run(printer, arrays)["out"], np.sum(arrays["t"] * (arrays["u"] - np.log(arrays["s"])[:, None])))


def test_a_shift_by_the_maximum_stays_with_what_it_shifts():
    tree = Contract((), (t, shifted))
    assert split_sums(tree) == tree


def _run(printer, arrays):
    scope = {"np": np, **arrays}
    exec("\n".join(printer.lines), scope)  # code the printer wrote from a fixed tree: no user text
    return scope


def test_a_scaled_difference_is_one_new_array_and_leaves_its_inputs_alone():
    dout, size = sp.symbols("dout N")
    y = Leaf((n, k), "y")
    tree = Elementwise((n, k), (a - b) * dout / size, ((a, y), (b, t)))
    printer = ArrayPrinter("fixed", {"y": (n, k), "t": (n, k)})
    printer.assign("dy", tree, (n, k))
    assert printer.lines == ["dy = y - t", "dy *= dout/N"]
    rng = np.random.default_rng(1)
    arrays = {"y": rng.random((3, 4)), "t": rng.random((3, 4)), "dout": 0.5, "N": 3}
    before = {name: np.copy(v) for name, v in arrays.items()}
    scope = _run(printer, arrays)
    assert np.allclose(scope["dy"], (before["y"] - before["t"]) * 0.5 / 3)
    assert all(np.array_equal(arrays[name], before[name]) for name in ("y", "t"))


def test_a_sum_over_the_rows_of_a_probability_input_is_dropped_only_where_it_is_one():
    """sum_n sum_k t[n,k] log s[n] is sum_n log s[n] when t's rows sum to 1; t against a k-array stays."""
    log_s = Elementwise((n,), sp.log(a), ((a, s),))
    tree = Contract((), (log_s, t))
    dropped = rows_sum_to_one(tree, {"t"})
    assert isinstance(dropped, Reduce) and dropped.arg == log_s
    assert rows_sum_to_one(tree, set()) == tree  # t not declared a probability input
    against_k = Contract((), (t, Elementwise((n, k), sp.log(a), ((a, z),))))
    assert rows_sum_to_one(against_k, {"t"}) == against_k
    rng = np.random.default_rng(2)
    rows = rng.random((4, 5))
    arrays = {"t": rows / rows.sum(axis=1, keepdims=True), "s": rng.random(4) + 1}
    printer = ArrayPrinter("fixed", {"t": (n, k), "s": (n,)})
    printer.assign("out", dropped, ())
    assert np.isclose(_run(printer, arrays)["out"], np.sum(arrays["t"] * np.log(arrays["s"])[:, None]))


def _printed(name, tree, leaves):
    printer = ArrayPrinter("fixed", leaves)
    printer.assign(name, tree, (n, k))
    return printer


LEAVES = {"dout": (n, k), "y": (n, k), "z": (n, k), "g": (k,), "r": (k,), "s": (n,)}


def _arrays(rng):
    return {"dout": rng.standard_normal((3, 4)), "y": rng.random((3, 4)), "z": rng.standard_normal((3, 4)),
            "g": rng.standard_normal(4), "r": rng.random(4) + 1, "s": rng.standard_normal(3), "q": 0.25}


def test_a_product_of_full_size_factors_is_one_new_array_scaled_in_place():
    """dout*y*(1 - y): the arithmetic factor makes the array, the others multiply it in place."""
    dout, y = Leaf((n, k), "dout"), Leaf((n, k), "y")
    printer = _printed("dx", Elementwise((n, k), a * b * (1 - b), ((a, dout), (b, y))), LEAVES)
    assert printer.lines[0] == "dx = 1 - y" and sorted(printer.lines[1:]) == ["dx *= dout", "dx *= y"]
    arrays = _arrays(np.random.default_rng(3))
    before = {name: np.copy(v) for name, v in arrays.items()}
    scope = _run(printer, arrays)
    assert np.allclose(scope["dx"], before["dout"] * before["y"] * (1 - before["y"]))
    assert all(np.array_equal(arrays[name], before[name]) for name in before)


def test_an_input_times_small_arrays_multiplies_the_small_ones_first():
    """dout[n,k] g[k] r[k]: one full-size pass, dout*(g*r), not one per small array."""
    dout, g, r = Leaf((n, k), "dout"), Leaf((k,), "g"), Leaf((k,), "r")
    printer = _printed("dx", Elementwise((n, k), a * b * c, ((a, dout), (b, g), (c, r))), LEAVES)
    assert printer.lines == ["dx = (g*r)*dout"]
    arrays = _arrays(np.random.default_rng(4))
    assert np.allclose(_run(printer, arrays)["dx"], arrays["dout"] * arrays["g"] * arrays["r"])


def test_exp_of_a_new_array_is_computed_into_it():
    z, s_ = Leaf((n, k), "z"), Leaf((n,), "s")
    printer = _printed("e", Elementwise((n, k), sp.exp(a - b), ((a, z), (b, s_))), LEAVES)
    assert printer.lines == ["e = z - s[:, None]", "np.exp(e, out=e)"]
    arrays = _arrays(np.random.default_rng(5))
    assert np.allclose(_run(printer, arrays)["e"], np.exp(arrays["z"] - arrays["s"][:, None]))
    named = _printed("e", Elementwise((n, k), sp.exp(a), ((a, z),)), LEAVES)
    assert named.lines == ["e = np.exp(z)"]  # an input is read, never overwritten


def test_a_stored_array_times_a_coefficient_is_added_without_a_full_size_temporary():
    """dout*g - q*g*y: the second term goes through _add_product, a few rows at a time."""
    from generated.batch_norm import _add_product
    dout, g, y = Leaf((n, k), "dout"), Leaf((k,), "g"), Leaf((n, k), "y")
    q = sp.Symbol("q")
    printer = _printed("dx", Elementwise((n, k), a * b - q * b * c, ((a, dout), (b, g), (c, y))), LEAVES)
    assert printer.lines[0] == "dx = dout*g" and printer.lines[1].startswith("_add_product(dx, y, -")
    assert "add_product" in printer.helpers
    arrays = _arrays(np.random.default_rng(6))
    scope = _run(printer, {**arrays, "_add_product": _add_product})
    np.testing.assert_allclose(scope["dx"], arrays["dout"] * arrays["g"] - 0.25 * arrays["g"] * arrays["y"])


def test_add_product_works_in_blocks_of_rows_and_broadcasts_its_coefficient(monkeypatch):
    import generated.batch_norm as module
    monkeypatch.setattr(module, "_CHUNK", 8)  # 2 rows of 4 per block over 5 rows: a short last block
    rng = np.random.default_rng(7)
    out, array, coefficient = rng.standard_normal((5, 4)), rng.standard_normal((5, 4)), rng.standard_normal((5, 1))
    expected = out + array * coefficient
    module._add_product(out, array, coefficient)
    np.testing.assert_array_equal(out, expected)  # the same products, the same sums


def _one_hot_rows():
    """dz = (y - [k = t_n] w_k) c_n, the labels form of a softmax cross-entropy's gradient, and its inputs."""
    from codegen.ir import Arange
    y, w, labels, scale = Leaf((n, k), "y"), Leaf((k,), "w"), Leaf((n,), "t"), Leaf((n,), "c")
    d, e, f, g, h = sp.symbols("_h3 _h4 _h5 _h6 _h7")
    tree = Elementwise((n, k), (d - sp.KroneckerDelta(e, f) * g) * h,
                       ((d, y), (e, Arange((k,), sp.Symbol("K"))), (f, labels), (g, w), (h, scale)))
    rng = np.random.default_rng(2)
    arrays = {"y": rng.random((3, 4)), "w": rng.random(4), "t": np.array([2, 0, 3]), "c": rng.random(3), "K": 4}
    expected = (arrays["y"] - np.eye(4)[arrays["t"]] * arrays["w"]) * arrays["c"][:, None]
    return tree, arrays, expected


def test_a_one_hot_row_added_to_an_array_is_one_entry_per_row():
    """No N x K comparison: the one-hot term is subtracted at (n, t_n), its class weight read there (w[t_n])."""
    tree, arrays, expected = _one_hot_rows()
    printer = ArrayPrinter("fixed", {"y": (n, k), "w": (k,), "t": (n,), "c": (n,)})
    printer.assign("dz", tree, (n, k))
    assert printer.lines == ["dz = c[:, None]*y", "dz[np.arange(dz.shape[0]), t] -= c*w[t]"]
    np.testing.assert_allclose(_run(printer, arrays)["dz"], expected)


def test_a_one_hot_row_alone_is_zeros_but_one_entry_per_row():
    tree, arrays, expected = _one_hot_rows()
    d = sp.Symbol("_h3")
    alone = Elementwise((n, k), -tree.expr.xreplace({d: 0}), tuple((s, c) for s, c in tree.holes if s != d))
    printer = ArrayPrinter("fixed", {"w": (k,), "t": (n,), "c": (n,)})
    printer.float_dtype = "np.float64"
    printer.assign("dz", alone, (n, k))
    assert not any("==" in line for line in printer.lines)
    np.testing.assert_allclose(_run(printer, arrays)["dz"], arrays["y"] * arrays["c"][:, None] - expected)


def test_a_coefficient_the_terms_share_is_computed_once():
    """(y - [k = t_n]) c_n r_n: c r once, for the array and the one-hot row alike."""
    tree, arrays, expected = _one_hot_rows()
    g, r = sp.Symbol("_h6"), sp.Symbol("_h8")
    shared = Elementwise((n, k), tree.expr.xreplace({g: 1}) * r, tuple((s, c) for s, c in tree.holes if s != g)
                         + ((r, Leaf((n,), "r")),))
    printer = ArrayPrinter("fixed", {"y": (n, k), "t": (n,), "c": (n,), "r": (n,)})
    printer.assign("dz", shared, (n, k))
    assert printer.lines == ["u = c*r", "dz = u[:, None]*y", "dz[np.arange(dz.shape[0]), t] -= u"]
    arrays["r"] = np.random.default_rng(3).random(3)
    rows = arrays["c"] * arrays["r"]
    np.testing.assert_allclose(_run(printer, arrays)["dz"], (arrays["y"] - np.eye(4)[arrays["t"]]) * rows[:, None])


def test_pool_candidates_are_not_computed_where_the_defaults_make_every_cell_one():
    """Max pooling's candidates (the window cells inside the image) are all of them at padding 0, whatever
    the kernel, stride and dilation; with ceil_mode a partial last window has cells outside it."""
    from codegen.ir import Lowering, Mask
    from derive.define.registry import get

    def mask_of(op):
        names = {i.tensor: i.name for i in op.inputs} | {node: node.name for node in op.intermediates}
        defaults = {s: sp.Integer(v) for h in op.hyper if isinstance(h.default, int) for s, v in h.bind(h.default).items()}
        node = next(node for node in op.intermediates if node.name == "mask")
        lowered = Lowering(names, defaults).statement(node.definition, tuple(node.index), tuple(node.shape))
        assert isinstance(lowered, Mask) and lowered.candidates is not None
        return lowered

    pool = get("max_pool2d")
    padding = next(h for h in pool.hyper if h.name == "padding").symbols
    assert mask_of(pool).all_candidates_at == tuple((s, 0) for s in padding)
    assert mask_of(pool.form(ceil_mode=True)).all_candidates_at == ()
