"""``derive demo``: the article's 3-2-2 network (or a batch-norm, a convolutional or a recurrent one),
trained with the generated code.

The article's example: tell a man from a woman by weight, height and one
more measurement (here age, which carries no signal). Inputs are
standardised; targets are one-hot (man, woman); the objective is the
article's E = 1/2 sum (t - y)^2, averaged over the batch.
"""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from .train import Graph, Network, Recurrent

ARTICLE = ("linear", "sigmoid", "linear", "sigmoid", "half_sse")
FEATURES = ("weight/kg", "height/cm", "age/years")
CONV = ("conv2d", "relu", "max_pool2d", "flatten", "linear", "softmax_cross_entropy")
SIDE = 6  # pixels of a bars-and-stripes image
#: Networks the demo trains: ops, widths (input first; the conv network's are in conv_network), learning rate.
NETWORKS = {
    "article": (ARTICLE, (3, 2, 2), 1.0),
    "bn": (("linear", "batch_norm", "relu", "linear", "softmax_cross_entropy"), (3, 8, 2), 0.5),
    "conv": (CONV, None, 0.5),
    "lstm": (("lstm_cell", "linear", "softmax_cross_entropy"), None, 1.0),
}
DELAY, STEPS = 3, 12  # the lstm network echoes the bit it saw DELAY steps before, in sequences of STEPS


def people(n: int, rng: np.random.Generator):
    """``n`` synthetic people: features (n, 3) and one-hot targets (n, 2), half men, half women."""
    men = rng.random(n) < 0.5
    height = np.where(men, rng.normal(175, 7, n), rng.normal(162, 6, n))
    weight = np.where(men, rng.normal(76, 9, n), rng.normal(61, 8, n))
    age = rng.uniform(18, 70, n)
    x = np.stack([weight, height, age], axis=1)
    t = np.stack([men, ~men], axis=1).astype(float)
    return x, t


def bars_and_stripes(n: int, rng: np.random.Generator):
    """``n`` noisy images (n, 1, 6, 6): horizontal bars (class 0) or vertical stripes (class 1)."""
    images = np.zeros((n, 1, SIDE, SIDE))
    labels = rng.integers(0, 2, n)
    for k in range(n):
        lines = rng.random(SIDE) < 0.5
        lines[rng.integers(SIDE)] = True  # at least one line
        if labels[k] == 0:
            images[k, 0, lines, :] = 1.0
        else:
            images[k, 0, :, lines] = 1.0
    images += 0.3 * rng.standard_normal(images.shape)
    return images, np.eye(2)[labels]


