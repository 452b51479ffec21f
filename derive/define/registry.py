"""Where ops come from: the built-in modules, packages' entry points, and a user's own file.

Every module in ``derive/ops`` defines one ``OP``; ``registry()`` collects
them (the ops ``derive build`` writes into ``generated/``). A package ships
more through the entry point group ``derive.ops`` (an ``Op``, a list of
them, or a module defining ``OP`` or ``OPS``). A user's file, given with
``--ops FILE.py``, defines ``OP = Op(...)`` or ``OPS = [...]``; inside
``using(ops)`` every lookup by name (``get``, chains, documents, verify)
finds them too.
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib
import importlib.metadata
import pkgutil
import runpy
from functools import lru_cache
from pathlib import Path

from derive import ops
from derive.define.op import Op

ENTRY_POINTS = "derive.ops"

_extra: contextvars.ContextVar = contextvars.ContextVar("extra_ops", default=())


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


@lru_cache(maxsize=None)
def plugins() -> dict[str, Op]:
    """Ops that installed packages register under the entry point group ``derive.ops``."""
    found: dict[str, Op] = {}
    for point in sorted(importlib.metadata.entry_points(group=ENTRY_POINTS), key=lambda p: p.name):
        where = f"entry point {point.name!r} ({point.value})"
        try:
            loaded = point.load()
        except Exception as error:  # a broken package must not break the tool: say which one
            raise ValueError(f"{where}: cannot load it: {type(error).__name__}: {error}") from None
        for op in _ops_in(loaded, where):
            _add(found, op, where)
    return dict(sorted(found.items()))


def available() -> dict[str, Op]:
    """Every op a name can refer to here: built-in, from packages, and the user's (inside ``using``)."""
    found = dict(registry())
    for op in list(plugins().values()) + list(_extra.get()):
        _add(found, op, op.origin or "a package")
    return found


def get(op: str | Op) -> Op:
    """The op called ``op`` (an ``Op`` is itself), or a ValueError that lists the known ones."""
    if isinstance(op, Op):
        return op
    known = available()
    if op not in known:
        raise ValueError(f"op: unknown op {op!r}; known ops: {', '.join(known)}")
    return known[op]


@contextlib.contextmanager
def using(extra):
    """Let lookups by name find ``extra`` (a user's ops) inside the block."""
    extra = tuple(extra)
    names = available()
    for op in extra:
        if op.name in names and names[op.name] is not op:
            raise ValueError(f"ops: {op.origin or 'an op'} defines {op.name!r}, the name of another op; "
                             f"rename it")
    token = _extra.set(_extra.get() + extra)
    try:
        yield extra
    finally:
        _extra.reset(token)


def load_file(path: str | Path) -> tuple[Op, ...]:
    """The ops a user's Python file defines (``OP = Op(...)`` or ``OPS = [...]``), each told its origin.

    The file is the user's own program, run as Python (as ``python FILE`` would run it); formulas
    typed on the command line are never run this way (see ``derive.define.oneline``).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--ops: no such file {str(path)!r}")
    if path.suffix != ".py":
        raise ValueError(f"--ops: expected a Python file (.py), got {str(path)!r}")
    try:
        namespace = runpy.run_path(str(path), run_name="derive_user_ops")
    except SystemExit:
        raise ValueError(f"--ops: {path} exited while it was loaded") from None
    except Exception as error:
        line = _line_of(error, path)
        raise ValueError(f"--ops: {path}{line}: {type(error).__name__}: {error}") from None
    if "OPS" in namespace:
        found = _ops_in(namespace["OPS"], str(path))
    elif "OP" in namespace:
        found = _ops_in(namespace["OP"], str(path))
    else:
        raise ValueError(f"--ops: {path} defines neither OP = Op(...) nor OPS = [...]")
    names: dict = {}
    for op in found:
        _add(names, op, str(path))
    return tuple(op if op.origin else _with_origin(op, str(path)) for op in found)


def _ops_in(value, where: str) -> list[Op]:
    if isinstance(value, Op):
        return [value]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, Op) for v in value):
        return list(value)
    if hasattr(value, "OPS") or hasattr(value, "OP"):  # a module
        return _ops_in(getattr(value, "OPS", None) or getattr(value, "OP"), where)
    raise ValueError(f"{where}: expected an Op or a list of Ops, got {type(value).__name__}")


def _add(found: dict, op: Op, where: str) -> None:
    if op.name in found and found[op.name] is not op:
        raise ValueError(f"{where}: two ops are named {op.name!r}")
    found[op.name] = op


def _with_origin(op: Op, origin: str) -> Op:
    import dataclasses
    forms = tuple(dataclasses.replace(form, origin=origin) for form in op.forms)  # each form is from the file too
    return dataclasses.replace(op, origin=origin, forms=forms)


def _line_of(error: Exception, path: Path) -> str:
    tb = error.__traceback__
    line = None
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).resolve() == path.resolve():
            line = tb.tb_lineno
        tb = tb.tb_next
    return f", line {line}" if line else ""
