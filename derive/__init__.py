"""derive: backpropagation derived by machine.

``derive.show(...)`` displays a derivation in Jupyter; ``derive.verify(formula,
op=..., wrt=...)`` checks a hand-derived formula (see ``derive.verifier.verification``).
Both are imported on first use, so that ``import derive`` stays light for the
command line.
"""


def show(*names, chain: bool = False, lang: str = "en"):
    """A derivation that renders itself in a notebook: ``show("linear")``, ``show("linear", "sigmoid",
    "half_sse", chain=True)``, ``show("article", lang="zh")``. See ``codegen.document.document.show``."""
    from codegen.document.document import show as _show
    return _show(*names, chain=chain, lang=lang)


def __getattr__(name):
    if name == "verify":
        from derive.verifier.verification import verify
        return verify
    if name == "Verdict":
        from derive.verifier.verification import Verdict
        return Verdict
    raise AttributeError(f"module 'derive' has no attribute {name!r}")
