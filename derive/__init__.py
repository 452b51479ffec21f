"""derive: backpropagation derived by machine. ``derive.show(...)`` displays a derivation in Jupyter."""


def show(*names, chain: bool = False, lang: str = "en"):
    """A derivation that renders itself in a notebook: ``show("linear")``, ``show("linear", "sigmoid",
    "half_sse", chain=True)``, ``show("article", lang="zh")``. See ``codegen.doc.show``."""
    from codegen.doc import show as _show
    return _show(*names, chain=chain, lang=lang)
