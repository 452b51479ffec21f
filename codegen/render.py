"""Templates to text: one jinja2 environment, strict about missing names; layout only, no maths."""
from __future__ import annotations

from functools import lru_cache

import jinja2

from derive.engine.derivation import Derivation

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


def module_source(d: Derivation) -> str:
    """The NumPy module for an op; compiled here so that a broken template never reaches disk."""
    text = environment().get_template("module.py.j2").render(**module_context(d))
    compile(text, f"generated/{d.op.name}.py", "exec")
    return text


def op_latex(d: Derivation, lang: str = "en", forms=("index", "matrix")) -> str:
    """The LaTeX fragment for an op: forward, derivation steps, matrix form."""
    op = d.op
    return environment().get_template("op.tex.j2").render(
        op=op, summary=op.doc.strip().splitlines()[0],
        forms=[(form, op_blocks(d, lang, form)) for form in forms])
