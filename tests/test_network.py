"""Networks composed into one op: CNN chains with flatten, network files (residual, concatenation, shared
weights), each derivation checked against the unrolled network; a wrong one must fail."""
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from derive.cli import main
from derive.define import Layer, Net
from derive.define.registry import get
from derive.engine import Mismatch, network
from derive.engine.network import chain_network, check_network, compose, derive_network, file_network
from derive.train import Network

ROOT = Path(__file__).resolve().parents[1]
CNN = ("conv2d", "relu", "max_pool2d", "flatten", "linear", "softmax_cross_entropy")
NETS = sorted((ROOT / "examples" / "networks").glob("*.py"))


@pytest.fixture(scope="module")
def cnn():
    composed = chain_network(list(CNN), {})
    return composed, network._derive(composed)


def test_cnn_error_terms_are_named_and_read_as_the_literature_writes_them(cnn):
    composed, d = cnn
    named = {a.node.name: a.expr for a in d.adjoints}
    assert set(named) >= {"y_1", "y_2", "y_3", "y_4", "net_5"}  # every layer's output has its error term
    assert str(named["y_3"]) == "dy_4[n, I'*J'*c + J'*i + j]"  # flatten read back, row-major, no bracket left
    assert str(named["net_5"]) == "(-t[n, k] + y_6[n, k])/N"  # softmax + cross-entropy: (y - t)/N
    assert named["y_1"].has(sp.Symbol("dy_2")) or "dy_2" in str(named["y_1"])  # ReLU: the mask on δ^{y_2}
    assert composed.relations[sp.Symbol("I", integer=True, positive=True)] == \
        sp.Symbol("IH", integer=True, positive=True) - sp.Symbol("KH_1", integer=True, positive=True) + 1


def test_cnn_agrees_with_the_unrolled_network_at_its_test_sizes(cnn):
    composed, d = cnn
    sizes = composed.sizes_at(composed.op.test_sizes)
    assert len({sizes[sp.Symbol(s, integer=True, positive=True)] for s in ("I'", "J'")}) == 2  # a swap shows
    assert check_network(composed, d, sizes) == []


def test_a_wrong_cnn_derivation_fails_the_check(cnn):
    """Each error term doubled in turn, and the flatten's order written column-major: each is caught."""
    composed, d = cnn
    small = composed.sizes_at(composed.op.small_sizes)
    for k, a in enumerate(d.adjoints):
        doubled = dataclasses.replace(a, steps=a.steps + (dataclasses.replace(a.steps[-1], expr=2 * a.expr),))
        wrong = dataclasses.replace(d, adjoints=d.adjoints[:k] + (doubled,) + d.adjoints[k + 1:])
        assert check_network(composed, wrong, small), f"doubling {a.tensor} went unnoticed"
    k, a = next((k, a) for k, a in enumerate(d.adjoints) if a.node.name == "y_3")
    i = sp.Symbol("i", integer=True)
    height, width = (sp.Symbol(s, integer=True, positive=True) for s in ("I'", "J'"))
    swapped = a.expr.xreplace({width * i: height * i})
    assert swapped != a.expr
    transposed = dataclasses.replace(a, steps=a.steps + (dataclasses.replace(a.steps[-1], expr=swapped),))
    wrong = dataclasses.replace(d, adjoints=d.adjoints[:k] + (transposed,) + d.adjoints[k + 1:])
    assert check_network(composed, wrong, composed.sizes_at(composed.op.test_sizes))


def test_cnn_gradients_equal_the_generated_layers_chained(cnn):
    """The symbolic network's values against an independent path: each layer's generated module run
    forward, then each backward in reverse order (derive.train, as the demo trains)."""
    composed, d = cnn
    sizes = composed.sizes_at(composed.op.test_sizes)
    rng = np.random.default_rng(3)
    arrays = {}
    for inp in composed.op.inputs:
        shape = tuple(int(sp.sympify(s).xreplace(sizes)) for s in inp.shape)
        values = rng.integers(-150, 150, shape) / 100.0
        if inp.name == "t":
            values = np.abs(values) + 0.1
            values = np.round(values / values.sum(axis=1, keepdims=True), 2)
            values[:, -1] = 1 - values[:, :-1].sum(axis=1)
        arrays[inp.name] = values
    point = {inp.tensor[idx]: sp.Rational(round(arrays[inp.name][idx] * 100), 100)
             for inp in composed.op.inputs for idx in np.ndindex(arrays[inp.name].shape)}
    point[d.upstream] = sp.S.One
    unrolled = network._Unrolled.of_op(composed.op, sizes)
    derived = network._derived_values(d, sizes, unrolled.forward(point), point)
    net = Network(CNN, [{"W": arrays["W_1"], "b": arrays["b_1"]}, {}, {}, {},
                        {"W": arrays["W_5"], "b": arrays["b_5"]}, {}])
    _, grads = net.loss_and_grads(arrays["x"], t=arrays["t"])
    for name, layer, key in (("W_1", 0, "W"), ("b_1", 0, "b"), ("W_5", 4, "W"), ("b_5", 4, "b")):
        want = grads[layer][key]
        got = np.array([float(derived[(name, idx)]) for idx in np.ndindex(want.shape)]).reshape(want.shape)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("path", NETS, ids=[p.stem for p in NETS])
