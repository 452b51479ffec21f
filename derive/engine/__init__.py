"""The engine: a forward definition in, its derivation out (gradients, steps, checks, networks)."""


class Mismatch(ValueError):
    """A derived gradient, or code generated from it, that its check contradicts: never output.

    Here, not in ``check``, so that the command line can name it without loading SymPy.
    """
