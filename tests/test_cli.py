"""The command line: what each command prints, and its exit codes (0 ok, 1 check failed, 2 bad usage)."""
import subprocess
import sys
from pathlib import Path

import pytest

from derive.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run(*args):
    return subprocess.run([sys.executable, "-m", "derive", *args], cwd=ROOT, capture_output=True, text=True)


def test_list_shows_every_op_with_its_formula(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "linear" in out and "net[n, k] = sum_j(W[k, j]*x[n, j]) + b[k]" in out


@pytest.mark.parametrize("args, message", [
    (["latex", "no_such_op"], "unknown op 'no_such_op'"),
    (["code", "no_such_op"], "unknown op"),
    (["check", "linear", "nope"], "unknown op 'nope'"),
    (["latex", "linear", "--lang", "fr"], "invalid choice"),
    (["latex", "--chain", "linear,half_sse,sigmoid"], "must come last"),
    (["frobnicate"], "invalid choice"),
    (["demo", "--epochs", "0"], "at least 1"),
    ([], "required"),
])
def test_bad_usage_is_one_line_and_exit_2(args, message):
    result = run(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_latex_and_code_print_what_build_writes(capsys):
    assert main(["latex", "sigmoid", "--lang", "zh"]) == 0
    tex = capsys.readouterr().out
    assert r"g_{i} y_{i} \left(1 - y_{i}\right)" in tex and "后向传播" in tex
    assert main(["code", "linear"]) == 0
    code = capsys.readouterr().out
    assert (ROOT / "generated" / "linear.py").read_text() == code


def test_latex_of_a_chain_and_of_the_article(capsys):
    assert main(["latex", "--chain", "linear,sigmoid,linear,sigmoid,half_sse"]) == 0
    out = capsys.readouterr().out
    assert r"y_{j} \left(1 - y_{j}\right) \sum_{k} \delta_{k} w_{kj}" in out
    assert main(["latex", "article", "--lang", "zh"]) == 0
    assert "隐藏层" in capsys.readouterr().out


def test_check_passes_and_reports(capsys):
    assert main(["check", "sigmoid", "softmax_cross_entropy"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert len(rows) == 2 and all(row.split()[1] == "exact" and row.split()[-2:] == ["ok", "ok"] for row in rows)


def test_demo_trains_and_the_loss_falls():
    from derive.demo import run as demo
    losses, accuracy = demo(epochs=200, quiet=True)
    assert losses[-1] < 0.5 * losses[0]
    assert accuracy > 0.8


def test_a_reader_that_stops_early_gets_no_traceback():
    result = subprocess.run(f"'{sys.executable}' -m derive list | head -1", shell=True, cwd=ROOT,
                            capture_output=True, text=True)
    assert result.stdout.count("\n") == 1 and result.stderr == ""
