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
