"""The derivation pipeline's steps, one by one: textbook results, delta elimination, folding, identities."""
import pytest
import sympy as sp

from derive.engine import rewrite
from derive.engine.deltas import drop_implied_brackets, eliminate_deltas, implied
from derive.engine.derivation import derive
from derive.define.op import Input, Op
from derive.define.registry import get
from derive.define.symbols import Intermediate, Iverson, Tensor, indices, sizes


def gradient(name, wrt=None):
    d = derive(get(name))
    return d, (d.gradient(wrt) if wrt else d.gradients[0])


def element(d, name, *idx):
    return next(e for e in sp.preorder_traversal(d.gradients[0].expr)
                if isinstance(e, sp.Indexed) and str(e.base.label) == name).base[idx]


@pytest.mark.parametrize("name, expected", [
    ("sigmoid", lambda g, y: g * y * (1 - y)),
    ("tanh", lambda g, y: g * (1 - y ** 2)),
])
def test_activation_derivatives_come_out_in_terms_of_the_output(name, expected):
    d, grad = gradient(name)
    (i,) = grad.index
    g, y = d.upstream[i], element(d, "y", i)
    assert grad.expr == expected(g, y)
    assert not any(isinstance(e, sp.exp) for e in sp.preorder_traversal(grad.expr))


def test_softmax_cross_entropy_is_y_minus_t():
    d, grad = gradient("softmax_cross_entropy")
    n, k = grad.index
    N = sp.Symbol("N", integer=True, positive=True)
    y, t = element(d, "y", n, k), get("softmax_cross_entropy").input("t").tensor[n, k]
    assert sp.simplify(grad.expr - d.upstream * (y - t) / N) == 0
    assert [s.name for s in grad.steps][-1] == "apply identities"


def test_softmax_is_y_times_g_minus_its_weighted_mean():
    d, grad = gradient("softmax")
    n, k = grad.index
    y = element(d, "y", n, k)
    assert isinstance(grad.expr, sp.Mul) and y in grad.expr.args
    assert grad.expr.has(sp.Sum)


def test_linear_gradients_are_the_three_products():
    d = derive(get("linear"))
    assert str(d.gradient("W").expr) == "Sum(g[n, k]*x[n, j], (n, 0, N - 1))"
    assert str(d.gradient("x").expr) == "Sum(W[k, j]*g[n, k], (k, 0, M - 1))"
    assert str(d.gradient("b").expr) == "Sum(g[n, k], (n, 0, N - 1))"


def test_relu_gradient_is_zero_at_zero_like_pytorch():
    d, grad = gradient("relu")
    (i,) = grad.index
    x = get("relu").input("x").tensor[i]
    assert grad.expr == d.upstream[i] * Iverson(x > 0)


def test_relu_is_not_folded_onto_its_output():
    """y = max(x, 0) has no inverse: folding x into y would be wrong for negative x."""
    _, grad = gradient("relu")
    assert any(isinstance(e, sp.Indexed) and str(e.base.label) == "x" for e in sp.preorder_traversal(grad.expr))


def test_delta_elimination_keeps_the_range_of_an_affine_solution():
    """sum_i sum_p g[i] w[p] [i s + p = a]: p = a - i s only where 0 <= a - i s <= K-1."""
    i, p, a = indices("i p a")
    H, K, s = sizes("H K s")
    g, w = Tensor("g", H), Tensor("w", K)
    expr = sp.Sum(sp.Sum(g[i] * w[p] * sp.KroneckerDelta(i * s + p, a), (p, 0, K - 1)), (i, 0, H - 1))
    out = eliminate_deltas(expr, {a: (0, H * s + K - 1)})
    assert out.has(Iverson)
    condition = next(e for e in sp.preorder_traversal(out) if isinstance(e, Iverson)).condition
    assert condition.has(a - i * s) or condition.has(-i * s + a)
    assert not out.has(sp.KroneckerDelta)


def test_delta_elimination_drops_conditions_the_ranges_imply():
    n, q = indices("n q")
    (N,) = sizes("N")
    x = Tensor("x", N)
    out = eliminate_deltas(sp.Sum(x[n] * sp.KroneckerDelta(n, q), (n, 0, N - 1)), {q: (0, N - 1)})
    assert out == x[q]


def test_an_identity_that_does_not_hold_is_refused():
    n, k = indices("n k")
    N, K = sizes("N K")
    x = Tensor("x", N, K)
    y = Intermediate("y", (n, k), (N, K), 2 * x[n, k])
    op = Op("bogus", "An op claiming a false identity.", (Input(x),), y,
            theorems=((sp.Sum(y[n, k], (k, 0, K - 1)), sp.S.One),))
    with pytest.raises(ValueError, match="cannot prove"):
        derive(op)


def test_textbook_keeps_signs_in_reading_order():
    y = sp.Symbol("y")
    assert rewrite.textbook(y - y ** 2) == y * (1 - y)


def test_unknown_op_is_a_value_error_naming_the_known_ones():
    with pytest.raises(ValueError, match="unknown op 'conv3d'.*linear"):
        get("conv3d")


def test_an_index_read_through_an_element_is_bounded_by_the_elements_range():
    """[t_n <= K - 1] for labels t in 0..K-1 holds, n ranged or not; one class more does not."""
    n = indices("n")[0]
    N, K = sizes("N K")
    t = Tensor("t", N, integer=True)
    assert implied(t[n] <= K - 1, {t: (0, K - 1), n: (0, N - 1)})
    assert not implied(t[n] <= K - 2, {t: (0, K - 1), n: (0, N - 1)})


def test_a_range_ending_at_a_floor_bounds_what_runs_over_it():
    """A pool's last window i = floor((H - K)/s) ends inside the image: i s + u <= H - 1; not so for one
    window more."""
    i, u = indices("i u")
    H, K, s = sizes("H K s")
    inside = i * s + u <= H - 1
    assert implied(inside, {i: (0, sp.floor((H - K) / s)), u: (0, K - 1)})
    assert not implied(inside, {i: (0, sp.floor((H - K) / s) + 1), u: (0, K - 1)})


def test_a_label_is_a_class_only_where_it_is_not_ignored():
    """A bracket the labels' range implies is 1 in a product with [t_n != ignore] (the forward checks
    every other label), and only there: not on its own, not for another sample, not inside a function."""
    n, m = indices("n m")
    N, K = sizes("N K")
    t, x = Tensor("t", N, integer=True), Tensor("x", N)
    ignore = sp.Symbol("ignore_index", real=True)
    guarded = {t: (0, K - 1, ignore)}
    kept, in_range = Iverson(sp.Ne(t[n], ignore)), Iverson(t[n] <= K - 1)
    assert drop_implied_brackets(in_range * kept * x[n], {}, guarded) == kept * x[n]
    assert drop_implied_brackets(kept * (in_range * x[n] + 1), {}, guarded) == kept * (x[n] + 1)
    for alone in (in_range * x[n], Iverson(sp.Ne(t[m], ignore)) * in_range * x[n], kept * sp.exp(in_range),
                  kept * sp.Sum(in_range * x[n], (n, 0, N - 1))):
        assert drop_implied_brackets(alone, {}, guarded) == alone
