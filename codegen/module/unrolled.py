"""The NumPy module of a recurrent cell unrolled over a sequence: the recursion of ``derive.engine.unroll``
run with the cell's generated module at every step, its gradients summed and passed back as derived."""
from __future__ import annotations

from codegen.text import text
from derive.engine.unroll import Unrolled, cell_steps


def unrolled_name(cell: str) -> str:
    """``lstm`` for ``lstm_cell``, as PyTorch names the module over a sequence; ``<cell>_unrolled`` otherwise."""
    return cell.removesuffix("_cell") if cell.endswith("_cell") else f"{cell}_unrolled"


def unrolled_context(u: Unrolled) -> dict:
    op = u.op
    moved = cell_steps(u)
    of_output = {s.output: s.input for s in u.states}
    outputs = [of_output[y.name] for y in op.outputs]  # the cell's outputs, as the states they become
    names = [i.name for i in op.inputs]
    step_inputs = [n for n in names if n not in moved.weights and n not in moved.previous]
    several = len(outputs) > 1

    def group(items):
        return f"({', '.join(items)})" if several else items[0]

    pytorch = op.pytorch.removesuffix("Cell") if op.pytorch.endswith("Cell") else op.pytorch
    return {
        "name": unrolled_name(op.name), "cell": op.name, "source": f"derive/ops/{op.name}.py",
        "pytorch": f"{pytorch}(D, H, batch_first=True), one layer; the last states without PyTorch's layer axis"
        if pytorch else "no PyTorch module",
        "args": names, "step_inputs": step_inputs, "states": [s.input for s in u.states],
        "main_state": of_output[op.output.name], "other_states": [s for s in outputs if s != of_output[op.output.name]],
        "main_output": op.output.name, "weights": [n for n in names if n in moved.weights],
        "gradients": [i.name for i in op.inputs if i.differentiable],
        "hyper": [f"{h.name}={h.default!r}" for h in op.hyper], "hyper_names": [h.name for h in op.hyper],
        "finals": group([f"{s}_n" for s in outputs]), "finals_tuple": group(outputs),
        "dfinals": group([f"d{s}_last" for s in outputs]), "cell_outputs": group(outputs),
        "cell_dout": group([f"g_{s}" for s in outputs]), "several_outputs": several, "outputs": outputs,
        "cell_call": ", ".join(f"{n}[:, t]" if n in step_inputs else n for n in names),
        "certificate": u.certificate, "recursion": recursion_lines(u),
    }


def recursion_lines(u: Unrolled) -> list[str]:
    lines = [f"{text(e)} = {text(direct + later)}   (t < T; at t = T: {text(direct)})" for e, direct, later in u.arriving]
    lines += [f"{text(e)} = {text(rhs)}" for e, _, rhs, _ in u.errors]
    lines += [f"dE/d{text(e)} = {text(rhs)}" for e, rhs, _, _ in u.gradients]
    return lines
