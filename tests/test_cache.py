"""The derivation cache: exact keys, faithful round trips, safe files, and builds that match uncached ones."""
import dataclasses
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import sympy as sp

from codegen.render import module_source, op_latex
from derive.engine.cache import DerivationCache, definition_text, engine_version, key, using
from derive.engine.derivation import derive, derive_afresh
from derive.define.registry import get
from derive.define.symbols import Intermediate

ROOT = Path(__file__).resolve().parent.parent


def test_a_pickled_derivation_prints_the_same_code_and_latex(op):
    d = derive(op)
    back = pickle.loads(pickle.dumps(d, protocol=pickle.HIGHEST_PROTOCOL))
    assert back == d
    assert [g.steps for g in back.gradients] == [g.steps for g in d.gradients]
    assert module_source(back) == module_source(d)
    assert all(op_latex(back, lang) == op_latex(d, lang) for lang in ("en", "zh"))


def test_store_then_load_gives_the_derivation_with_the_live_op(tmp_path, op):
    cache = DerivationCache(tmp_path / "cache")
    assert cache.load(op) is None
    cache.store(op, derive(op))
    found = cache.load(op)
    assert found == derive(op) and found.source is op and found.op.test_sizes is op.test_sizes
    assert (cache.hits, cache.misses) == (1, 1)


def test_the_key_follows_the_definition_and_nothing_else():
    op = get("leaky_relu")
    assert key(op) == key(dataclasses.replace(op, test_sizes={"S": 7}, bench_sizes={"S": 9}))
    x = op.inputs[0].tensor
    y = op.output
    changed_definition = dataclasses.replace(op, output=Intermediate("y", y.index, y.shape, sp.Max(x[y.index], 0)))
    changed_domain = dataclasses.replace(op, inputs=(dataclasses.replace(op.inputs[0], domain="real"),))
    changed_default = dataclasses.replace(op, hyper=(dataclasses.replace(op.hyper[0], default=0.2),))
    keys = {key(op), key(changed_definition), key(changed_domain), key(changed_default)}
    assert len(keys) == 4


def test_the_definition_text_shows_what_srepr_hides():
    text = definition_text(get("softmax_cross_entropy"))
    assert "Tensor(Symbol('z', real=True), Tuple(Symbol('N', integer=True, positive=True)" in text
    assert "Intermediate(Symbol('E')" in text and "exp(Indexed(Tensor(Symbol('z', real=True)" in text


def test_keys_do_not_depend_on_the_hash_seed():
    code = ("from derive.engine.cache import key; from derive.define.registry import registry; "
            "print([key(o) for o in registry().values()])")
    outputs = {subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(outputs) == 1


def test_editing_the_engine_changes_the_version(tmp_path):
    engine = tmp_path / "engine"
    shutil.copytree(Path(sys.modules["derive.engine.derivation"].__file__).parent.parent, engine, ignore=shutil.ignore_patterns("__pycache__"))
    before = engine_version.__wrapped__(engine)
    assert before == engine_version.__wrapped__(engine)
    with open(engine / "engine" / "rewrite.py", "a") as f:
        f.write("\n# a change\n")
    assert engine_version.__wrapped__(engine) != before


def test_a_damaged_or_foreign_entry_is_a_miss(tmp_path):
    cache = DerivationCache(tmp_path)
    relu, tanh = get("relu"), get("tanh")
    cache.path(relu).write_bytes(b"not a pickle")
    assert cache.load(relu) is None
    cache.path(tanh).write_bytes(pickle.dumps(derive(relu)))
    assert cache.load(tanh) is None, "an entry whose op is not the one asked for is never used"
    cache.store(relu, derive(relu))
    assert cache.load(relu) == derive(relu)


def test_entries_are_private_and_written_whole(tmp_path):
    cache = DerivationCache(tmp_path / "new")
    cache.store(get("relu"), derive(get("relu")))
    assert (cache.directory.stat().st_mode & 0o777) == 0o700
    assert [p.name for p in cache.directory.iterdir()] == [cache.path(get("relu")).name]
    assert (cache.path(get("relu")).stat().st_mode & 0o077) == 0


def test_a_directory_others_may_write_to_is_not_used(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    cache = DerivationCache(shared)
    relu = get("relu")
    cache.store(relu, derive(relu))
    assert not any(shared.iterdir())
    shared.chmod(0o700)
    cache.store(relu, derive(relu))
    shared.chmod(0o777)
    assert cache.load(relu) is None


def test_derive_reads_the_active_cache(tmp_path):
    relu = get("relu")
    cache = DerivationCache(tmp_path)
    cache.store(relu, derive_afresh(relu))
    derive.cache_clear()
    try:
        with using(cache):
            derive(relu)
        assert (cache.hits, cache.misses) == (1, 0)
    finally:
        derive.cache_clear()


def build(tmp_path, name, *flags):
    out = tmp_path / name
    result = subprocess.run([sys.executable, "-m", "derive", "build", "--out", str(out), *flags], cwd=ROOT,
                            capture_output=True, text=True, env={**os.environ, "DERIVE_CACHE_DIR": str(tmp_path / "c")})
    assert result.returncode == 0, result.stderr
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}, result


def test_a_warm_build_writes_the_same_bytes_as_a_cold_one(tmp_path):
    uncached, result = build(tmp_path, "uncached", "--no-cache")
    assert "cache not used" in result.stderr and not (tmp_path / "c").exists()
    cold, result = build(tmp_path, "cold")
    assert " 0 from the cache" in result.stderr
    warm, result = build(tmp_path, "warm")
    assert " 0 derived" in result.stderr
    assert uncached == cold == warm


def test_rendered_files_are_kept_and_a_damaged_entry_is_rendered_again(tmp_path, monkeypatch):
    from functools import partial

    import pytest

    from codegen import build as building
    render = partial(building._op_files, get("relu"))
    with using(DerivationCache(tmp_path)):
        first = building._rendered("op relu", render)
        entry, = tmp_path.glob("rendered-*.json")
        monkeypatch.setattr(building, "module_source", lambda d: pytest.fail("rendered again"))
        assert building._rendered("op relu", render) == first
        entry.write_text("{not json")
        monkeypatch.undo()
        assert building._rendered("op relu", render) == first
    assert first == render() and set(first) == {"relu.py", "latex/en/relu.tex", "latex/zh/relu.tex"}


def test_editing_a_template_changes_the_emitters_version(tmp_path):
    from codegen.build import CODEGEN
    emitters = tmp_path / "codegen"
    shutil.copytree(CODEGEN, emitters, ignore=shutil.ignore_patterns("__pycache__"))
    before = engine_version.__wrapped__(emitters)
    with open(emitters / "templates" / "module.py.j2", "a") as f:
        f.write("\n")
    assert engine_version.__wrapped__(emitters) != before
