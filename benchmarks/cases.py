"""One benchmark case: an op at given sizes and dtype, with every peer ready to run.

A peer is a zero-argument callable doing forward + backward; ``results``
gives what each computes (output and gradients) so that the benchmark can
show they agree before it shows how fast they are.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from derive.engine import check
from derive.define.op import Op

from . import references

GENERATED = "generated"
#: Options benchmarked besides an op's own bench_sizes, each a case of its own at the same sizes (dilated
#: convolution), named ``op option=value`` in the tables and floors.
VARIANTS = {"conv2d": ({"dilation": 2}, {"dilation": 2, "groups": 4})}


class NotBenchmarked(Exception):
    """The op cannot be benchmarked (no sizes, or no generated module); the message says why."""


def bench_sizes(op: Op, scale: float = 1.0) -> tuple[dict, dict]:
    """``(sizes by symbol, hyper-parameters by name)`` from ``op.bench_sizes``, the batch scaled by ``scale``.

    The batch is the op's first size (``N``, or ``S`` for an elementwise op).
    """
    if not op.bench_sizes:
        raise NotBenchmarked(f"{op.name}: no bench_sizes on the op")
    by_name = {str(k): v for k, v in op.bench_sizes.items()}
    sizes = {s: by_name.pop(s.name) for s in op.sizes if s.name in by_name}
    hyper = {h.name: by_name.pop(h.name) if h.name in by_name else h.default for h in op.hyper}
    missing = [s.name for s in op.sizes if s not in sizes and not _derived(s, op)]
    if by_name or missing:
        raise ValueError(f"bench_sizes: {op.name} has sizes {[s.name for s in op.sizes]} and hyper-parameters "
                         f"{[h.name for h in op.hyper]}; unknown {sorted(by_name)}, missing {missing}")
    batch = op.sizes[0]
    sizes[batch] = max(1, round(sizes[batch] * scale))
    return sizes, hyper


#: Forms timed besides each op's default one, by op: the option values that choose them. Only options read
#: from the inputs (class labels for t), so that every peer is called with the same arguments.
FORMS = {"softmax_cross_entropy": ({"target": "labels"},), "cross_entropy": ({"target": "labels"},)}


def bench_forms(op: Op) -> list:
    """The op's default form and the others ``FORMS`` names for it."""
    return [op] + [op.form(**values) for values in FORMS.get(op.name, ()) if op.is_builtin]


def form_name(op: Op) -> str:
    """The op's name, with the options that differ from the default form: ``softmax_cross_entropy[target=labels]``."""
    default = {o.name: o.default for o in op.options if hasattr(o, "choices")}
    changed = [f"{k}={v}" for k, v in op.chosen if default.get(k) != v]
    return op.name + (f"[{', '.join(changed)}]" if changed else "")


def _derived(size, op) -> bool:
    """A size no input has (an output size computed from the others, such as a convolution's)."""
    return not any(size in sp.sympify(s).free_symbols for i in op.inputs for s in i.shape)


