"""How a network is written: named layers reading named nodes, composed into one op.

A network file defines ``NET``, the layers in computing order; each layer names the node it
computes and the nodes it reads, so the edges are the names::

    from derive.define import Add, Layer, Net

    NET = Net("residual", input="x", layers=[
        Layer("h", "linear", "x"),                 # h = linear(x; W_h, b_h)
        Layer("r", "relu", "h"),
        Layer("o", "linear", "r", sizes={"M": "D"}),   # as wide as x
        Add("s", "o", "x"),                        # the skip connection: s = o + x
        Layer("E", "half_sse", "s"),              # a loss last: its targets are inputs of the network
    ])

``Layer(name, op, *reads, hyper={...}, share={...})``: ``op`` is an op's name (or an ``Op``),
``reads`` the nodes given to its first inputs, ``hyper`` its hyper-parameters (``{"padding": 1}``),
``share`` names a parameter another layer owns (``share={"W": "h"}``: this layer uses layer h's
``W``: shared weights), ``sizes`` puts a size of the network for one of the op's (``sizes={"M": "D"}``:
a fully connected layer as wide as the input, so that a residual connection can add them). Every other differentiable input is a parameter of the layer, named after
it (``W_h``). ``Add(name, *reads)`` adds nodes of one shape, ``Concat(name, *reads)`` joins them
along the features (the last axis). ``derive.engine.network.compose`` makes the one op whose
intermediates are the nodes: its derivation names the gradient arriving at each node, the sum
over the node's consumers.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Layer:
    """One op applied to nodes of the network: the node ``name`` it computes, the nodes it reads."""

    name: str
    op: object  # an op's name or an Op
    reads: tuple = ()
    hyper: dict = field(default_factory=dict, hash=False)
    share: dict = field(default_factory=dict, hash=False)
    #: The op's sizes that are sizes of the network already (``{"M": "D"}``: the layer's output as wide as
    #: the input, for a residual connection); the others follow from what it reads or get names of their own.
    sizes: dict = field(default_factory=dict, hash=False)
    #: What the layer's parameters and inner values are suffixed with (``W_h``); the name by default.
    tag: str = ""

    def __init__(self, name, op, *reads, hyper=None, share=None, sizes=None, tag=""):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "op", op)
        object.__setattr__(self, "reads", tuple(reads))
        object.__setattr__(self, "hyper", dict(hyper or {}))
        object.__setattr__(self, "share", dict(share or {}))
        object.__setattr__(self, "sizes", dict(sizes or {}))
        object.__setattr__(self, "tag", tag or name)


@dataclass(frozen=True)
class Add:
    """``name = a + b + ...``: nodes of one shape added (a residual connection)."""

    name: str
    reads: tuple = ()

    def __init__(self, name, *reads):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "reads", tuple(reads))


@dataclass(frozen=True)
class Concat:
    """``name = [a, b, ...]``: nodes joined along their last axis (the features)."""

    name: str
    reads: tuple = ()

    def __init__(self, name, *reads):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "reads", tuple(reads))


@dataclass(frozen=True)
class Net:
    """A network: its name, its input node, its layers in computing order (a loss last, or not)."""

    name: str
    layers: tuple
    input: str = "x"
    #: Where the network came from (a file), for messages.
    origin: str = field(default="", compare=False)

    def __init__(self, name, layers, input="x", origin=""):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "layers", tuple(layers))
        object.__setattr__(self, "input", input)
        object.__setattr__(self, "origin", origin)


def chain_net(ops, hyper=()) -> Net:
    """A chain of ops (``Op`` objects, first layer first) as a network: layer l reads layer l - 1 and
    computes ``<its output's name>_l`` (``y_1``, ``net_5``; the loss ``E``); ``hyper``: one dict per layer."""
    hyper = list(hyper) or [{} for _ in ops]
    layers, previous = [], "x"
    for position, (op, values) in enumerate(zip(ops, hyper), 1):
        name = op.objective if op.is_loss and position == len(ops) else f"{op.output.name}_{position}"
        layers.append(Layer(name, op, previous, hyper=values, tag=str(position)))
        previous = name
    return Net(",".join(op.name for op in ops), layers)


def load_net(path) -> Net:
    """The network a user's Python file defines (``NET = Net(...)``), told its origin. The file is the
    user's own program, run as Python, as ``--ops`` files are."""
    import runpy
    from pathlib import Path
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--net: no such file {str(path)!r}")
    if path.suffix != ".py":
        raise ValueError(f"--net: expected a Python file (.py), got {str(path)!r}")
    try:
        namespace = runpy.run_path(str(path), run_name="derive_user_net")
    except SystemExit:
        raise ValueError(f"--net: {path} exited while it was loaded") from None
    except Exception as error:
        raise ValueError(f"--net: {path}: {type(error).__name__}: {error}") from None
    net = namespace.get("NET")
    if not isinstance(net, Net):
        raise ValueError(f"--net: {path} must define NET = Net(...)")
    for layer in net.layers:
        if not isinstance(layer, (Layer, Add, Concat)):
            raise ValueError(f"--net: {path}: a layer must be a Layer, Add or Concat, got {type(layer).__name__}")
    return Net(net.name, net.layers, net.input, origin=str(path))
