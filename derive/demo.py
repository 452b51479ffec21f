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

from .train import FLATTEN, Network, Recurrent

ARTICLE = ("linear", "sigmoid", "linear", "sigmoid", "half_sse")
FEATURES = ("weight/kg", "height/cm", "age/years")
CONV = ("conv2d", "relu", "max_pool2d", FLATTEN, "linear", "softmax_cross_entropy")
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
