"""Shared fixtures: every test that concerns ops runs over the whole registry, with the op's name as id."""
import importlib
import zlib

import numpy as np
import pytest

from derive.engine import derive
from derive.registry import registry

OPS = list(registry().values())


def pytest_generate_tests(metafunc):
    if "op" in metafunc.fixturenames:
        metafunc.parametrize("op", OPS, ids=[op.name for op in OPS])


@pytest.fixture
def derivation(op):
    return derive(op)


@pytest.fixture
def module(op):
    """The committed generated module (test_build proves it equals a fresh build)."""
    return importlib.import_module(f"generated.{op.name}")


@pytest.fixture
def rng(request):
    """A fixed seed per test (from its id, stable across runs), so that a failure reproduces."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
