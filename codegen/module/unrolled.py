"""The NumPy module of a recurrent cell unrolled over a sequence: the recursion of ``derive.engine.unroll``,
run with the cell's own generated statements split by what they read (``codegen.module.steps``): what reads
no state once for every step, the recurrence step by step, the weights' gradients once after the steps."""
from __future__ import annotations

import sympy as sp

from codegen.module import steps as split
from codegen.module.context import _sizes_line, _upstream_names, module_context
from codegen.text import text
from derive.engine.unroll import Unrolled, cell_steps


def unrolled_name(cell: str) -> str:
    """``lstm`` for ``lstm_cell``, as PyTorch names the module over a sequence; ``<cell>_unrolled`` otherwise."""
    return cell.removesuffix("_cell") if cell.endswith("_cell") else f"{cell}_unrolled"


def unrolled_context(u: Unrolled) -> dict:
    """Everything ``unrolled.py.j2`` needs; a ValueError naming the construct for a cell whose batch index
    is no pure batch index (its statements could not run with time folded into the batch)."""
    op, d = u.op, u.cell
    moved = cell_steps(u)
    batch = op.inputs[0].shape[0]
    why = split.refusal(d, batch, moved.weights)
    if why is None and (op.shape_kind != "fixed" or op.derived_sizes):
        why = "its inputs are reshaped on the way in"
    if why:
        raise _refused(op, why)
    cell = module_context(d)
    names = [i.name for i in op.inputs]
    states = [s.input for s in u.states]
    step_inputs = [n for n in names if n not in moved.weights and n not in states]
    parsed = [split.line(t) for t in cell["forward_lines"] + cell["backward_lines"]]
    own = set(names) | {str(s) for s in op.sizes} | {n for p in parsed for n in p.writes}
    taken = own | {n for p in parsed for n in p.reads}
    clash = sorted(own & ({"np", "cache", "doutput", "expected", "T"} | {f"g_{s}" for s in states}))
    if clash:
        raise _refused(op, f"a name of its own, {clash[0]}, is one the module over a sequence takes")
    step, rows = split.free_name("t", taken), split.free_name("rows", taken)
    of_output = {s.output: s.input for s in u.states}
    upstreams = dict(zip(_upstream_names(op), (of_output[y.name] for y in op.outputs)))  # dout -> h
    batch_index = {node.index[0] for node in op.intermediates if batch in node.shape} \
        | {a.index[0] for a in d.adjoints} | {v for e in [g.expr for g in d.backprop] for s in sp.preorder_traversal(e)
                                              if isinstance(s, sp.Sum) for v, lo, hi in s.limits if hi - lo + 1 == batch}
    forward_layouts, backward_layouts = cell["_layouts"]

    def batch_first(name, layouts):
        if name in names:
            return batch in op.input(name).shape[:1]
        return bool(layouts.get(name)) and layouts[name][0] in batch_index

    try:
        kinds = {n: split.FOLDED if n in step_inputs else split.STEP if n in states else split.STATIC for n in names}
        forward = split.split_forward(cell["forward_lines"], kinds, str(batch),
                                      lambda n: batch_first(n, forward_layouts), taken)
        if any(forward.kinds.get(s.output) != split.STEP for s in u.states):
            raise split.Unsplittable("a state's next value reads no state")
        cached = {n: forward.kinds.get(n, split.STATIC) for n in cell["cache"]}
        backward = split.split_backward(
            cell["backward_lines"], cached | {n: split.STEP for n in upstreams}, set(upstreams),
            {f"d{s}" for s in states}, {f"d{g}" for g in cell["gradients"] if g not in states}, str(batch),
            lambda n: n in upstreams or batch_first(n, backward_layouts if n not in cached else forward_layouts),
            taken)
    except split.Unsplittable as error:
        raise _refused(op, str(error)) from None
    main = of_output[op.output.name]
    kept_forward = [n for n in cell["cache"] if cached[n] == split.STEP]
    lists = {n: split.free_name(f"{n}_steps", taken) for n in dict.fromkeys(kept_forward + [op.output.name])}
    kept_backward = {n: split.free_name(f"{n}_steps", taken) for n in backward.kept}
    several = len(states) > 1

    def group(items):
        return f"({', '.join(items)})" if several else items[0]

    pytorch = op.pytorch.removesuffix("Cell") if op.pytorch.endswith("Cell") else op.pytorch
    upstream_of = {s: g for g, s in upstreams.items()}
    return {
        "name": unrolled_name(op.name), "cell": op.name, "source": f"derive/ops/{op.name}.py",
        "pytorch": f"{pytorch}(D, H, batch_first=True), one layer; the last states without PyTorch's layer axis"
        if pytorch else "no PyTorch module",
        "args": names, "signature": cell["signature"], "step_inputs": step_inputs, "states": states,
        "main_state": main, "other_states": [s for s in states if s != main], "main_output": op.output.name,
        "gradients": cell["gradients"], "finals": group([f"{s}_n" for s in states]), "finals_now": group(states),
        "dfinals": group([f"d{s}_last" for s in states]), "several_outputs": several,
        "certificate": u.certificate, "recursion": recursion_lines(u),
        "validation": _validation(cell, step_inputs), "batch": str(batch), "steps": "T", "t": step, "rows_name": rows,
        "hoisted": forward.hoisted, "step_lines": forward.step, "rows": forward.rows, "lists": lists,
        "next_states": [(s.input, s.output) for s in u.states],
        "cache": [(n, lists.get(n, n)) for n in cell["cache"]], "backward_sizes": cell["backward_sizes"],
        "upstreams": [(upstream_of[s], s) for s in states], "dtype_from": cell["dtype_from"],
        "backward_rows": backward.rows, "loaded": [(n, lists.get(n, n)) for n in backward.loaded],
        "backward_lines": backward.step, "after_lines": backward.after, "kept": kept_backward,
        "stacked": [(n, kept_backward.get(n) or lists.get(n, n)) for n in backward.stacked],
        "helpers": _helpers(cell),
    }


def _refused(op, why: str) -> ValueError:
    return ValueError(f"{op.name}: no module over a sequence: {why} (the steps are folded into the batch, "
                      f"which needs each sample's values to read that sample alone)")


def _validation(cell: dict, step_inputs: list) -> str:
    """The cell module's checks of its inputs, each per-step input with a step axis after its batch axis."""
    return _cell_block("validation", dict(cell, sizes_line=_sizes_line(cell["op"], step_inputs, "T")))


def _helpers(cell: dict) -> str:
    """The cell module's helpers the statements call (not its check of a tuple of upstream gradients)."""
    return _cell_block("helpers", dict(cell, helpers=[h for h in cell["helpers"] if h != "upstreams"]))


def _cell_block(name: str, context: dict) -> str:
    """One block of the cell module's template, rendered as the cell's module would render it."""
    from codegen.render import environment
    template = environment().get_template("module.py.j2")
    return "".join(template.blocks[name](template.new_context(context)))


def recursion_lines(u: Unrolled) -> list[str]:
    lines = [f"{text(e)} = {text(direct + later)}   (t < T; at t = T: {text(direct)})" for e, direct, later in u.arriving]
    lines += [f"{text(e)} = {text(rhs)}" for e, _, rhs, _ in u.errors]
    lines += [f"dE/d{text(e)} = {text(rhs)}" for e, rhs, _, _ in u.gradients]
    return lines
