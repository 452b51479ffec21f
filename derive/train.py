"""Training with the generated modules: a chain of ops, and the article's update rule.

The backward pass here is nothing but the generated ``backward`` of each
op called in reverse order: the chain rule across layers at run time.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import numpy as np

from derive.define.network import Add
from derive.define.registry import get


def sgd_step(params: dict, grads: dict, lr: float) -> None:
    """The article's update, in place: ``w_new = w_old - eta * dE/dw`` (equations 4 to 6)."""
    for name, value in params.items():
        value -= lr * grads[name]


def update_running_stats(running_mean, running_var, cache, momentum: float = 0.1):
    """The running estimates batch norm uses at inference, updated as PyTorch does.

    ``new = (1 - momentum) * old + momentum * batch``, with the batch variance
    made unbiased (times ``m / (m - 1)``, ``m`` values per channel) for the
    running variance, while the forward pass itself normalises by the biased
    one. ``cache`` is what ``generated.batch_norm.forward`` returned. Returns
    new arrays; the old ones are left as they are.
    """
    m = cache["N"] * cache["S"]  # at least 2: the forward refuses one value per channel
    mean = (1 - momentum) * np.asarray(running_mean) + momentum * cache["mu"]
    var = (1 - momentum) * np.asarray(running_var) + momentum * cache["var"] * (m / (m - 1))
    return mean.astype(cache["dtype"]), var.astype(cache["dtype"])


@dataclass
class Network:
    """Ops in a chain, first layer first; each layer's parameters and hyper-parameters by name.

    ``loss_and_grads`` takes the first input and the loss's extra inputs (the target ``t``).
    """

    ops: tuple
    params: list = field(default_factory=list)  # one dict per layer
    hyper: list = field(default_factory=list)  # one dict per layer

    def __post_init__(self):
        for name in self.ops:
            get(name)  # unknown op names fail here, with the list of known ones
        self.params = self.params or [{} for _ in self.ops]
        self.hyper = self.hyper or [{} for _ in self.ops]

    @staticmethod
    def create(ops, widths, rng: np.random.Generator, dtype=np.float64) -> "Network":
        """A network with Xavier-initialised weights for its linear layers, ``widths`` from input to output."""
        params, w = [], iter(zip(widths, widths[1:]))
        width = widths[0]
        for name in ops:
            if name == "linear":
                d, width = next(w)
                scale = np.sqrt(2.0 / (d + width))
                params.append({"W": (rng.standard_normal((width, d)) * scale).astype(dtype),
                               "b": np.zeros(width, dtype)})
            elif name in ("batch_norm", "layer_norm"):
                params.append({"gamma": np.ones(width, dtype), "beta": np.zeros(width, dtype)})
            else:
                params.append({})
        return Network(tuple(ops), params)

    def modules(self):
        return [importlib.import_module(f"generated.{name}") for name in self.ops]

    def loss_and_grads(self, x: np.ndarray, **targets):
        """Forward through every layer, then each generated backward in reverse order."""
        caches, value = [], x
        modules = self.modules()
        for module, name, params, hyper in zip(modules, self.ops, self.params, self.hyper):
            extra = targets if get(name).is_loss else {}
            value, cache = module.forward(value, **params, **extra, **hyper)
            caches.append(cache)
        grads = [{} for _ in self.ops]
        upstream = 1.0  # dE/dE
        for pos in reversed(range(len(self.ops))):
            g = modules[pos].backward(upstream, caches[pos])
            first = get(self.ops[pos]).inputs[0].name
            upstream = g[first]
            grads[pos] = {k: v for k, v in g.items() if k != first}
        return float(value), grads

    def predict(self, x: np.ndarray) -> np.ndarray:
        value = x
        for module, name, params, hyper in zip(self.modules(), self.ops, self.params, self.hyper):
            if get(name).is_loss:
                break
            value, _ = module.forward(value, **params, **hyper)
        return value

    def step(self, grads, lr: float) -> None:
        for params, g in zip(self.params, grads):
            sgd_step(params, g, lr)


