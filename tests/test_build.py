"""generated/ is what `derive build` writes today, byte for byte, whatever the hash seed."""
import os
import subprocess
import sys
from pathlib import Path

from codegen.build import GENERATED, HEADER, outputs
from derive.define.registry import registry

ROOT = Path(__file__).resolve().parent.parent


def test_generated_is_up_to_date():
    stale = [rel for rel, text in outputs().items()
             if not (GENERATED / rel).exists() or (GENERATED / rel).read_text(encoding="utf-8") != text]
    assert not stale, f"generated/ is stale; run `derive build` and commit: {stale}"


def test_every_op_has_its_files_and_no_file_lacks_an_op():
    files = outputs()
    for name in registry():
        assert f"{name}.py" in files
        assert f"latex/en/{name}.tex" in files and f"latex/zh/{name}.tex" in files
    on_disk = {p.relative_to(GENERATED).as_posix() for p in GENERATED.rglob("*")
               if p.is_file() and p.suffix in (".py", ".tex")}
    assert on_disk == set(files)


def test_generated_files_say_so_on_line_one():
    for rel, text in outputs().items():
        assert HEADER in text.splitlines()[0] or HEADER in text.splitlines()[0].lstrip('"'), rel


def test_build_is_byte_identical_across_hash_seeds(tmp_path):
    trees = []
    for seed in ("0", "12345"):
        out = tmp_path / seed
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-m", "derive", "build", "--no-cache", "--out", str(out)],
                       cwd=ROOT, env=env, check=True, capture_output=True)
        trees.append({p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()})
    assert trees[0] == trees[1]


def test_build_writes_only_changed_files(tmp_path):
    from codegen.build import write
    files = {"a.py": f"# {HEADER}\n", "latex/en/b.tex": f"% {HEADER}\n"}
    assert write(tmp_path, files) == {"a.py": True, "latex/en/b.tex": True}
    assert write(tmp_path, files) == {"a.py": False, "latex/en/b.tex": False}
    write(tmp_path, {"a.py": files["a.py"]})
    assert not (tmp_path / "latex/en/b.tex").exists(), "a generated file no op produces is removed"