def test_network_files_agree_with_their_unrolled_network(path):
    composed = file_network(path, {})
    d = network._derive(composed)
    assert check_network(composed, d, composed.sizes_at(composed.op.test_sizes)) == []


def test_a_residual_connection_sums_the_gradients_of_its_readers():
    composed = file_network(ROOT / "examples" / "networks" / "residual.py", {})
    d = derive_network(composed, use_cache=False)
    dx = d.gradient("x").expr
    terms = sp.Add.make_args(dx)
    assert len(terms) == 2 and any(str(t) == "ds[n, k]" for t in terms), dx  # δ^x = Σ_j w_jk δ^h_nj + δ^s
    assert "dh" in str(dx)


def test_a_shared_weight_gets_one_gradient_per_use_and_a_node_read_twice_the_sum():
    composed = file_network(ROOT / "examples" / "networks" / "branches.py", {})
    d = derive_network(composed, use_cache=False)
    dW = d.gradient("W_h").expr
    assert "dh" in str(dW) and "dp" in str(dW), dW  # through h and through p
    dh = next(a.expr for a in d.adjoints if a.node.name == "h")
    assert "da" in str(dh) and "db" in str(dh), dh  # the ReLU branch and the tanh branch
    db = next(a.expr for a in d.adjoints if a.node.name == "b")
    assert "M_1" in str(db)  # the tanh branch's half of the concatenation starts at M_1


def test_a_wrong_network_derivation_is_refused_before_anything_is_printed(monkeypatch):
    """The check runs inside the derivation: a derivation that disagrees is an error, never a result."""
    composed = file_network(ROOT / "examples" / "networks" / "residual.py", {})
    real = network.check_network
    monkeypatch.setattr(network, "check_network", lambda c, d, sizes: real(
        c, dataclasses.replace(d, adjoints=tuple(dataclasses.replace(
            a, steps=a.steps + (dataclasses.replace(a.steps[-1], expr=-a.expr),)) for a in d.adjoints)), sizes))
    with pytest.raises(Mismatch):
        network._derive(composed)


