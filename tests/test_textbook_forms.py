"""The activations, losses and norms of the literature come out in the form a careful author writes.

Each result is compared with the expected SymPy expression exactly (the same tree, not just the
same value), so a step of the pipeline that stops short of the form fails here; the steps
themselves are tested one by one below.
"""
import sympy as sp

from derive.define.functions import NormalPdf, Phi, Sigmoid, Softplus
from derive.define.registry import get
from derive.define.symbols import Intermediate, Iverson, Tensor, indices, sizes
from derive.engine import rewrite
from derive.engine.derivation import derive
from derive.engine.prepare import working_form
from codegen.module.stable import clamp_branches


def result(name, wrt=None):
    """The derivation, the gradient, its element's indices, and the named arrays by label."""
    d = derive(get(name))
    grad = d.gradient(wrt) if wrt else d.gradients[0]
    named = {str(e.base.label): e.base for e in sp.preorder_traversal(grad.expr) if isinstance(e, sp.Indexed)}
    named.update({i.name: i.tensor for i in d.op.inputs})
    return d, grad, named


def test_silu_is_y_plus_sigma_times_one_minus_y():
    """Ramachandran et al.'s f(x) + σ(x)(1 - f(x)): σ(x)(1 + x(1 - σ(x))) through y = x σ(x), which
    the backward reads from the cache instead of x."""
    d, grad, named = result("silu")
    (i,) = grad.index
    x, y, g = get("silu").input("x").tensor[i], named["y"][i], d.upstream[i]
    assert grad.expr == g * (y + Sigmoid(x) * (1 - y))


def test_gelu_is_phi_plus_x_times_the_density():
    d, grad, _ = result("gelu")
    (i,) = grad.index
    x, g = get("gelu").input("x").tensor[i], d.upstream[i]
    assert grad.expr == g * (Phi(x) + x * NormalPdf(x))
    assert get("gelu").output.definition.has(sp.erf) and not grad.expr.has(sp.erf, sp.exp)


def test_softplus_is_the_sigmoid_of_beta_x():
    d, grad, _ = result("softplus")
    (i,) = grad.index
    beta = sp.Symbol("beta", positive=True)
    assert grad.expr == d.upstream[i] * Sigmoid(beta * get("softplus").input("x").tensor[i])


def test_log_softmax_is_g_minus_the_softmax_times_the_sum_of_g():
    d, grad, named = result("log_softmax")
    n, k = grad.index
    j = next(v for s in sp.preorder_traversal(grad.expr) if isinstance(s, sp.Sum) for v, *_ in s.limits)
    K = sp.Symbol("K", integer=True, positive=True)
    g, p = d.upstream, named["p"]
    assert grad.expr == g[n, k] - p[n, k] * sp.Sum(g[n, j], (j, 0, K - 1))


def test_bce_with_logits_is_sigma_minus_t_over_n():
    d, grad, named = result("bce_with_logits")
    (n,) = grad.index
    N = sp.Symbol("N", integer=True, positive=True)
    z, t = named["z"][n], named["t"][n]
    assert grad.expr == d.upstream * (Sigmoid(z) - t) / N


def test_bce_with_logits_forward_is_two_softplus_terms():
    """log σ(z) and log(1 - σ(z)) as softplus: never the log of a sigmoid that rounds to 0 or 1."""
    definition = derive(get("bce_with_logits")).op.output.definition
    assert definition.has(Softplus) and not definition.has(sp.log)


def test_binary_cross_entropy_is_y_minus_t_over_y_times_one_minus_y():
    d, grad, named = result("binary_cross_entropy")
    (n,) = grad.index
    N = sp.Symbol("N", integer=True, positive=True)
    y, t = named["y"][n], named["t"][n]
    assert grad.expr == d.upstream * (y - t) / (N * y * (1 - y))


def test_huber_is_the_error_inside_and_delta_times_its_sign_outside():
    d, grad, named = result("huber")
    (n,) = grad.index
    N = sp.Symbol("N", integer=True, positive=True)
    delta = sp.Symbol("delta", positive=True)
    y, t = named["y"][n], named["t"][n]
    inside, outside = Iverson(delta > sp.Abs(y - t)), Iverson(delta <= sp.Abs(y - t))  # SymPy's order
    assert grad.expr == d.upstream * ((y - t) * inside + delta * sp.sign(y - t) * outside) / N


