"""A derivation, printed as a NumPy module with ``forward`` and ``backward``."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import sympy as sp

from derive.engine.backprop import upstream_of
from derive.engine.derivation import Derivation
from derive.define.op import DOMAINS
from derive.engine.rewrite import nodes, normalize
from derive.define.functions import KnownFunction
from derive.define.symbols import Intermediate, IntermediateElement, Tensor, bound_indices, index_symbols
from derive.engine.rewrite import index_wilds, replace_pattern

from codegen.ir import (Lowering, canonical, join_blocks, leaf_names, pairwise, rows_sum_to_one, share_arithmetic, split_sums, subtrees,
                 symbols_used, work)
from codegen.module.printer import ArrayPrinter
from codegen.module import special
from codegen.module.stable import clamp_branches, stabilize
from codegen.text import text

UPSTREAM = "dout"


@dataclass(frozen=True)
class Statement:
    """``name[index] = expr`` in the backward pass (``shape``: what the index runs over)."""

    name: str
    expr: sp.Expr
    index: tuple
    shape: tuple


def backward_programs(d: Derivation) -> list[list[Statement]]:
    """The exact backward passes to choose from: the gradients written out in full (where the
    derivation writes them out), and (for an op with intermediates) the pass through the intermediates' named gradients, one statement each."""
    programs = [[Statement(f"d{g.input.name}", g.expr, tuple(g.index), tuple(g.input.shape))
                 for g in d.gradients]] if d.written_out else []
    if d.adjoints:
        taken = {i.name for i in d.op.inputs} | {n.name for n in d.op.intermediates} \
            | {f"d{i.name}" for i in d.op.inputs} | set(_upstream_names(d.op))
        steps = [Statement(_free_name(a.tensor.name, taken), a.expr, a.index, tuple(a.node.shape))
                 for a in d.adjoints]
        renames = {a.tensor: st.name for a, st in zip(d.adjoints, steps)}
        steps = [dataclasses.replace(st, expr=_renamed_tensors(st.expr, renames)) for st in steps]
        steps += [Statement(f"d{g.input.name}", _renamed_tensors(g.expr, renames), tuple(g.index),
                            tuple(g.input.shape)) for g in d.backprop]
        programs.append(_live(steps, len(d.backprop)))
    return programs


def _live(steps: list[Statement], outputs: int) -> list[Statement]:
    """The steps the last ``outputs`` (the gradients) read, directly or not: an intermediate's gradient that
    reaches no input (max pooling's mask, whose own derivative is 0) is not computed."""
    read, kept = set(), []
    for pos, st in reversed(list(enumerate(steps))):
        if pos >= len(steps) - outputs or st.name in read:
            kept.append(st)
            read |= {str(e.base.label) for e in nodes(st.expr) if isinstance(e, sp.Indexed)}
    return kept[::-1]


def _free_name(name: str, taken: set) -> str:
    while name in taken:
        name = name[0] + "_" + name[1:]
    taken.add(name)
    return name


def _renamed_tensors(expr: sp.Expr, renames: dict) -> sp.Expr:
    """The adjoint tensors under the names the code gives them."""
    return expr.replace(lambda e: isinstance(e, sp.Indexed) and e.base in renames,
                        lambda e: Tensor(renames[e.base], *e.base.shape)[e.indices])


def module_context(d: Derivation) -> dict:
    """Everything the module template needs, as plain strings; the backward pass is the cheaper of
    the exact programs ``backward_programs`` offers."""
    contexts, unsupported = [], None
    for program in backward_programs(d):
        try:
            contexts.append(_context(d, program))
        except NotImplementedError as error:  # an index form the vector IR has no operation for (a crop)
            unsupported = unsupported or error
    if not contexts:
        raise unsupported
    return min(contexts, key=lambda c: c["_work"])