@dataclass
class Recurrent:
    """An LSTM cell unrolled over time with a linear read-out and softmax cross-entropy at every step.

    Backpropagation through time is the generated ``lstm_cell.backward`` called from the last step
    to the first, each step passing its ``(dh, dc)`` to the one before: nothing derived by hand.
    """

    params: dict  # "cell": lstm_cell's weights, "head": linear's

    @staticmethod
    def create(inputs: int, hidden: int, classes: int, rng: np.random.Generator, dtype=np.float64) -> "Recurrent":
        """Weights uniform in +-1/sqrt(hidden), as nn.LSTMCell initialises them; the forget gate's bias 1."""
        bound = 1 / np.sqrt(hidden)
        cell = {name: rng.uniform(-bound, bound, shape).astype(dtype) for name, shape in
                (("W_ih", (4 * hidden, inputs)), ("W_hh", (4 * hidden, hidden)), ("b_ih", (4 * hidden,)),
                 ("b_hh", (4 * hidden,)))}
        cell["b_ih"][hidden:2 * hidden] = 1.0  # remember by default: the usual start for a delay to learn
        head = {"W": rng.uniform(-bound, bound, (classes, hidden)).astype(dtype), "b": np.zeros(classes, dtype)}
        return Recurrent({"cell": cell, "head": head})

    def loss_and_grads(self, xs: np.ndarray, targets: np.ndarray):
        """``xs`` (T, N, D) and one-hot ``targets`` (T, N, K): the loss averaged over the steps, and the
        gradients by backpropagation through time."""
        from generated import linear, lstm_cell, softmax_cross_entropy
        steps, batch = xs.shape[:2]
        hidden = self.params["cell"]["W_hh"].shape[1]
        h = c = np.zeros((batch, hidden), xs.dtype)
        caches, loss = [], 0.0
        for x, t in zip(xs, targets):
            (h, c), cell_cache = lstm_cell.forward(x, h, c, **self.params["cell"])
            z, head_cache = linear.forward(h, **self.params["head"])
            value, loss_cache = softmax_cross_entropy.forward(z, t)
            caches.append((cell_cache, head_cache, loss_cache))
            loss += float(value) / steps
        grads = {part: {k: np.zeros_like(v) for k, v in p.items()} for part, p in self.params.items()}
        dh = dc = np.zeros((batch, hidden), xs.dtype)
        for cell_cache, head_cache, loss_cache in reversed(caches):
            dz = softmax_cross_entropy.backward(1.0 / steps, loss_cache)["z"]
            head = linear.backward(dz, head_cache)
            cell = lstm_cell.backward((dh + head["x"], dc), cell_cache)
            dh, dc = cell["h"], cell["c"]
            for part, found in (("head", head), ("cell", cell)):
                for name in grads[part]:
                    grads[part][name] += found[name]
        return loss, grads

    def predict(self, xs: np.ndarray) -> np.ndarray:
        """The read-out's scores at every step, (T, N, K)."""
        from generated import linear, lstm_cell
        hidden = self.params["cell"]["W_hh"].shape[1]
        h = c = np.zeros((xs.shape[1], hidden), xs.dtype)
        scores = []
        for x in xs:
            (h, c), _ = lstm_cell.forward(x, h, c, **self.params["cell"])
            scores.append(linear.forward(h, **self.params["head"])[0])
        return np.stack(scores)

    def step(self, grads, lr: float, clip: float = 1.0) -> None:
        """Gradient descent, the gradient scaled to norm ``clip`` at most (recurrent gradients can spike)."""
        norm = np.sqrt(sum(float(np.sum(g ** 2)) for part in grads.values() for g in part.values()))
        scale = min(1.0, clip / norm) if norm > 0 else 1.0
        for part, params in self.params.items():
            sgd_step(params, {k: scale * g for k, g in grads[part].items()}, lr)


def _generated(op):
    """The op's generated module (``generated/<op>.py``)."""
    return importlib.import_module(f"generated.{op.name}")


