"""derive: backpropagation derived by machine.

``derive.verify(formula, op=..., wrt=...)`` checks a hand-derived formula
(see ``derive.verification``); it is imported on first use, so that ``import
derive`` stays light for the command line.
"""


def __getattr__(name):
    if name == "verify":
        from .verification import verify
        return verify
    if name == "Verdict":
        from .verification import Verdict
        return Verdict
    raise AttributeError(f"module 'derive' has no attribute {name!r}")