def _context(d: Derivation, program: list[Statement]) -> dict:
    arrays = {i.name for i in d.op.inputs} | {n.name for n in d.op.intermediates}
    for size in d.op.sizes:
        if size.name in arrays:
            raise ValueError(f"{d.op.name}: the size {size.name} and an array {size.name} share a name, which the "
                             f"generated code cannot tell apart; rename one")
    op, exprs = cached_calls(d, program)
    program = [dataclasses.replace(st, expr=e) for st, e in zip(program, exprs)]
    names = {i.tensor: i.name for i in op.inputs}
    names.update({node: node.name for node in op.intermediates})
    if not op.is_loss:
        names.update({upstream_of(op, y): name for y, name in zip(op.outputs, _upstream_names(op))})
    assigned = {st.name for st in program}
    for st in program:
        names.update({e.base: e.base.name for e in nodes(st.expr)
                      if isinstance(e, sp.Indexed) and str(e.base.label) in assigned})

    read = {e.base for st in program for e in nodes(st.expr) if isinstance(e, sp.Indexed)}
    cached_inputs = [i for i in op.inputs if i.tensor in read]
    cached_nodes = [n for n in op.intermediates if n in read or n in op.statistics]

    # -- forward: each needed intermediate, made stable, then lowered -------------
    definitions = []
    for node in _needed(op, cached_nodes):
        definitions += _share_sum_bodies(node, normalize(stabilize(node.definition), split=False), definitions)
    names.update({node: node.name for node, _ in definitions})
    lowering = Lowering(names, {s: sp.sympify(v) for h in op.hyper if isinstance(h.default, (int, float))
                                and not isinstance(h.default, bool) for s, v in h.bind(h.default).items()})
    split = join_blocks(list(map(split_sums, share_arithmetic(
        [lowering.statement(expr, tuple(node.index), tuple(node.shape)) for node, expr in definitions]))))
    size = _representative_sizes(op, lowering)
    split = [pairwise(tree, size) for tree in split]
    simplex = {i.name for i in op.inputs if i.domain == "simplex"}
    forward_trees = list(zip([node for node, _ in definitions], (rows_sum_to_one(t, simplex) for t in split)))
    checks = _checks(op, d, any(canonical(t) != canonical(s) for (_, t), s in zip(forward_trees, split)))
    kind = "flat" if op.shape_kind == "flat" else "fixed"  # other kinds are reshaped at the boundary
    fwd = ArrayPrinter(kind, {i.name: tuple(range(i.tensor.rank)) for i in op.inputs},
                       [node.name for node, _ in definitions])
    fwd.outside = {i.name: i.outside for i in op.inputs if i.outside}
    fwd.integers = {i.name for i in op.inputs if i.domain == "index"}
    fwd.dtype = f"{_dtype_from(op)}.dtype" if fwd.integers else ""
    fwd.float_dtype = f"{_dtype_from(op)}.dtype"
    fwd.plan([tree for _, tree in forward_trees])
    kept = {n.name for n in cached_nodes} | {y.name for y in op.outputs}
    computed = set()  # shared subtrees stored by the statements so far: what they read is read
    for pos, (node, tree) in enumerate(forward_trees):
        computed |= {canonical(n) for n in subtrees(tree)} & fwd.shared
        later = {leaf for _, t in forward_trees[pos + 1:] for leaf in leaf_names(t, computed)}
        dead = {n.name for n, _ in forward_trees[:pos]} - later - kept
        fwd.assign(node.name, tree, tuple(node.index), reusable=dead)

    # -- backward: one statement per gradient, shared subtrees computed once ------
    leaves = {i.name: tuple(range(i.tensor.rank)) for i in cached_inputs}
    leaves.update({n.name: tuple(n.index) for n in cached_nodes})
    if not op.is_loss:
        leaves.update({name: tuple(range(len(y.index))) for y, name in zip(op.outputs, _upstream_names(op))})
    bwd = ArrayPrinter(kind, leaves, [st.name for st in program])
    backward_trees = list(zip(program, (pairwise(split_sums(t), size) for t in join_blocks(share_arithmetic(
        [lowering.statement(_dout(st.expr, d), st.index, st.shape) for st in program])))))
    bwd.outside, bwd.integers = fwd.outside, fwd.integers
    bwd.dtype = 'cache["dtype"]' if fwd.integers else ""
    bwd.float_dtype = 'cache["dtype"]'
    bwd.plan([tree for _, tree in backward_trees])
    broadcast = set()  # sizes of gradients that do not vary along some of their axes
    for st, tree in backward_trees:
        bwd.assign(st.name, tree, st.index)
        if kind != "flat" and set(tree.axes) != set(st.index):  # dE/dx[n, e] = g[e]: the same for every n
            shape = ", ".join(bwd.scalar(size) for size in st.shape)
            bwd.lines.append(f"{st.name} = np.broadcast_to({st.name}, ({shape}{',' if len(st.shape) == 1 else ''}))"
                             ".copy()")
            broadcast |= set().union(*(sp.sympify(size).free_symbols for size in st.shape))

    _unshare_gradients(bwd.lines, [f"d{g.input.name}" for g in d.gradients])
    backward_sizes = sorted(set().union(broadcast, *(symbols_used(t) for _, t in backward_trees))
                            - {sp.Symbol(name) for name in _upstream_names(op)}, key=str)
    forward_sizes = set().union(*(symbols_used(t) for _, t in forward_trees)) | set(backward_sizes)
    flat = op.shape_kind == "flat" and op.inputs[0].shape[0] in forward_sizes
    return {
        "op": op,
        "summary": op.doc.strip().splitlines()[0],
        "details": "\n".join(op.doc.strip().splitlines()[1:]).strip(),
        "signature": ", ".join([i.name for i in op.inputs] + (["*"] if op.hyper else [])
                               + [f"{h.name}={h.default!r}" for h in op.hyper]),
        "inputs": [_input_doc(op, i) for i in op.inputs],
        "hyper": [(h.name, h.default, h.doc) for h in op.hyper],
        "hyper_checks": [(h.name, h.kind, h.valid, h.default_to, ", ".join(s.name for s in h.symbols) if h.is_pair else "")
                         for h in op.hyper],
        "others": {h.name: [(o.name, ", ".join(s.name for s in o.symbols)) for o in h.named_in_valid(op.hyper) if o.is_pair]
                   for h in op.hyper},
        "forward_formulas": [f"{n.name}{_index(n.index)} = {text(n.definition)}" for n in op.intermediates],
        "gradient_formulas": _gradient_formulas(d),
        "checks": checks + _index_checks(op) + _output_size_checks(op) + _required_size_checks(op),
        "dtype_from": _dtype_from(op),
        "forward_lines": fwd.lines,
        "output": op.output.name,
        "outputs": [y.name for y in op.outputs] if op.also_outputs else [],
        "upstreams": _upstream_names(op),
        "cache": [i.name for i in cached_inputs] + [n.name for n in cached_nodes],
        "backward_sizes": [s.name for s in backward_sizes],
        "backward_lines": bwd.lines,
        "gradients": [g.input.name for g in d.gradients],
        "helpers": sorted(fwd.helpers | bwd.helpers | ({"simplex"} if checks else set())
                          | ({"upstreams"} if op.also_outputs else set())),
        "erfc_table": special.erfc_table(),
        "erf_taylor": repr(special.erf_taylor()),
        "is_loss": op.is_loss,
        "sizes_line": _sizes_line(op),
        "reshaped": _reshaped(op),
        "scalar_rows": [i.name for i in op.inputs if _has_leading(op, i) and i.tensor.rank == 1],
        "output_shape": _output_shape(op),
        "derived_sizes": [(str(size), str(sp.fraction(rule)[0]), str(sp.fraction(rule)[1]), _read_at(op, size))
                          for size, rule in op.derived_sizes.items()],
        # an output indexed by group (group norm's y[n, h, q, s]) of an input (N, C, ...): dout viewed alike
        "regrouped": op.shape_kind == "channels" and tuple(op.output.shape) != tuple(op.inputs[0].shape),
        "flattened": _flattened(op),
        "gradient_shapes": _gradient_shapes(op),
        "reshape_helper": {"leading": "_rows", "channels": "_channels"}.get(op.shape_kind),
        "flat_size": (str(op.inputs[0].shape[0]), op.inputs[0].name) if flat else None,
        "_work": work([tree for _, tree in backward_trees], size),
        "_layouts": (dict(fwd.layouts), dict(bwd.layouts)),  # each array's axes, for the split over time
    }