def test_rms_norm_is_rstd_times_g_gamma_minus_xhat_times_its_mean():
    """(ρ/D)(D γ g - x̂ Σ g γ x̂), the sum's γ x̂ read as the output y."""
    d, grad, named = result("rms_norm")
    n, dd = grad.index
    e = next(v for s in sp.preorder_traversal(grad.expr) if isinstance(s, sp.Sum) for v, *_ in s.limits)
    D = sp.Symbol("D", integer=True, positive=True)
    g, gamma, xhat, rstd, y = d.upstream, named["gamma"], named["xhat"], named["rstd"], named["y"]
    assert grad.expr == rstd[n] / D * (D * g[n, dd] * gamma[dd] - xhat[n, dd] * sp.Sum(g[n, e] * y[n, e], (e, 0, D - 1)))
    _, dgamma, _ = result("rms_norm", "gamma")
    assert dgamma.expr == sp.Sum(g[n, dd] * xhat[n, dd], (n, 0, sp.Symbol("N", integer=True, positive=True) - 1))


def test_elu_and_prelu_are_their_slopes_branch_by_branch():
    d, grad, named = result("elu")
    (i,) = grad.index
    x, g, alpha = named["x"][i], d.upstream[i], sp.Symbol("alpha", positive=True)
    assert grad.expr == g * Iverson(x > 0) + alpha * g * sp.exp(x) * Iverson(x <= 0)
    d, grad, named = result("prelu")
    n, c, s = grad.index
    x, a, g = named["x"][n, c, s], named["a"][c], d.upstream[n, c, s]
    assert grad.expr == g * Iverson(x > 0) + a * g * Iverson(x <= 0)


def test_gelu_tanh_reads_through_tanh_of_its_named_argument():
    """The derivative of tanh u through the named u (1 - tanh^2 u), never tanh of the cubic written out."""
    _, grad, named = result("gelu_tanh")
    (i,) = grad.index
    u = named["u"][i]
    assert grad.expr.has(1 - sp.tanh(u) ** 2)
    assert all(call.args[0] == u for call in grad.expr.atoms(sp.tanh))


# -- the steps that bring these forms ---------------------------------------------------

def test_two_folds_are_taken_together_when_neither_pays_alone():
    """x = xhat/rstd is shorter only once (eps + mean square)^(3/2) is rstd^(-3): RMSNorm's case."""
    n, d = indices("n d")
    N, D = sizes("N D")
    x, g = Tensor("x", N, D), Tensor("g", N, D)
    eps = sp.Symbol("eps", positive=True)
    ms = sp.Sum(x[n, d] ** 2, (d, 0, D - 1)) / D
    rstd = Intermediate("rstd", (n,), (N,), 1 / sp.sqrt(ms + eps), positive=True)
    xhat = Intermediate("xhat", (n, d), (N, D), x[n, d] * rstd[n])
    raw = g[n, d] * rstd[n] - x[n, d] * sp.Sum(g[n, d] * x[n, d], (d, 0, D - 1)).xreplace({d: sp.Symbol("e", integer=True)}) \
        / (D * (ms + eps) ** sp.Rational(3, 2))
    folded = rewrite.fold(raw, (rstd, xhat))
    assert not any(isinstance(e, sp.Indexed) and e.base == x for e in sp.preorder_traversal(folded))
    assert folded.has(xhat[n, d])


def test_terms_sharing_a_factor_are_grouped_where_that_shortens():
    s, y = sp.symbols("s y", positive=True)
    assert rewrite.grouped_terms(s + y - s * y) in (s * (1 - y) + y, y * (1 - s) + s)
    assert rewrite.grouped_terms(s + y) == s + y  # nothing shared
    assert rewrite.grouped_terms(2 * s + 2 * y + 2) == 2 * s + 2 * y + 2  # only numbers shared


def test_sigmoids_of_opposite_arguments_become_one():
    z, t = sp.symbols("z t", real=True)
    assert rewrite.textbook((1 - t) * Sigmoid(z) - t * Sigmoid(-z)) == Sigmoid(z) - t
    assert rewrite.one_sided_sigmoids(Sigmoid(-z)) == Sigmoid(-z)  # alone, σ(-z) stays


def test_signs_go_into_differences_and_odd_functions():
    y, t, delta = sp.symbols("y t delta", real=True)
    assert rewrite.fix_signs((t - y) / (y * (y - 1))) == (y - t) / (y * (1 - y))
    assert rewrite.fix_signs(-delta * sp.sign(t - y)) == delta * sp.sign(y - t)
    assert rewrite.fix_signs(-sp.tanh(y)) == -sp.tanh(y)  # an argument that is no difference stays