def conv_network(rng: np.random.Generator) -> Network:
    """conv2d (1 -> 4 channels, 3x3, padding 1) -> relu -> max_pool2d (2) -> flatten -> linear (36 -> 2)."""
    pooled = 4 * (SIDE // 2) ** 2
    params = [{"W": rng.standard_normal((4, 1, 3, 3)) * np.sqrt(2 / 9), "b": np.zeros(4)}, {}, {}, {},
              {"W": rng.standard_normal((2, pooled)) * np.sqrt(2 / (pooled + 2)), "b": np.zeros(2)}, {}]
    hyper = [{"padding": 1}, {}, {"kernel": 2}, {}, {}, {}]
    return Network(CONV, params, hyper)


def delayed_bits(n: int, rng: np.random.Generator):
    """``n`` sequences of random bits, one-hot (STEPS, n, 2), and the target at each step: the bit
    DELAY steps before (0 for the first steps, before any bit came)."""
    bits = rng.integers(0, 2, (STEPS, n))
    echo = np.concatenate([np.zeros((DELAY, n), int), bits[:-DELAY]])
    return np.eye(2)[bits], np.eye(2)[echo]


WIDTH = 4  # every size of a network file not given by --sizes (the batch is the samples)


def net_sizes(composed, samples: int, given: dict) -> dict:
    """Every size of a network file's network: ``given`` (by name), the batch ``samples``, the others WIDTH."""
    import sympy as sp
    free = [s for s in composed.op.sizes if s not in composed.relations]
    names = {str(s) for s in free}
    for name in given:
        if name not in names:
            raise ValueError(f"--sizes: {composed.net.name} has no size {name!r}; its sizes are {', '.join(sorted(names))}")
    return composed.sizes_at({s: given.get(str(s), samples if s == sp.Symbol("N", integer=True, positive=True)
                                           else WIDTH) for s in free})


def teacher_data(composed, sizes: dict, rng: np.random.Generator):
    """Inputs drawn at random and the targets a teacher (the same network with other random weights)
    gives them: its scores' argmax, one-hot, for a loss on probabilities, else its prediction."""
    teacher = Graph.create(composed, sizes, rng)
    for name in teacher.params:
        teacher.params[name] *= 2.0  # a sharper teacher than the student's start
    x = rng.standard_normal(Graph.shape(composed.op.inputs[0].shape, sizes))
    scores = teacher.predict(x)
    targets = {}
    for inp in composed.op.inputs[1:]:
        if not inp.differentiable:
            shape = Graph.shape(inp.shape, sizes)
            if scores.shape != shape:
                raise ValueError(f"--net: the target {inp.name} of shape {shape} is not the prediction's "
                                 f"shape {scores.shape}: demo makes targets for a loss on its prediction only")
            targets[inp.name] = np.eye(shape[-1])[scores.argmax(axis=-1)] if inp.domain == "simplex" else scores
    return x, targets


def run_net(composed, epochs: int = 300, lr: float | None = None, seed: int = 0, samples: int = 200,
            sizes: dict | None = None, quiet: bool = False):
    """Train a network file's network (``composed``) full-batch with SGD on a teacher's data (see
    teacher_data); return the losses, first to last."""
    if not composed.op.is_loss:
        raise ValueError(f"--net: {composed.net.name} must end in a loss for demo to train it")
    lr = 0.2 if lr is None else lr
    rng = np.random.default_rng(seed)
    at = net_sizes(composed, samples, sizes or {})
    x, targets = teacher_data(composed, at, rng)
    graph = Graph.create(composed, at, rng)
    if not quiet:
        shown = ", ".join(f"{s}={v}" for s, v in at.items())
        print(f"{composed.net.name} ({composed.net.origin}): {' -> '.join(l.name for l in composed.net.layers)}, "
              f"sizes {shown}, learning rate {lr}")
    losses = []
    for epoch in range(epochs):
        loss, grads = graph.loss_and_grads(x, **targets)
        graph.step(grads, lr)
        losses.append(loss)
        if not quiet and (epoch % max(1, epochs // 10) == 0 or epoch == epochs - 1):
            print(f"epoch {epoch + 1:5d}  E = {loss:.5f}")
    if not quiet:
        print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f} on {samples} random inputs and a teacher network's targets")
    return losses


def run(epochs: int = 300, lr: float | None = None, seed: int = 0, samples: int = 200, quiet: bool = False,
        network: str = "article"):
    """Train full-batch with SGD; return the losses, first to last, and the final accuracy."""
    if network not in NETWORKS:
        raise ValueError(f"network: expected one of {sorted(NETWORKS)}, got {network!r}")
    ops, widths, default_lr = NETWORKS[network]
    lr = default_lr if lr is None else lr
    rng = np.random.default_rng(seed)
    if network == "conv":
        x, t = bars_and_stripes(samples, rng)
        net = conv_network(rng)
        ops, what = net.ops, f"{samples} bars-and-stripes images"
    elif network == "lstm":
        x, t = delayed_bits(samples, rng)
        net = Recurrent.create(2, 16, 2, rng)
        what = f"{samples} sequences of {STEPS} random bits, each step from the {DELAY + 1}th on echoing the bit " \
            f"{DELAY} steps back (chance 50%)"
        ops = (f"lstm_cell (unrolled over {STEPS} steps)",) + ops[1:]
    else:
        x, t = people(samples, rng)
        x = (x - x.mean(axis=0)) / x.std(axis=0)
        net = Network.create(ops, widths, rng)
        what = f"{samples} people ({', '.join(FEATURES)}; man or woman)"
    if not quiet:
        print(f"{' -> '.join(ops)}, learning rate {lr}")
    losses = []
    # disable=None: a bar on a terminal, none in a log file
    bar = tqdm(range(epochs), desc=f"training {network}", unit="epoch", disable=True if quiet else None,
               leave=False)
    for epoch in bar:
        loss, grads = net.loss_and_grads(x, t) if network == "lstm" else net.loss_and_grads(x, t=t)
        net.step(grads, lr)
        losses.append(loss)
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        if not quiet and (epoch % max(1, epochs // 10) == 0 or epoch == epochs - 1):
            tqdm.write(f"epoch {epoch + 1:5d}  E = {loss:.5f}")
    scores, t = (net.predict(x)[DELAY:], t[DELAY:]) if network == "lstm" else (net.predict(x), t)  # steps with a bit to echo
    accuracy = float(np.mean(scores.argmax(axis=-1) == t.argmax(axis=-1)))
    if not quiet:
        print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f}; accuracy {accuracy:.0%} on {what}")
    return losses, accuracy