#: Functions worth computing once: what the forward computes, the backward reads from the cache.
#: (Not exp or log: the forward computes those in shifted, stable forms of its own.)
EXPENSIVE = (sp.tanh, sp.erf, KnownFunction)


def cached_calls(d: Derivation, program: list):
    """The op with each expensive call that both passes compute named as an intermediate, and the
    backward statements (``program``'s expressions) reading it: SiLU's backward reads the forward's
    ``σ(x)``, GELU's its ``Φ(x)``.

    Only calls whose indices are all the statement's own (elementwise in them) are named.
    """
    op, renamed = _redefined(d.op, clamp_branches)
    exprs = {k: clamp_branches(_renamed(st.expr, renamed)) for k, st in enumerate(program)}
    taken = {i.name for i in op.inputs} | {n.name for n in op.intermediates} | {UPSTREAM, "cache", "shape"} \
        | {st.name for st in program}
    definitions = {n: n.definition for n in op.intermediates}
    named = []
    for key, st in enumerate(program):
        ranges = dict(zip(st.index, st.shape))
        bound = bound_indices(exprs[key])
        for call in sorted({e for e in sp.preorder_traversal(exprs[key]) if isinstance(e, EXPENSIVE)},
                           key=sp.default_sort_key):
            index = tuple(i for i in st.index if i in call.free_symbols)
            if index_symbols(call) - set(index) or index_symbols(call) & bound:
                continue
            wilds = index_wilds(index)
            pattern = call.xreplace(wilds)
            if not any(replace_pattern(e, pattern, sp.S.Zero, set(wilds.values())) != e
                       for e in definitions.values()):
                continue  # only the backward computes it: nothing to keep
            name = _call_name(call, taken)
            taken.add(name)
            node = Intermediate(name, index, tuple(ranges[i] for i in index), call)
            element = node[tuple(wilds[i] for i in index)]
            named.append((pattern, element, set(wilds.values())))
            exprs = {k: replace_pattern(e, pattern, element, set(wilds.values())) for k, e in exprs.items()}
    if not named:
        return op, [exprs[k] for k in range(len(program))]

    def with_calls_named(definition):
        for pattern, element, wilds in named:
            definition = replace_pattern(definition, pattern, element, wilds)
        return definition

    op, renamed = _redefined(op, with_calls_named)
    return op, [_renamed(exprs[k], renamed) for k in range(len(program))]


