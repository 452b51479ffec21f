"""The registry: every module in ``derive/ops`` defines one ``OP``; this collects them."""
from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

from derive import ops
from derive.define.op import Op


@lru_cache(maxsize=None)
def registry() -> dict[str, Op]:
    """All built-in ops by name, sorted; a duplicate name or a module without ``OP`` is an error."""
    found: dict[str, Op] = {}
    for info in sorted(pkgutil.iter_modules(ops.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{ops.__name__}.{info.name}")
        op = getattr(module, "OP", None)
        if not isinstance(op, Op):
            raise TypeError(f"derive/ops/{info.name}.py must define OP = Op(...)")
        if op.name in found:
            raise ValueError(f"two ops are named {op.name!r}")
        found[op.name] = op
    return dict(sorted(found.items()))


def get(name: str) -> Op:
    """The op called ``name``, or a ValueError that lists the known ones."""
    ops_ = registry()
    if name not in ops_:
        raise ValueError(f"op: unknown op {name!r}; known ops: {', '.join(ops_)}")
    return ops_[name]