@dataclass
class Graph:
    """A network file's network (``derive.engine.network.Composed``) run with each layer's generated module.

    The backward pass walks the layers last to first, each generated ``backward`` given the gradient
    arriving at its node: the sum over the layers that read the node (a skip connection's two paths, a
    node two branches read), and a shared parameter's gradient the sum over the layers that use it.
    """

    composed: object
    params: dict  # parameter name (``W_h``) -> array, one per parameter whoever uses it

    @staticmethod
    def create(composed, sizes: dict, rng: np.random.Generator, dtype=np.float64) -> "Graph":
        """Parameters at ``sizes`` (every size of the network): weights Xavier-initialised, vectors at 0
        (a normalisation's scale ``gamma`` at 1, as PyTorch starts it)."""
        params = {}
        for inp in composed.op.inputs[1:]:
            if not inp.differentiable:
                continue
            shape = Graph.shape(inp.shape, sizes)
            if len(shape) >= 2:
                fan_in, fan_out = int(np.prod(shape[1:])), shape[0]
                params[inp.name] = (rng.standard_normal(shape) * np.sqrt(2.0 / (fan_in + fan_out))).astype(dtype)
            else:
                start = 1.0 if inp.name.partition("_")[0] == "gamma" else 0.0
                params[inp.name] = np.full(shape, start, dtype)
        graph = Graph(composed, params)
        for layer, op, _ in graph._steps():
            if op is not None:
                try:
                    _generated(op)
                except ImportError:
                    raise ValueError(f"--net: layer {layer.name}'s op {op.name} has no generated module "
                                     f"(demo trains built-in ops only)") from None
        return graph

    @staticmethod
    def shape(symbols, sizes: dict) -> tuple:
        """A shape in the network's size symbols, at ``sizes``."""
        import sympy as sp
        out = tuple(int(sp.sympify(s).xreplace(sizes)) for s in symbols)
        if any(n < 1 for n in out):
            raise ValueError(f"--sizes: they leave the shape {tuple(symbols)} = {out} empty")
        return out

    def _steps(self):
        """(layer, op or None for Add/Concat, {op input name: network name}) in computing order."""
        tags = {layer.name: getattr(layer, "tag", layer.name) for layer in self.composed.net.layers}
        for layer in self.composed.net.layers:
            _, op, _ = self.composed.nodes[layer.name]
            names = {}
            if op is not None:
                for inp in op.inputs[len(layer.reads):]:
                    if not inp.differentiable:
                        names[inp.name] = inp.name  # a target: an input of the network by its own name
                    else:
                        owner = layer.share.get(inp.name, layer.name)
                        names[inp.name] = f"{inp.name}_{tags[owner]}"
            yield layer, op, names

    def forward(self, x: np.ndarray, targets: dict, until: str | None = None):
        """Every node's value (the loss last) and each layer's cache; stops after the node ``until``."""
        values, caches = {self.composed.net.input: x}, {}
        for layer, op, names in self._steps():
            reads = [values[r] for r in layer.reads]
            if op is None:
                values[layer.name] = sum(reads[1:], reads[0]) if isinstance(layer, Add) else \
                    np.concatenate(reads, axis=-1)
            else:
                given = {inp.name: v for inp, v in zip(op.inputs, reads)}
                for name, network_name in names.items():
                    given[name] = targets[network_name] if network_name in targets else self.params[network_name]
                values[layer.name], caches[layer.name] = _generated(op).forward(
                    **given, **layer.hyper)
            if layer.name == until:
                break
        return values, caches

    def loss_and_grads(self, x: np.ndarray, **targets):
        """The loss and every parameter's gradient (by name)."""
        values, caches = self.forward(x, targets)
        last = self.composed.net.layers[-1].name
        arriving = {last: 1.0}  # dE/dE
        grads = {name: np.zeros_like(value) for name, value in self.params.items()}
        for layer, op, names in reversed(list(self._steps())):
            upstream = arriving.pop(layer.name, None)
            if upstream is None:  # no path to the loss
                continue
            if op is None:
                if isinstance(layer, Add):
                    pieces = [upstream] * len(layer.reads)
                else:
                    ends = np.cumsum([values[r].shape[-1] for r in layer.reads])[:-1]
                    pieces = np.split(upstream, ends, axis=-1)
            else:
                found = _generated(op).backward(upstream, caches[layer.name])
                pieces = [found[inp.name] for inp in op.inputs[:len(layer.reads)]]
                for name, network_name in names.items():
                    if network_name in grads:
                        grads[network_name] += found[name]
            for read, piece in zip(layer.reads, pieces):  # a node read by several layers: the sum
                arriving[read] = arriving[read] + piece if read in arriving else piece
        return float(values[last]), grads

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The value the loss reads (the network's scores or prediction)."""
        loss = self.composed.net.layers[-1]
        return self.forward(x, {}, until=loss.reads[0])[0][loss.reads[0]]

    def step(self, grads, lr: float) -> None:
        sgd_step(self.params, grads, lr)
