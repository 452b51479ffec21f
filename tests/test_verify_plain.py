"""The plain syntax names whatever the LaTeX names: a network's tensors by their code names (``W_5``, ``dy_4``,
``W_h``), an op's accented or tagged names by their words (``xhat``, ``W_ih``), as ``--symbols`` lists them."""
from pathlib import Path

import pytest
import sympy as sp

from derive.cli import main
from derive.engine.network import chain_network, file_network
from derive.verifier.reading import names_of, plain_element
from derive.verifier.verification import read

ROOT = Path(__file__).resolve().parents[1]
CNN = "conv2d,relu,max_pool2d,flatten,linear,softmax_cross_entropy"
NETS = {"cnn": lambda: chain_network(CNN.split(","), {}),
        "residual": lambda: file_network(ROOT / "examples" / "networks" / "residual.py", {}),
        "branches": lambda: file_network(ROOT / "examples" / "networks" / "branches.py", {})}


def _read_back(op):
    """Every entry with a plain spelling (as --symbols lists it): (its plain text, what it reads as, its element)."""
    for entry in names_of(op, None).table.entries:
        plain = plain_element(entry, False)
        if plain:
            element = entry.element([sp.Symbol(c, integer=True) for c in entry.letters])
            yield plain, read(plain, op=op, syntax="plain"), element


@pytest.mark.parametrize("net", sorted(NETS))
def test_every_network_tensor_has_a_plain_spelling_that_reads_back(net):
    op = NETS[net]().op
    table = names_of(op, None).table
    unspellable = [e.head() for e in table.entries
                   if e.rank and ("\\" in e.head() or "^" in e.head()) and not plain_element(e, False)]
    assert not unspellable  # every tagged or accented name has a plain word
    read_back = list(_read_back(op))
    assert len(read_back) >= 4
    for plain, got, element in read_back:
        assert got == element, plain


def test_every_op_name_with_a_plain_spelling_reads_back(op):
    for plain, got, element in _read_back(op):
        assert got == element, plain


@pytest.mark.parametrize("args, formula, code, hint", [
    (["--chain", CNN, "--wrt", "dy_4"], "sum(W_5[k, f]*dnet_5[n, k], k)", 0, None),
    (["--chain", CNN, "--wrt", "dy_4"], "sum(W_5[f, k]*dnet_5[n, k], k)", 1, None),
    (["--chain", CNN, "--wrt", "W_5"], "dnet_5.T @ y_4", 0, None),
    (["--chain", CNN, "--wrt", "W_5"], "-dnet_5.T @ y_4", 1, "sign flipped"),
    (["--net", "examples/networks/residual.py", "--wrt", "x"], "sum(W_h[j, k]*dh[n, j], j) + ds[n, k]", 0, None),
    (["--net", "examples/networks/residual.py", "--wrt", "x"], "dh @ W_h + ds", 0, None),
    (["--net", "examples/networks/residual.py", "--wrt", "x"], "sum(W_h[j, k]*dh[n, j], j)", 1, "term"),
    (["--net", "examples/networks/branches.py", "--wrt", "W_h"], "dh.T @ X + dp.T @ o", 0, None),
])
def test_verify_a_network_in_plain_syntax(args, formula, code, hint, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["verify", *args, "--syntax", "plain", formula]) == code
    out = capsys.readouterr().out
    assert out.startswith("EQUIVALENT" if code == 0 else "NOT EQUIVALENT")
    if hint:
        assert hint in out


def test_a_layer_number_still_names_a_layer_where_the_chain_has_one():
    """The article's W_2 is layer 2's W (its matrix name), not a tensor called W_2."""
    assert read("W_2[k, j]", chain="article", syntax="plain") == read("w_{kj}", chain="article")