def _redefined(op, change):
    """``op`` with ``change`` applied to every definition, and the new intermediate of each old one."""
    renamed = {}
    for node in op.intermediates:
        renamed[node] = Intermediate(node.label, node.index, node.shape, change(_renamed(node.definition, renamed)))
    op = dataclasses.replace(op, output=renamed[op.output], extra=tuple(renamed[n] for n in op.extra),
                             statistics=tuple(renamed[n] for n in op.statistics))
    return op, renamed


def _renamed(expr, renamed):
    return expr.replace(lambda e: isinstance(e, IntermediateElement) and e.base in renamed,
                        lambda e: renamed[e.base][e.indices])


def _call_name(call, taken) -> str:
    """``sigmoid_x`` for σ(x[i]), ``tanh_1`` for a tanh of something longer."""
    head = getattr(call, "text", "") or type(call).__name__.lower()
    arg = call.args[0]
    stem = f"{head}_{arg.base.label}" if isinstance(arg, sp.Indexed) else f"{head}_1"
    name, n = stem, 1
    while name in taken:
        n += 1
        name = f"{stem}{n}" if isinstance(arg, sp.Indexed) else f"{head}_{n}"
    return name


def _representative_sizes(op, lowering):
    """A number for each axis, to choose the order of products (``ir.pairwise``): the op's benchmark
    sizes, hyper-parameters at their defaults, 64 for a size the op does not give."""
    values = {s: v for h in op.hyper if isinstance(h.default, (int, float))
              for s, v in h.bind(op.bench_sizes.get(h.name, h.default)).items()}
    values.update({s: op.bench_sizes.get(s.name, 64) for s in op.sizes})
    values.update({s: sp.sympify(rule).subs(values) for s, rule in op.derived_sizes.items()})

    def size(axis) -> float:
        found = sp.sympify(lowering.sizes.get(axis, 64)).subs(values)
        return float(found) if found.is_number else 64.0
    return size