@dataclass
class Case:
    """An op at concrete sizes and dtype: inputs, upstream gradient, and the peers to compare."""

    op: Op
    dtype: type
    sizes: dict
    hyper: dict
    #: The options that make this a variant of the op's case (``VARIANTS``); empty for the case itself.
    variant: dict = field(default_factory=dict)
    inputs: dict = field(init=False)
    dout: object = field(init=False)

    def __post_init__(self):
        if not self.op.is_builtin:  # a user's op (--ops): its module generated and certified here
            from codegen.certify import certified
            from derive.engine.check import load
            self.module = load(self.op.name, certified(self.op).source)
        else:
            try:
                self.module = importlib.import_module(f"{GENERATED}.{self.op.name}")
            except ImportError:
                raise NotBenchmarked(f"{self.op.name}: no generated module (run `derive build`)") from None
        self.hyper = {**self.hyper, **self.variant}
        rng = np.random.default_rng(0)
        inputs = check.sample(self.op, self.sizes, rng, self.dtype, leading=(), hyper=self.hyper)
        if self.op.shape_kind == "flat":  # check.sample spreads a flat size over two axes; one reads better
            inputs = {name: a.reshape(-1) for name, a in inputs.items()}
        self.inputs = inputs
        out, _ = self.module.forward(**inputs, **self.hyper)
        self.dout = 1.0 if self.op.is_loss else \
            check.upstream_like(self.op, out, lambda shape: rng.standard_normal(shape).astype(self.dtype))

    @property
    def name(self) -> str:
        """The op's name (a form's in brackets), with a variant's options: ``conv2d dilation=2``."""
        return " ".join([form_name(self.op)] + [f"{k}={v}" for k, v in self.variant.items()])

    @property
    def shapes(self) -> str:
        return " ".join("x".join(map(str, a.shape)) for a in self.inputs.values())

    @property
    def label(self) -> str:
        sizes = ", ".join(f"{s}={v}" for s, v in self.sizes.items())
        hyper = "".join(f", {k}={v}" for k, v in self.hyper.items() if v is not None)
        return sizes + hyper

    # -- peers: each returns (output, {input: gradient}) --------------------------

    def peers(self) -> dict:
        """Name -> zero-argument forward + backward; only the peers that are installed."""
        found = {"generated": self._generated}
        if self.op.name in references.BARE:
            found["bare"] = self._bare
        if references.torch_reference(self.op):
            found["torch"] = self._torch()
        if references.autograd_reference(self.op):
            found["autograd"] = self._autograd()
        return found

    def moved(self) -> list:
        """Every array a forward + backward must read or write at least once: the inputs, ``dout``,
        the output and the gradients (a loss's 0-d value and upstream gradient left out)."""
        out, grads = self._generated()
        upstream = [] if self.op.is_loss else list(check.as_outputs(self.op, self.dout))
        outputs = list(check.as_outputs(self.op, out))
        return [np.asarray(a) for a in [*self.inputs.values(), *upstream, *outputs, *grads.values()] if np.ndim(a)]

    def copies(self):
        """The physical limit of a memory-bound op: a zero-argument callable that copies each array
        of ``moved()`` into one made beforehand (``np.copyto``), the same bytes and no arithmetic."""
        pairs = [(np.empty_like(a), a) for a in self.moved()]

        def run():
            for target, source in pairs:
                np.copyto(target, source)
        return run

    def _generated(self):
        out, cache = self.module.forward(**self.inputs, **self.hyper)
        return out, self.module.backward(self.dout, cache)

    def _bare(self):
        return None, references.BARE[self.op.name][1](**self.inputs, **self.hyper, dout=self.dout)

    def _torch(self):
        import torch
        function = references.torch_reference(self.op)
        wanted = [i.name for i in self.op.differentiable]
        tensors = {name: torch.tensor(a, requires_grad=name in wanted) for name, a in self.inputs.items()}
        leaves = [tensors[name] for name in wanted]
        dout = [torch.tensor(g, dtype=leaves[0].dtype) for g in check.as_outputs(self.op, self.dout)]

        def run():
            out = function(**tensors, **self.hyper)
            return out, dict(zip(wanted, torch.autograd.grad(check.as_outputs(self.op, out), leaves,
                                                             grad_outputs=dout)))
        return run

    def _autograd(self):
        from autograd import make_vjp
        function = references.autograd_reference(self.op)
        names = list(self.inputs)
        positions = tuple(names.index(i.name) for i in self.op.differentiable)
        vjp_of = make_vjp(lambda *arrays: function(**dict(zip(names, arrays)), **self.hyper), argnum=positions)
        arrays = [self.inputs[n] for n in names]

        def run():
            vjp, out = vjp_of(*arrays)
            return out, dict(zip((names[p] for p in positions), vjp(self.dout)))
        return run

    def disagreement(self, peer) -> float:
        """The largest difference from a peer's output and gradients, relative to the peer's largest value."""
        out, grads = self._generated()
        other_out, other_grads = peer()
        pairs = list(zip(check.as_outputs(self.op, out), check.as_outputs(self.op, other_out)))
        return max(_relative(a, b) for a, b in pairs + [(grads[n], other_grads[n]) for n in grads])


def _relative(ours, theirs) -> float:
    ours = np.asarray(ours, dtype=np.float64)
    theirs = np.asarray(theirs.detach().numpy() if hasattr(theirs, "detach") else theirs, dtype=np.float64)
    if ours.shape != theirs.shape:
        return float("inf")
    scale = max(np.max(np.abs(theirs)), np.finfo(np.float64).tiny)
    return float(np.max(np.abs(ours - theirs)) / scale)
