"""The chain rule across layers: the article's network and other chains, exactly and numerically."""
import numpy as np
import pytest
import sympy as sp

from derive.engine import check
from derive.engine.chain import BATCH_SIZE, chain, sample_form
from derive.train import Network

ARTICLE = ("linear", "sigmoid", "linear", "sigmoid", "half_sse")
CHAINS = [ARTICLE,
          ("linear", "tanh", "linear", "softmax_cross_entropy"),
          ("linear", "relu", "linear", "leaky_relu", "linear", "mse"),
          ("linear", "softmax", "cross_entropy"),
          ("linear", "batch_norm", "relu", "linear", "softmax_cross_entropy")]  # samples coupled


def _sizes(c, batch):
    names = {s for layer in c.layers for s in layer.sizes.values() if isinstance(s, sp.Symbol)}
    return {s: batch if s == BATCH_SIZE else 2 for s in names}


def test_article_gradients_equal_the_unrolled_network_exactly():
    """One sample, two nodes a layer: each chain-rule gradient cancels exactly against SymPy's."""
    c = chain(ARTICLE)
    wrong = check.chain_brute_force(c, _sizes(c, 1))
    assert not wrong, "\n".join(wrong[:3])


@pytest.mark.parametrize("names", CHAINS, ids=[",".join(c) for c in CHAINS])
def test_chain_gradients_equal_the_unrolled_network(names):
    """A batch of two: equal at random points to 60 digits (exact cancellation is too slow here)."""
    c = chain(names)
    wrong = check.chain_brute_force(c, _sizes(c, 2), exact=False)
    assert not wrong, "\n".join(wrong[:3])


def test_article_error_terms_in_the_article_form():
    c = chain(ARTICLE)
    deltas = [q for q in c.backward if q.kind == "delta"]
    k = [sample_form(q.expr) for q in deltas]
    y_k, t_k = sp.symbols("y_k t_k")

    def plain(expr):  # y_2[k] -> y_k and so on
        return expr.replace(lambda e: isinstance(e, sp.Indexed),
                            lambda e: sp.Symbol(f"{str(e.base.label).split('_')[0]}_{e.indices[0]}"))
    assert sp.expand(plain(k[0]) - (y_k - t_k) * y_k * (1 - y_k)) == 0
    out_grad = next(q for q in c.parameters if str(q.lhs.variables[0].base) == "W_2")
    assert str(plain(sample_form(out_grad.expr))) in ("delta_k*y_j", "y_j*delta_k")
    hidden = sample_form(deltas[1].expr)
    assert hidden.has(sp.Sum) and sp.factor_terms(hidden) == hidden


@pytest.mark.parametrize("names", CHAINS, ids=[",".join(c) for c in CHAINS])
def test_network_of_generated_modules_matches_finite_differences(names, rng):
    """The run-time chain rule (each generated backward in reverse order) against central differences."""
    widths = (3, 4, 2, 3)[: sum(n == "linear" for n in names) + 1]
    net = Network.create(names, widths, rng)
    for params in net.params:  # random biases: with zeros, a dead ReLU row puts the next input on a kink
        if "b" in params:
            params["b"] += rng.uniform(0.1, 0.5, params["b"].shape)
    x = rng.standard_normal((3, widths[0]))
    loss_op = names[-1]
    t = rng.uniform(0.1, 1.0, (3, widths[-1]))
    t = t / t.sum(axis=1, keepdims=True) if loss_op in ("softmax_cross_entropy",) else t
    _, grads = net.loss_and_grads(x, t=t)
    for layer, params in enumerate(net.params):
        for name, value in params.items():
            numeric = np.zeros_like(value)
            for idx in np.ndindex(value.shape):
                old = value[idx]
                value[idx] = old + 1e-6
                plus, _ = net.loss_and_grads(x, t=t)
                value[idx] = old - 1e-6
                minus, _ = net.loss_and_grads(x, t=t)
                value[idx] = old
                numeric[idx] = (plus - minus) / 2e-6
            np.testing.assert_allclose(grads[layer][name], numeric, rtol=1e-5, atol=1e-7)


def test_sgd_step_is_the_article_update():
    from derive.train import sgd_step
    w = {"W": np.array([1.0, 2.0])}
    sgd_step(w, {"W": np.array([0.5, -1.0])}, lr=0.1)
    np.testing.assert_allclose(w["W"], [0.95, 2.1])


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_a_network_with_batch_norm_keeps_the_batch_index_and_says_why(lang):
    """Batch norm couples the samples: the one-sample form (N = 1) would normalise every value to 0."""
    from codegen.latex.chain import chain_blocks
    coupled = chain(("linear", "batch_norm", "relu", "linear", "softmax_cross_entropy"))
    assert coupled.coupled_by == ("batch_norm",) and chain(ARTICLE).coupled_by == ()
    blocks = chain_blocks(coupled, lang)
    assert "batch norm" in blocks[0].text and "n" in blocks[0].text
    tex = "\n".join(b.equation.tex for b in blocks if b.equation)
    assert r"\mu_{j} = \frac{1}{N} \sum_{n} net_{nj}" in tex and r"\delta_{nj}" in tex
    article = "\n".join(b.equation.tex for b in chain_blocks(chain(ARTICLE), lang) if b.equation)
    assert r"\delta_{j}" in article and "_{n" not in article