def test_working_form_names_the_complement_of_a_sigmoid_and_its_log():
    z, t = sp.symbols("z t", real=True)
    sigma = 1 / (1 + sp.exp(-z))
    assert working_form(1 - sigma) == Sigmoid(-z)
    assert working_form(sp.log(1 - sigma)) == -Softplus(z)
    assert working_form(-(t * sp.log(sigma) + (1 - t) * sp.log(1 - sigma))) == t * Softplus(-z) + (1 - t) * Softplus(z)
    N = sp.Symbol("N", integer=True, positive=True)
    (n,) = indices("n")
    ts, zs = Tensor("t", N), Tensor("z", N)
    loss = -sp.Sum(ts[n] * sp.log(1 / (1 + sp.exp(-zs[n]))), (n, 0, N - 1)) / N
    assert working_form(loss) == sp.Sum(ts[n] * Softplus(-zs[n]), (n, 0, N - 1)) / N


def test_an_exponential_in_a_nonpositive_branch_is_clamped():
    x, a = sp.symbols("x a", real=True)
    clamped = sp.exp(sp.Min(x, 0))
    assert clamp_branches(sp.Piecewise((x, x > 0), (a * (sp.exp(x) - 1), True))) \
        == sp.Piecewise((x, x > 0), (a * (clamped - 1), True))
    assert clamp_branches(a * sp.exp(x) * Iverson(x <= 0)) == a * clamped * Iverson(x <= 0)
    assert clamp_branches(a * sp.exp(x) * Iverson(x > 0)) == a * sp.exp(x) * Iverson(x > 0)  # x may be large here


def test_attention_names_the_gradients_of_its_scores_and_weights_as_the_literature_does():
    """dP = dY V^T, dS = P ⊙ (dP - rowsum(dP ⊙ P)), then dQ = dS K/√D, dK = dS^T Q/√D, dV = P^T dY: the
    same trees (up to the names of summed indices), in index form and in the matrix form's LaTeX."""
    from codegen.latex.blocks import adjoint_matrix_blocks
    d = derive(get("attention"))
    q, k, v = (d.op.input(name).tensor for name in "qkv")
    N, L, S, D, E = sizes("N L S D E")
    n, l, s, dd, e, r = indices("n l s d e r")
    g = d.upstream
    adjoint = {a.node.name: a for a in d.adjoints}
    dp, dz = adjoint["p"].tensor, adjoint["z"].tensor
    p = adjoint["p"].node

    def same(a, b):
        return rewrite.canonical_bound(a) == rewrite.canonical_bound(b)

    def at(expr, old, new):  # the derivation's own index letters, renamed to ours
        return expr.xreplace(dict(zip(old, new)))

    assert same(at(adjoint["p"].expr, adjoint["p"].index, (n, l, s)), sp.Sum(g[n, l, e] * v[n, s, e], (e, 0, E - 1)))
    assert same(at(adjoint["z"].expr, adjoint["z"].index, (n, l, s)),
                (dp[n, l, s] - sp.Sum(dp[n, l, r] * p[n, l, r], (r, 0, S - 1))) * p[n, l, s])
    through = {grad.input.name: grad for grad in d.backprop}
    assert same(at(through["q"].expr, through["q"].index, (n, l, dd)),
                sp.Sum(dz[n, l, s] * k[n, s, dd], (s, 0, S - 1)) / sp.sqrt(D))
    assert same(at(through["k"].expr, through["k"].index, (n, s, dd)),
                sp.Sum(dz[n, l, s] * q[n, l, dd], (l, 0, L - 1)) / sp.sqrt(D))
    assert same(at(through["v"].expr, through["v"].index, (n, s, e)), sp.Sum(g[n, l, e] * p[n, l, s], (l, 0, L - 1)))
    matrix = [b.equation.tex for b in adjoint_matrix_blocks(d, "en") if b.equation]
    assert matrix == [r"\boldsymbol{\delta}^{P} = G V^{T}",
                      r"\boldsymbol{\delta}^{Z} = P \odot \left(\boldsymbol{\delta}^{P} - \left(\left(P \odot "
                      r"\boldsymbol{\delta}^{P}\right)\mathbf{1}\right)\mathbf{1}^{T}\right)",
                      r"\frac{\partial J}{\partial Q} = \frac{1}{\sqrt{D}} \left(\boldsymbol{\delta}^{Z} K\right)",
                      r"\frac{\partial J}{\partial K} = \frac{1}{\sqrt{D}} \left({\boldsymbol{\delta}^{Z}}^{T} Q\right)",
                      r"\frac{\partial J}{\partial V} = P^{T} G"]
