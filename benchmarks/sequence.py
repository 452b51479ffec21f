"""The generated modules over a sequence (rnn, gru, lstm) against PyTorch's nn.RNN, nn.GRU, nn.LSTM.

``python -m benchmarks.sequence``: forward + backward at batch 32, 50 steps, 128 inputs and 128 hidden units,
both dtypes, interleaved rounds; the two agree first. The floor: lstm within 2x of nn.LSTM in float32.
OpenBLAS's kernel settings are set aside before NumPy loads (``benchmarks.blas``).
"""
from __future__ import annotations

import importlib
import sys

from benchmarks import blas

SIZES = {"N": 32, "T": 50, "D": 128, "H": 128}
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
FLOORS = {("lstm", "float32"): 2.0}


def case(name: str, dtype, rng):
    """(generated, torch) zero-argument callables doing forward + backward on the same inputs, and their
    largest relative difference in the output and the gradients."""
    import numpy as np
    import torch
    N, T, D, H = SIZES.values()
    module = importlib.import_module(f"generated.{name}")
    g = GATES[name]
    x = rng.standard_normal((N, T, D)).astype(dtype)
    states = [rng.standard_normal((N, H)).astype(dtype) for _ in range(2 if name == "lstm" else 1)]
    weights = [(rng.standard_normal(shape) / np.sqrt(H)).astype(dtype) for shape in ((g * H, D), (g * H, H), (g * H,), (g * H,))]
    doutput = rng.standard_normal((N, T, H)).astype(dtype)
    layer = getattr(torch.nn, name.upper())(D, H, batch_first=True).to(torch.float32 if dtype == np.float32 else torch.float64)
    with torch.no_grad():
        for p, w in zip((layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0, layer.bias_hh_l0), weights):
            p.copy_(torch.from_numpy(w))
    tx = torch.from_numpy(x).requires_grad_()
    first = tuple(torch.from_numpy(s[None]).requires_grad_() for s in states)
    tdout = torch.from_numpy(doutput)
    finals_none = tuple(None for _ in states) if len(states) > 1 else None

    def generated():
        out, cache = module.forward(x, *states, *weights)
        return out[0], module.backward((doutput, finals_none), cache)

    def theirs():
        layer.zero_grad(set_to_none=True)
        for t in (tx, *first):
            t.grad = None
        out, _ = layer(tx, first if len(first) > 1 else first[0])
        out.backward(tdout)
        return out

    mine, grads = generated()
    out = theirs()
    pairs = [(mine, out.detach().numpy()), (grads["x"], tx.grad.numpy()), (grads["W_hh"], layer.weight_hh_l0.grad.numpy()),
             (grads["W_ih"], layer.weight_ih_l0.grad.numpy()), (grads["h"], first[0].grad[0].numpy())]
    difference = max(float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)) for a, b in pairs)
    return generated, theirs, difference


def main() -> int:
    if blas.overridden() and "numpy" in sys.modules:
        raise SystemExit("benchmarks.sequence: run it in a fresh process (NumPy has read OPENBLAS_CORETYPE already)")
    blas.set_aside()
    from benchmarks.timing import interleaved, quiet_blas
    quiet_blas()  # before NumPy loads: its idle BLAS threads would spin on the cores torch runs on next
    import numpy as np
    import torch  # noqa: F401  (an optional extra: fail here, before any timing, where it is missing)

    rng = np.random.default_rng(0)
    print(f"Sequences at N={SIZES['N']}, T={SIZES['T']}, D={SIZES['D']}, H={SIZES['H']}, forward + backward. "
          + "; ".join(blas.describe()))
    print("| module | dtype | generated ms | torch ms | ratio | floor | met |")
    print("|---|---|---|---|---|---|---|")
    met = True
    for name in GATES:
        for dtype in ("float64", "float32"):
            generated, theirs, difference = case(name, np.dtype(dtype).type, rng)
            if difference > (1e-8 if dtype == "float64" else 1e-3):
                print(f"| {name} | {dtype} | disagrees with torch: {difference:.1e} | | | | NO |")
                met = False
                continue
            times = interleaved({"generated": generated, "torch": theirs}, rounds=7)
            ratio = times["generated"].median / times["torch"].median
            floor = FLOORS.get((name, dtype))
            ok = floor is None or ratio <= floor
            met &= ok
            print(f"| {name} vs nn.{name.upper()} | {dtype} | {times['generated'].median * 1e3:.2f} | "
                  f"{times['torch'].median * 1e3:.2f} | {ratio:.2f}x | {f'<= {floor}x' if floor else '—'} | "
                  f"{('yes' if ok else 'NO') if floor else '—'} |")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
