"""Shared fixtures: every test that concerns ops runs over the whole registry, with the op's name as id."""
import importlib
import zlib

import numpy as np
import pytest

from derive.engine.derivation import derive
from derive.define.registry import registry

OPS = list(registry().values())


@pytest.fixture(autouse=True, scope="session")
def private_derivation_cache(tmp_path_factory):
    """Commands that tests run (``derive build`` in a subprocess too) use a temporary cache, never the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DERIVE_CACHE_DIR", str(tmp_path_factory.mktemp("derive-cache")))
        yield


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