def test_the_cnn_commands(tmp_path, capsys):
    chain = ",".join(CNN)
    assert main(["latex", "--chain", chain, "--hyper", "conv2d.padding=1", "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert r"\delta^{y^{(3)}}_{ncij}" in out and "padding = 1" in out and r"x_{n,c,h - 1,w - 1}" in out
    assert main(["latex", "--chain", chain, "--form", "matrix", "--no-cache"]) == 0
    assert r"\boldsymbol{\delta}^{y^{(4)}} = \boldsymbol{\delta}^{net^{(5)}} W^{(5)}" in capsys.readouterr().out
    assert main(["doc", "--chain", chain, "--lang", "zh", "-o", str(tmp_path / "cnn.md"), "--no-cache"]) == 0
    assert (tmp_path / "cnn-network.svg").is_file() and "误差项" in (tmp_path / "cnn.md").read_text()
    assert main(["check", "--chain", chain]) == 0
    right = r"\delta^{y^{(4)}}_{n, I' J' c + J' i + j}"
    assert main(["verify", "--chain", chain, "--wrt", "dy_3", right, "--no-cache"]) == 0
    assert main(["verify", "--chain", chain, "--wrt", "dy_3", right.replace("J' i", "I' i"), "--no-cache"]) == 1


def test_the_network_file_commands(tmp_path, capsys):
    path = str(ROOT / "examples" / "networks" / "residual.py")
    assert main(["latex", "--net", path, "--no-cache"]) == 0
    assert r"\frac{\partial E}{\partial x_{nk}} = \sum_{j} w^{(h)}_{jk} \delta^{h}_{nj} + \delta^{s}_{nk}" \
        in capsys.readouterr().out
    assert main(["doc", "--net", path, "-o", str(tmp_path / "res.tex"), "--no-cache"]) == 0
    assert main(["check", "--net", path]) == 0
    assert main(["verify", "--net", path, "--wrt", "x", r"\sum_j w^{(h)}_{jk} \delta^{h}_{nj} + \delta^{s}_{nk}",
                 "--no-cache"]) == 0
    assert main(["verify", "--net", path, "--wrt", "x", r"\sum_j w^{(h)}_{jk} \delta^{h}_{nj}", "--no-cache"]) == 1


BAD = [
    (["latex", "--chain", "conv2d,relu,max_pool,flatten,linear,softmax_cross_entropy"], "unknown op 'max_pool'"),
    (["latex", "--chain", ",".join(CNN), "--hyper", "avg_pool2d.kernel=3"], "no layer 'avg_pool2d' in the chain"),
    (["latex", "--chain", ",".join(CNN), "--hyper", "conv2d.kernel=2"], "has no hyper-parameter 'kernel'"),
    (["latex", "--chain", ",".join(CNN), "--hyper", "conv2d.padding=one"], "must be a number"),
    (["latex", "--chain", ",".join(CNN), "--hyper", "conv2d.padding=-1"], "must satisfy padding >= 0"),
    (["latex", "--chain", "linear,conv2d,relu,half_sse"], "the shapes do not chain"),
    (["check", "--chain", "flatten,max_pool2d,half_sse"], "the shapes do not chain"),
    (["latex", "--chain", "linear,relu,linear,half_sse", "--hyper", "linear.b=1"], "number it, linear1"),
    (["latex", "--hyper", "conv2d.padding=1", "relu"], "is for --chain or --net"),
    (["latex", "--net", "no/such/net.py"], "no such file"),
    (["doc", "--chain", ",".join(CNN), "--example"], "--example and --sizes are for dense chains"),
    (["demo", "--net", str(NETS[0]), "--sizes", "Q=3"], "has no size 'Q'"),
    (["demo", "--net", str(NETS[0]), "--sizes", "D=0"], "a whole number >= 1"),
    (["demo", "--sizes", "D=3"], "--sizes is for --net"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a[1:3]) + " " + m for a, m in BAD])
def test_bad_network_input_is_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_a_net_file_that_does_not_fit_is_refused(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text("from derive.define import Add, Layer, Net\n"
                   "NET = Net('bad', [Layer('h', 'linear', 'x'), Add('s', 'h', 'x'), Layer('E', 'half_sse', 's')])\n")
    assert main(["latex", "--net", str(bad)]) == 2
    assert "they must be alike" in capsys.readouterr().err
    missing = Net("m", [Layer("h", "linear", "z")])
    with pytest.raises(ValueError, match="reads 'z', which no earlier layer computes"):
        compose(missing)
    shared = Net("s", [Layer("h", "linear", "x"), Layer("o", "linear", "h", share={"W": "q"})])
    with pytest.raises(ValueError, match="shares W of 'q'"):
        compose(shared)


def test_dense_chains_keep_their_path():
    assert not network.needs_network([get(n) for n in ("linear", "sigmoid", "linear", "sigmoid", "half_sse")])
    assert network.needs_network([get(n) for n in CNN])


# -- demo --net: a network file trained with the generated modules -------------------------------------

def _graph(path, seed=0, **given):
    from derive.demo import net_sizes, teacher_data
    from derive.train import Graph
    composed = file_network(path, {})
    rng = np.random.default_rng(seed)
    sizes = net_sizes(composed, 3, given)
    x, targets = teacher_data(composed, sizes, rng)
    return Graph.create(composed, sizes, rng), x, targets


@pytest.mark.parametrize("path", NETS, ids=[p.stem for p in NETS])
def test_a_network_files_gradients_equal_central_differences(path):
    """The skip connection's two paths, the node two branches read, the weights used twice: each summed."""
    graph, x, targets = _graph(path, D=3, M_1=4)
    _, grads = graph.loss_and_grads(x, **targets)
    h = 1e-6
    for name, value in graph.params.items():
        numeric = np.zeros_like(value)
        for i in np.ndindex(value.shape):
            keep = value[i]
            value[i] = keep + h
            up = graph.loss_and_grads(x, **targets)[0]
            value[i] = keep - h
            down = graph.loss_and_grads(x, **targets)[0]
            value[i] = keep
            numeric[i] = (up - down) / (2 * h)
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-5, atol=1e-8, err_msg=f"{path.stem}: {name}")


def test_shared_weights_are_one_parameter_with_the_sum_of_their_uses():
    graph, x, targets = _graph(ROOT / "examples" / "networks" / "branches.py")
    assert "W_p" not in graph.params and "W_h" in graph.params  # p uses h's W
    _, grads = graph.loss_and_grads(x, **targets)
    # the same network with p's W a copy of its own: the shared gradient is the sum of the two uses
    net = graph.composed.net
    layers = [Layer("p", "linear", "o", share={"b": "h"}) if layer.name == "p" else layer for layer in net.layers]
    composed = compose(dataclasses.replace(net, layers=tuple(layers)))
    from derive.train import Graph
    apart = Graph(composed, {**graph.params, "W_p": graph.params["W_h"].copy()})
    _, split = apart.loss_and_grads(x, **targets)
    np.testing.assert_allclose(grads["W_h"], split["W_h"] + split["W_p"], rtol=1e-12)
    assert np.abs(split["W_p"]).max() > 1e-6 and np.abs(split["W_h"]).max() > 1e-6


@pytest.mark.parametrize("path", NETS, ids=[p.stem for p in NETS])
def test_demo_trains_a_network_file_and_its_loss_falls(path, capsys):
    from derive.demo import run_net
    losses = run_net(file_network(path, {}), epochs=60, samples=50, quiet=True)
    assert losses[-1] < 0.5 * losses[0] and all(np.isfinite(losses))
    assert main(["demo", "--net", str(path), "--epochs", "20", "--sizes", "D=3"]) == 0
    out = capsys.readouterr().out
    assert "D=3" in out and out.count("E = ") >= 10