def _needed(op, cached_nodes):
    """Intermediates the forward computes: the output and what backward reads, in order."""
    want = set(cached_nodes) | {op.output}
    for node in reversed(op.intermediates):
        if node in want:
            want |= {e.base for e in sp.preorder_traversal(node.definition) if isinstance(e, IntermediateElement)}
    return [n for n in op.intermediates if n in want]


def _share_sum_bodies(node: Intermediate, expr: sp.Expr, earlier):
    """Name a summand that also appears outside its sum, so it is computed once.

    In ``exp(x_k - m) / sum_j exp(x_j - m)`` the numerator is the summand
    with ``j`` read as ``k``: both become one array ``e``. A sum of a
    summand named in an earlier statement reads that array.
    """
    out = []
    sizes = dict(zip(node.index, node.shape))
    for total in sorted({s for s in sp.preorder_traversal(expr) if isinstance(s, sp.Sum) and len(s.limits) == 1},
                        key=sp.default_sort_key):
        (j, lo, hi), body = total.limits[0], total.function
        for shared, _ in earlier + out:
            for pos, i in enumerate(shared.index):
                if shared.definition.xreplace({i: j}) == body:
                    index = tuple(j if p == pos else x for p, x in enumerate(shared.index))
                    expr = expr.xreplace({total: sp.Sum(shared[index], (j, lo, hi))})
                    break
        for k in node.index:
            if sizes[k] != hi - lo + 1 or k in body.free_symbols:
                continue
            twin = body.xreplace({j: k})
            if not expr.xreplace({total: sp.S.Zero}).has(twin):
                continue
            index = tuple(i for i in node.index if i in twin.free_symbols)
            shared = Intermediate("e" if isinstance(body, sp.exp) else "u", index,
                                  tuple(sizes[i] for i in index), twin)
            renamed = tuple(j if i == k else i for i in index)
            expr = expr.xreplace({total: sp.Sum(shared[renamed], (j, lo, hi))}).xreplace({twin: shared[index]})
            out.append((shared, twin))
            break
    return out + [(node, expr)]


def _dtype_from(op) -> str:
    """The input whose dtype the op keeps: the first of floats."""
    return next(i.name for i in op.inputs if i.domain not in ("index", "mask"))


def _index_checks(op) -> list[str]:
    """Integer inputs select rows of the tensor they index: each must be in range."""
    from derive.engine.check import index_bound
    printer = ArrayPrinter("fixed", {})
    return [f'_index_range("{i.name}", {i.name}, {printer.scalar(index_bound(op, i))}'
            + (f', {i.outside})' if i.outside else ')') for i in op.inputs if i.domain == "index"]


def _output_size_checks(op) -> list[str]:
    """Output sizes that follow from the others (a convolution's): an empty output is an error."""
    own = set(op.sizes) | set(op.derived_sizes) | {s for h in op.hyper for s in h.symbols}  # each checked already
    lines = []
    for size in op.output.shape:
        if size in own or not size.free_symbols:
            continue
        formula = text(size).replace("floor(", "(").replace(")/", ")//")
        code = ArrayPrinter("fixed", {}).scalar(size)
        image = "padded input" if any(h.name == "padding" for h in op.hyper) else "input"
        lines.append(f"if {code} < 1:\n        raise ValueError(f\"{op.inputs[0].name}: the output would be empty: "
                     f"{formula} = {{{code}}} (is the kernel larger than the {image}?)\")")
    return lines


