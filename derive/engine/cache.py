"""A content-addressed cache of derivations, so that an unchanged op is not derived again.

An entry's key is a SHA-256 of everything a derivation depends on: the
op's definition written out exactly (every tensor with its shape, every
intermediate with its definition, the hyper-parameters and identities),
the source of the engine's modules (every ``derive/**/*.py``: editing the
engine invalidates every entry by itself), and the SymPy and Python
versions. The value is the pickled ``Derivation``.

Unpickling runs code chosen by whoever wrote the file, so the cache lives
in the user's own directory (``$DERIVE_CACHE_DIR``, else
``$XDG_CACHE_HOME/derive``, else ``~/.cache/derive``), is created private
(mode 0700), is not read when another user owns it or others may write to
it, and every entry is written to a temporary file and renamed into place,
so a reader never sees half an entry.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import stat
import sys
import tempfile
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import sympy as sp
from sympy.printing.repr import ReprPrinter

from derive.define.op import Op

ENGINE = Path(__file__).resolve().parent.parent  # the derive package: definitions, engine, ops


def default_directory() -> Path:
    """``$DERIVE_CACHE_DIR``, else ``$XDG_CACHE_HOME/derive``, else ``~/.cache/derive``."""
    if os.environ.get("DERIVE_CACHE_DIR"):
        return Path(os.environ["DERIVE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "derive"


class _ExactRepr(ReprPrinter):
    """``srepr`` that also writes what SymPy hides: a tensor's shape, an intermediate's definition."""

    def _print_Tensor(self, expr):
        return f"Tensor({self._print(expr.label)}, {self._print(sp.Tuple(*expr.shape))})"

    def _print_Intermediate(self, expr):
        return (f"Intermediate({self._print(expr.label)}, {self._print(sp.Tuple(*expr.index))}, "
                f"{self._print(sp.Tuple(*expr.shape))}, {self._print(expr.definition)})")


def definition_text(op: Op) -> str:
    """The op as exact, stable text: every field a derivation can depend on.

    ``test_sizes`` and ``bench_sizes`` are left out: they are not part of
    an op's identity (``Op`` does not compare them) and a derivation never
    sees a size.
    """
    exact = _ExactRepr().doprint
    lines = [f"name {op.name!r}", f"doc {op.doc!r}", f"shape_kind {op.shape_kind!r}",
             f"pytorch {op.pytorch!r}", f"upstream {op.upstream!r}"]
    lines += [f"input {exact(i.tensor)} {i.differentiable} {i.domain!r} {i.element!r} {i.matrix!r}"
              for i in op.inputs]
    lines += [f"output {exact(op.output)}"]
    lines += [f"extra {exact(node)}" for node in op.extra]
    lines += [f"hyper {' '.join(exact(s) for s in h.symbols)} {h.default!r} {h.cases!r} {h.doc!r}" for h in op.hyper]
    lines += [f"theorem {exact(lhs)} = {exact(rhs)}" for lhs, rhs in op.theorems]
    return "\n".join(lines)


@lru_cache(maxsize=None)
def engine_version(engine: Path = ENGINE) -> str:
    """A hash of a package's source files (``**/*.py`` and templates, ``**/*.j2``) and the versions
    it runs on: the engine's by default, the emitters' for rendered outputs."""
    digest = hashlib.sha256(f"python {sys.version_info[:2]} sympy {sp.__version__}\n".encode())
    for path in sorted(p for p in engine.rglob("*") if p.suffix in (".py", ".j2")):
        digest.update(f"{path.relative_to(engine).as_posix()}\n".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def key(op: Op) -> str:
    """The cache key of an op's derivation."""
    return hashlib.sha256(f"{engine_version()}\n{definition_text(op)}".encode()).hexdigest()


class DerivationCache:
    """Derivations on disk, one pickle per key."""

    def __init__(self, directory: Path | str | None = None):
        self.directory = Path(directory) if directory is not None else default_directory()
        self.hits = self.misses = 0

    def path(self, op: Op) -> Path:
        return self.directory / f"{key(op)}.pickle"

    def load(self, op: Op):
        """The cached derivation of ``op``, or None (absent, unreadable, unsafe, or not this op)."""
        path = self.path(op)
        if not path.is_file() or not self._trusted():
            self.misses += 1
            return None
        try:
            found = pickle.loads(path.read_bytes())
        except Exception:  # a damaged entry is a miss; deriving again overwrites it
            found = None
        if getattr(found, "source", None) != op:
            self.misses += 1
            return None
        self.hits += 1
        # The live op, with its test and bench sizes (not part of the key).
        sizes = {f: getattr(op, f) for f in ("test_sizes", "small_sizes", "bench_sizes")}
        return replace(found, source=op, op=replace(found.op, **sizes))

    def store(self, op: Op, derivation) -> None:
        self._write(self.path(op), pickle.dumps(derivation, protocol=pickle.HIGHEST_PROTOCOL))

    def load_texts(self, name: str) -> dict | None:
        """Files rendered from derivations (relative path -> text), stored under ``name`` (a hash of
        all they depend on), or None. Plain JSON: nothing in it runs when read."""
        path = self.directory / f"{name}.json"
        if not path.is_file() or not self._trusted():
            return None
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # a damaged entry is a miss
            return None
        if not isinstance(found, dict) or not all(isinstance(v, str) for v in found.values()):
            return None
        return found

    def store_texts(self, name: str, texts: dict) -> None:
        self._write(self.directory / f"{name}.json", json.dumps(texts, sort_keys=True).encode("utf-8"))

    def _write(self, path: Path, data: bytes) -> None:
        """Write an entry atomically: a temporary file in the same directory, renamed into place."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self._trusted():
            return
        fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def _trusted(self) -> bool:
        """Only a directory that this user owns and nobody else may write to."""
        try:
            info = self.directory.stat()
        except OSError:
            return False
        owner = os.getuid() if hasattr(os, "getuid") else info.st_uid
        return info.st_uid == owner and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


_active: DerivationCache | None = None


def active() -> DerivationCache | None:
    """The cache ``derive()`` reads and writes, if any (none unless a command turns one on)."""
    return _active


@contextlib.contextmanager
def using(cache: DerivationCache | None):
    """Let ``derive()`` use ``cache`` (None: no cache) inside the block."""
    global _active
    previous, _active = _active, cache
    try:
        yield cache
    finally:
        _active = previous
