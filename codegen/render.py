"""Templates to text: one jinja2 environment, strict about missing names; layout only, no maths."""
from __future__ import annotations

from functools import lru_cache

import jinja2

from derive.define.forms import GIVEN, Axis, ClassAxis, Option, RowAxes, form_label
from derive.engine.derivation import Derivation, derive

from codegen.module.context import module_context
from codegen.latex.blocks import op_blocks


@lru_cache(maxsize=None)
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("codegen", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def unrolled_source(u) -> str:
    """The module of a recurrent cell unrolled over a sequence (``codegen.module.unrolled``), compiled here too."""
    from codegen.module.unrolled import unrolled_context
    context = unrolled_context(u)
    text = environment().get_template("unrolled.py.j2").render(**context)
    compile(text, f"generated/{context['name']}.py", "exec")
    return text


def module_source(d: Derivation) -> str:
    """The NumPy module for an op; compiled here so that a broken template never reaches disk."""
    if d.op.options:
        text = _forms_module(d)
    else:
        text = environment().get_template("module.py.j2").render(
            forward_name="forward", backward_name="backward", **module_context(d))
    compile(text, f"generated/{d.op.name}.py", "exec")
    return text


#: Each reading of ``derive.define.forms.READINGS`` as the generated forward tests its argument.
READ_CODE = {
    "integer": "np.issubdtype(np.asarray({}).dtype, np.integer)",
    "nonzero": "{} != 0",
    "unnormalized": "not _sums_to_one({})",
}


def _read(option) -> str:
    """The generated forward's choice of an option read from an argument: the first choice whose reading holds."""
    argument, *readings = option.read
    tests = "".join(f"{choice!r} if {READ_CODE[reading].format(argument)} else "
                    for choice, reading in zip(option.choices[1:], readings))
    return f"({tests}{option.choices[0]!r})"


def _read_already(op, context) -> dict:
    """The form's context without the checks its dispatcher has made: an input read as rows summing to 1
    reaches this form only so (its ``_simplex`` check would add a second pass over it)."""
    read = {o.read[0] for o in op.options if isinstance(o, Option) and "unnormalized" in o.read[1:]}
    return dict(context, checks=[c for c in context["checks"] if not any(c == f'_simplex("{n}", {n})' for n in read)])


def _forms_module(d: Derivation) -> str:
    """An op with options: each form's forward and backward as the module template writes them (under
    private names), one set of helpers, and a ``forward`` and ``backward`` that run the form chosen."""
    template = environment().get_template("module.py.j2")
    head = module_context(d)
    forms, helpers, inputs = [], set(), {}
    # every form's inputs, in order (an input the default form leaves out, a weight, after the others)
    arguments = list(dict.fromkeys(i.name for op in d.op.all_forms for i in op.inputs))
    for op in d.op.all_forms:
        context = head if op is d.op else module_context(derive(op))
        label = form_label(op)
        context = dict(_read_already(d.op, context), forward_name=f"_forward_{label}", backward_name=f"_backward_{label}")
        if context["reshape_helper"] != head["reshape_helper"]:
            raise ValueError(f"{d.op.name}: the form {label} reshapes its inputs another way")
        helpers |= set(context["helpers"])
        for i in context["inputs"]:  # an input another form reads otherwise (t as class labels) says so
            inputs[i["name"]] = inputs.get(i["name"], dict(i, others=[]))
            if (i["shape"], i["index"]) != (inputs[i["name"]]["shape"], inputs[i["name"]]["index"]) \
                    and i not in inputs[i["name"]]["others"]:
                inputs[i["name"]]["others"].append(i)
        given = {i.name for i in op.inputs}
        forms.append({
            "key": repr(tuple(value for _, value in op.chosen)),
            "title": ", ".join(f"{name}={value!r}" for name, value in op.chosen),
            "forward_name": context["forward_name"], "backward_name": context["backward_name"],
            "call": ", ".join([name for name in arguments if name in given]
                              + [f"{h.name}={h.name}" for h in op.hyper]),
            "functions": "".join(template.blocks["functions"](template.new_context(context))),
            "forward_formulas": context["forward_formulas"], "gradient_formulas": context["gradient_formulas"],
            "is_loss": context["is_loss"], "output": context["output"],
        })
    choosing = [o for o in d.op.options if isinstance(o, Option)]
    axes = [a for a in d.op.options if isinstance(a, Axis)]
    rows = [{"name": r.name, "of": r.of, "default": r.default, "doc": r.doc, "inputs": _row_inputs(d.op, arguments)}
            for r in d.op.options if isinstance(r, RowAxes)]
    classes = next(({"of": c.of, "inputs": _per_sample(d.op, arguments)}
                    for c in d.op.options if isinstance(c, ClassAxis)), None)
    if classes:  # each per-sample input may come with more sample axes
        for name in classes["inputs"]:
            inputs[name] = dict(_more_samples(inputs[name]), others=[_more_samples(i) for i in inputs[name]["others"]])
    optional = {o.name for o in choosing if o.input}
    options = [{"name": o.name, "input": o.input or bool(o.read), "doc": o.doc,
                "listed": ", ".join(f"{c!r}{' (default)' if c == o.default else ''}" for c in o.choices)}
               for o in choosing]
    form = ", ".join(f"{GIVEN!r} if {o.name} is not None else None" if o.input else _read(o)
                     if o.read else f'_option("{o.name}", {o.name}, {o.choices!r})' for o in choosing)
    keywords = [o for o in d.op.options if isinstance(o, Axis) or isinstance(o, Option) and not (o.input or o.read)]
    signature = ", ".join([name + ("=None" if name in optional else "") for name in arguments]
                          + (["*"] if d.op.hyper or keywords or rows else [])
                          + [f"{r['name']}={r['default']!r}" for r in rows]
                          + [f"{h.name}={h.default!r}" for h in d.op.hyper]
                          + [f"{o.name}={o.default!r}" for o in keywords])
    helper_context = dict(head, helpers=sorted(helpers), inputs=[a for i in inputs.values() for a in [i, *i["others"]]])
    return environment().get_template("forms.py.j2").render(
        op=d.op, summary=head["summary"], details=head["details"], options=options, forms=forms,
        signature=signature, form=f"({form},)" if form else "()", hyper=head["hyper"], axes=axes, rows=rows,
        classes=classes,
        any_loss=any(f["is_loss"] for f in forms), sums_to_one="unnormalized" in form,
        absent=[(repr(tuple(v for _, v in chosen)), repr(why)) for chosen, why in d.op.absent],
        inputs=[dict(inputs[name], optional=name in optional) for name in arguments],
        helpers="".join(template.blocks["helpers"](template.new_context(helper_context))))


def _row_inputs(op, arguments) -> list:
    """The inputs of one row's shape (D,), a layer norm's scale and shift: laid out as the row is."""
    row = {i.name for form in op.all_forms for i in form.inputs[1:] if tuple(i.shape) == (form.inputs[0].shape[-1],)}
    return [name for name in arguments if name in row]


def _more_samples(argument: dict) -> dict:
    """An argument's documented shape, (N, K) or (N,), with PyTorch's further sample axes beside it."""
    shape = argument["shape"]
    return dict(argument, shape=f"{shape} or {shape[:-1].rstrip(',')}, d...)")


def _per_sample(op, arguments) -> list:
    """The inputs with one row per sample (logits, targets), which a class axis lays out as the first input."""
    lead = {i.name for form in op.all_forms for i in form.inputs if i.shape[:1] == form.inputs[0].shape[:1]}
    return [name for name in arguments if name in lead]


def op_latex(d: Derivation, lang: str = "en", forms=("index", "matrix")) -> str:
    """The LaTeX fragment for an op: forward, derivation steps, matrix form."""
    op = d.op
    return environment().get_template("op.tex.j2").render(
        op=op, summary=op.doc.strip().splitlines()[0],
        forms=[(form, op_blocks(d, lang, form)) for form in forms])