def _required_size_checks(op) -> list[str]:
    """The op's own conditions on its sizes (``Op.requires``): one refused says what it expects and the shape it got."""
    first = op.inputs[0].name
    got = "shape" if _reshaped(op) else f"{first}.shape"
    return [f"if not ({ArrayPrinter('fixed', {}).scalar(condition)}):\n        raise ValueError(f\"{first}: expected "
            f"{expects}, got shape {{{got}}}\")" for condition, expects in op.requires]


def _checks(op, d: Derivation, forward_assumes: bool) -> list[str]:
    """Runtime checks of the assumptions the derivation (or the forward code) used: a simplex sums to 1."""
    used = forward_assumes or any(s.name == "apply identities" for g in d.gradients for s in g.steps)
    if not used:
        return []
    return [f'_simplex("{i.name}", {i.name})' for i in op.inputs if i.domain == "simplex"]


def _reshaped(op) -> list[str]:
    """Inputs that are reshaped on the way in, and their gradients and the output on the way out.

    A (..., D) op works on rows (-1, D); a (N, C, ...) op on (N, C, S). The
    code in between only ever sees fixed ranks.
    """
    if op.shape_kind == "leading":
        return [i.name for i in op.inputs if _has_leading(op, i)]
    if op.shape_kind == "channels":
        trailing = op.inputs[0].shape[-1]
        return [i.name for i in op.inputs if trailing in i.shape]
    return []


def _flattened(op) -> bool:
    """A (N, C, ...) op whose output does not keep the trailing axes (flatten's y[N, C S]): the output
    keeps its own shape, and the input's gradient gets the input's shape back from the cache."""
    return op.shape_kind == "channels" and op.output.shape[-1] != op.inputs[0].shape[-1]


def _output_shape(op) -> str:
    """The output's shape in the forward, for an op reshaped at the boundary: the first input's leading
    axes, then the output's own (an embedding's idx[...] gives y[..., D], a linear layer's x[..., D]
    gives y[..., M]); the first input's shape where that is the output's."""
    first, rest = op.inputs[0], op.output.shape[1:]
    if _flattened(op):
        return f"{op.output.name}.shape"
    if op.shape_kind != "leading" or tuple(first.shape[1:]) == tuple(rest):
        return "shape"
    lead = "shape" if first.tensor.rank == 1 else f"shape[:-{first.tensor.rank - 1}]"
    return f"{lead} + {op.output.name}.shape[1:]"


def _gradient_shapes(op) -> dict:
    """How a reshaped input's gradient gets its input's shape back, where that is not the output's
    (``cache["shape"]``): the output's leading axes, then the gradient's own (a linear layer's
    dx[..., D] beside its net[..., M]); a flattened input's from the cache."""
    if _flattened(op):
        return {i.name: 'cache["input_shape"]' for i in op.differentiable if i.name in _reshaped(op)}
    rest = tuple(op.output.shape[1:])
    lead = f'cache["shape"][:-{len(rest)}]' if rest else 'cache["shape"]'
    return {i.name: f"{lead} + d{i.name}.shape[1:]" for i in op.inputs
            if _has_leading(op, i) and i.differentiable and tuple(i.shape[1:]) != rest}


def _read_at(op, size):
    """The input whose shape has this derived size (a grouped conv2d's W[O, C_g, ...]) and that shape, for
    the message: the size is read there and checked against its rule; None where no input has it (computed)."""
    inp = next((i for i in op.inputs if size in i.shape), None)
    return None if inp is None else (inp.name, ", ".join(str(s) for s in inp.shape))


def _spec(op, inp, steps="") -> str:
    if op.shape_kind == "flat":
        return "*"
    shape = [str(s) for s in inp.shape]
    return " ".join(shape[:1] + [steps] * bool(steps) + shape[1:])


def _has_leading(op, inp) -> bool:
    """Does this input carry the leading axes (``x`` of layer norm, not its ``gamma``)?"""
    return op.shape_kind == "leading" and inp.shape[0] == op.inputs[0].shape[0]


