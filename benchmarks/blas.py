"""The BLAS a user has: ``derive bench`` times NumPy with the kernel OpenBLAS picks for the CPU.

Some machines set ``OPENBLAS_CORETYPE`` (and ``OPENBLAS_L2_SIZE``, for older
OpenBLAS builds) in the environment, which makes NumPy's OpenBLAS run the
kernel named there, an AVX2 one on a CPU with AVX-512: a matrix product then
runs at a third of its speed, while PyTorch (MKL) is unaffected. A user's
machine has no such setting, so the bench sets them aside. OpenBLAS reads
them once, when NumPy loads it: a process that has already imported NumPy
times in a child process whose environment lacks them.
"""
from __future__ import annotations

import os
import subprocess
import sys

#: Variables that choose OpenBLAS's kernel or its cache-size model instead of the CPU's own.
SET_ASIDE = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
#: How a parent process tells the child that times for it what it set aside (for the header).
_HANDED_DOWN = "DERIVE_BENCH_SET_ASIDE"

_set_aside: dict = {}  # name -> value, what this process (or its parent) removed


def overridden() -> dict:
    """The variables of SET_ASIDE that the environment sets: name -> value."""
    return {name: os.environ[name] for name in SET_ASIDE if name in os.environ}


def set_aside() -> None:
    """Remove SET_ASIDE from this process's environment, remembering them; before NumPy loads."""
    handed = os.environ.pop(_HANDED_DOWN, "")
    _set_aside.update(part.split("=", 1) for part in handed.split() if "=" in part)
    for name, value in overridden().items():
        _set_aside[name] = value
        del os.environ[name]


def rerun_in_clean_process(argv: list) -> int:
    """Run ``derive`` with ``argv`` in a child process without SET_ASIDE; its exit code.

    For a process that has imported NumPy already, whose OpenBLAS has read them.
    """
    env = {k: v for k, v in os.environ.items() if k not in SET_ASIDE}
    env[_HANDED_DOWN] = " ".join(f"{k}={v}" for k, v in overridden().items())
    sys.stdout.flush()
    return subprocess.run([sys.executable, "-m", "derive", *argv], env=env).returncode


def describe() -> list[str]:
    """Header lines: the kernel choice, NumPy's BLAS (library, version, kernel, threads); after NumPy loads."""
    active = overridden()
    if active:
        choice = (f"{_assignments(active)} in the environment: NumPy's OpenBLAS runs the kernel named there, "
                  f"not the one it picks for this CPU")
    elif _set_aside:
        choice = (f"{_assignments(_set_aside)} set aside before NumPy loaded: NumPy's OpenBLAS runs the kernel "
                  f"it picks for this CPU, as on a user's machine")
    else:
        choice = f"{' and '.join(SET_ASIDE)} not set: NumPy's OpenBLAS runs the kernel it picks for this CPU"
    return [_numpy_blas(), choice]


def _assignments(variables: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in variables.items())


def _numpy_blas() -> str:
    try:
        import threadpoolctl
    except ImportError:
        return "NumPy's BLAS: unknown (pip install threadpoolctl, or -e '.[bench]', to name it)"
    libraries = [info for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"]
    if not libraries:
        return "NumPy's BLAS: none found by threadpoolctl"
    return "NumPy's BLAS: " + "; ".join(
        f"{info['internal_api']} {info.get('version') or '(version unknown)'} ({os.path.basename(info['filepath'])}), "
        f"kernel {info.get('architecture') or 'unknown'}, {info['num_threads']} threads" for info in libraries)