def _input_doc(op, inp) -> dict:
    if op.shape_kind == "flat":
        shape = "any shape" if inp == op.inputs[0] else f"the shape of {op.inputs[0].name}"
    elif _has_leading(op, inp):
        shape = "(..., " + ", ".join(str(s) for s in inp.shape[1:]) + ")" if inp.tensor.rank > 1 else "any shape"
    elif inp.name in _reshaped(op):
        shape = "(" + ", ".join(str(s) for s in inp.shape[:-1]) + ", ...), its trailing axes flattened to " \
            + str(inp.shape[-1])
    else:
        shape = "(" + ", ".join(str(s) for s in inp.shape) + ("," if inp.tensor.rank == 1 else "") + ")"
    return {"name": inp.name, "shape": shape, "domain": DOMAINS[inp.domain], "differentiable": inp.differentiable,
            "mask": inp.domain == "mask", "index": inp.domain == "index"}


def _sizes_line(op, sequences=(), steps="") -> str:
    """The line that checks the inputs' shapes and names the sizes; ``sequences``: inputs given an axis
    ``steps`` after their first (a cell's per-step inputs, over a sequence)."""
    specs = [(i.name, _spec(op, i, steps if i.name in sequences else "")) for i in op.inputs]
    read = [s for i in op.inputs for s in i.shape if s in op.derived_sizes]  # checked against their rule after
    names = [] if op.shape_kind == "flat" else [str(s) for s in _by_appearance(op, op.sizes + tuple(read))]
    if steps:  # _sizes names them in the order the specs first do
        order = dict.fromkeys(part.rpartition("*")[2] for _, spec in specs for part in spec.split())
        names = [name for name in order if name in names or name == steps]
    specs = ", ".join(f'("{name}", {name}, "{spec}")' for name, spec in specs)
    if not names:
        return f"_sizes({specs})"
    return f"{', '.join(names)}{',' if len(names) == 1 else ''} = _sizes({specs})"


def _by_appearance(op, sizes) -> list:
    """These sizes in the order the inputs' shapes name them, as ``_sizes`` returns them."""
    seen = []
    for inp in op.inputs:
        seen += [s for s in inp.shape if s in sizes and s not in seen]
    return seen


def _gradient_formulas(d: Derivation) -> list[str]:
    """The gradients for the docstring: written out, or (where the derivation does not write them out)
    through the intermediates' named gradients, as the code computes them."""
    steps = [] if d.written_out else [f"{a.tensor.name}{_index(a.index)} = {text(_named_dout(a.expr, d))}"
                                      for a in d.adjoints]
    return steps + [f"dE/d{g.input.name}{_index(g.index)} = {text(_named_dout(g.expr, d))}"
                    for g in (d.gradients if d.written_out else d.backprop)]


def _upstream_names(op) -> list[str]:
    """What backward calls the gradient arriving at each output: ``dout``, and ``dout_<name>`` for
    each further output (an LSTM's ``dout_cn``)."""
    return [UPSTREAM] + [f"{UPSTREAM}_{y.name}" for y in op.also_outputs]


def _index(index) -> str:
    return f"[{', '.join(str(i) for i in index)}]" if index else ""


def _named_dout(expr, d: Derivation):
    """For docstrings: the upstream gradient written ``dout``, as the code calls it."""
    if d.op.is_loss:
        return _dout(expr, d)
    named = {upstream_of(d.op, y): name for y, name in zip(d.op.outputs, _upstream_names(d.op))}
    return expr.replace(lambda e: isinstance(e, sp.Indexed) and e.base in named,
                        lambda e: sp.IndexedBase(named[e.base])[e.indices])


def _dout(expr, d: Derivation):
    """The gradient with the upstream gradient named as in the code."""
    if d.op.is_loss:
        return expr.xreplace({d.upstream: sp.Symbol(UPSTREAM)})
    return expr


def _unshare_gradients(lines: list, gradients: list) -> None:
    """Two gradients that are one array (an RNN cell's two biases, both ``sum_n delta``) each get their
    own: a caller who updates one in place must not change the other."""
    given = set()
    for pos, line in enumerate(lines):
        match = re.fullmatch(r"(\w+) = (\w+)", line)
        if match and match.group(1) in gradients:
            if match.group(2) in given:
                lines[pos] = f"{line}.copy()"
            given.add(match.group(2))
