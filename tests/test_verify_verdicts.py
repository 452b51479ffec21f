"""derive verify never gives a false verdict (issue 16): values that overflow a float, differences of 1e-16,
values that cannot be computed; hints for swapped letters and hyper-parameter values; one refusal for a
free index the quantity lacks; refusals before anything is derived."""
import subprocess
import sys
from pathlib import Path

import pytest

from derive.verifier.formula import FormulaError
from derive.verifier.verification import verify

ROOT = Path(__file__).resolve().parent.parent
DELTA_K = r"(y_k - t_k) y_k (1 - y_k)"
HUGE = r"(10^{12})^{16} (10^{12})^{16}"  # 10^384: log(e^A + y) - A needs more than 400 digits
FULL_CONVOLUTION = (r"\sum_g [0 \le c - g C_g \le C_g - 1] \sum_{p} \sum_{q} \sum_{o} [0 \le o - g O_g \le O_g - 1] "
                    r"w_{o,c - g C_g,K_H - p - 1,K_W - q - 1} \delta_{n,o,h + p + P_H + 1 - K_H,"
                    r"w + q + P_W + 1 - K_W} [0 \le h + p + P_H + 1 - K_H \le H + 2 P_H - K_H] "
                    r"[0 \le w + q + P_W + 1 - K_W \le W + 2 P_W - K_W]")


def where(source):
    return {"chain": source} if source == "article" else {"op": source}


# (op or chain, --wrt, formula, a word a hint must contain or None): each NOT EQUIVALENT, exit code 1
WRONG = [
    ("article", "delta_k", r"\exp(710)", None),  # e^710 overflows float64: inf once compared equal
    ("article", "delta_k", r"\exp(709)", None),
    ("article", "delta_k", DELTA_K + r" + \exp(10^{10})", "a term too many"),
    ("article", "delta_k", r"-\exp(10^{10})", None),
    ("sigmoid", "x", r"\exp(1000)", None),
    ("linear", "W", r"\exp(1000)", None),
    ("batch_norm", "x", r"\exp(1000)", None),
    ("article", "delta_k", DELTA_K + r" + 10^{-16}", "a term too many"),
    ("article", "delta_k", DELTA_K + r"(1 + 10^{-12})", "your formula is 1.000000000001 times"),
]


@pytest.mark.parametrize("source, wrt, text, hint", WRONG, ids=[t for _, _, t, _ in WRONG])
def test_a_value_that_overflows_or_differs_by_1e_16_is_not_equivalent(source, wrt, text, hint):
    verdict = verify(text, wrt=wrt, **where(source))
    assert not verdict.equivalent and verdict.decided and verdict.exit_code == 1, verdict.report()
    assert verdict.counterexample is not None
    lines = verdict.counterexample.lines()
    derived, yours = (line.split(":", 1)[1].strip() for line in lines[-2:])
    assert derived != yours, "the counterexample prints enough digits to tell the two apart"
    if hint:
        assert any(hint in h for h in verdict.hints), verdict.report()


def test_a_formula_whose_values_cannot_be_computed_is_undecided():
    verdict = verify(DELTA_K + rf" + \log(\exp({HUGE}) + y_k) - {HUGE}", chain="article", wrt="delta_k")
    assert not verdict.equivalent and not verdict.decided and verdict.exit_code == 3, verdict.report()
    assert verdict.report().startswith("UNDECIDED") and "cannot decide" in verdict.report()
    assert verdict.counterexample is None


def test_values_lost_to_rounding_are_no_counterexample():
    """e^710 (1 + y) - e^710 y - e^710 is 0, but rounding at 50 digits leaves 1e258 of it: the mismatch
    vanishes at 100 digits, and the exact difference is 0."""
    text = r"\exp(710)(1 + y_k) - \exp(710) y_k - \exp(710) + " + DELTA_K
    verdict = verify(text, chain="article", wrt="delta_k")
    assert verdict.equivalent and verdict.proof.startswith("equal for all sizes"), verdict.report()


def test_cli_exit_code_3_and_help():
    result = subprocess.run([sys.executable, "-m", "derive", "verify", "article", "--wrt", "delta_k",
                             DELTA_K + rf" + \log(\exp({HUGE}) + y_k) - {HUGE}"], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 3 and result.stdout.startswith("UNDECIDED"), result.stdout + result.stderr
    usage = subprocess.run([sys.executable, "-m", "derive", "verify", "--help"], cwd=ROOT, capture_output=True,
                           text=True)
    assert "3 UNDECIDED" in " ".join(usage.stdout.split())


# -- hints -------------------------------------------------------------------------------

def test_two_letters_swapped_are_named():
    verdict = verify(r"\delta_j y_k", chain="article", wrt="w_kj")
    assert any("letters j and k are swapped" in h for h in verdict.hints), verdict.report()
    verdict = verify(r"\sum_n \sum_i \sum_j \delta_{noij} \sum_g [0 \le o - g O_g \le O_g - 1] "
                     r"\bar{x}_{n,g C_g + c,i s_H + q d_H,j s_W + p d_W}", op="conv2d", wrt="W")
    assert any("letters p and q are swapped" in h for h in verdict.hints), verdict.report()


def test_a_formula_right_at_stride_1_and_dilation_1_only_is_told_so():
    verdict = verify(FULL_CONVOLUTION, op="conv2d", wrt="x")
    assert not verdict.equivalent and 2 in (verdict.counterexample.sizes["s_H"], verdict.counterexample.sizes["s_W"])
    assert any(h.startswith("right only at d_H = 1, d_W = 1, s_H = 1, s_W = 1") for h in verdict.hints), verdict.report()


def test_the_out_of_range_hint_quotes_the_counterexamples_sizes():
    verdict = verify(r"\sum_{o} \sum_{i} \sum_{j} \delta_{noij} w_{o,c,h + P_H - i s_H,P_W + w - j s_W}", op="conv2d",
                     wrt="x")
    hint = next(h for h in verdict.hints if "outside its range" in h)
    for name, value in verdict.counterexample.sizes.items():
        assert f"{name}={value:g}" in hint, (hint, verdict.counterexample.sizes)


# -- refusals ---------------------------------------------------------------------------

@pytest.mark.parametrize("text", [r"w_{kq}", r"\delta_q", r"y_k w_{kq}", r"\sum_k \delta_q w_{kj}"])
def test_a_free_index_the_quantity_lacks_is_refused_the_same_way(text):
    with pytest.raises(FormulaError, match=r"^formula: free index q: \\delta_\{k\} has index k"):
        verify(text, chain="article", wrt="delta_k")


def test_a_free_index_of_the_notation_is_a_mistake_with_a_hint_not_a_refusal():
    verdict = verify(r"\delta_{nk} x_{nj}", op="linear", wrt="W")
    assert verdict.exit_code == 1 and any("missing sum over n" in h for h in verdict.hints)


@pytest.mark.parametrize("text, words", [
    (r"y_{k,j,i}", ["3 indices", "y_{j}, y_{k} for one sample", "y_{nj}, y_{nk} with the batch index n"]),
    (r"y_{kk}", ["y_{j}, y_{k} for one sample", "names k twice"]),
])
def test_an_ambiguous_name_lists_its_forms(text, words):
    with pytest.raises(FormulaError) as error:
        verify(text, chain="article", wrt="delta_k")
    for word in words:
        assert word in str(error.value)
    assert "()" not in str(error.value)


def run(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "derive", "verify", *args], cwd=ROOT, capture_output=True,
                          text=True, input=stdin)


def test_standard_input_is_measured_to_its_end():
    result = run("article", "--wrt", "delta_k", "-", stdin="x" * 1_000_000)
    assert result.returncode == 2 and "too long (1000000 characters" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1


BAD = [r"\frac{1}{2", "y_k +", "q_k", r"\delta_q", "w_{kq}", "y_{k,j,i}", "y_{kk}", r"\sigma^{2}_{k}", "x" * 2001]


def test_bad_input_is_refused_before_anything_is_derived():
    """In a fresh process: each refusal raises, and no op was derived, nor the checking imported."""
    code = ("import sys\n"
            "from derive.engine.derivation import derive\n"
            "from derive.verifier.reading import read_formula\n"
            f"for text in {BAD!r}:\n"
            "    for source in ({'chain': 'article'}, {'op': 'batch_norm'}):\n"
            "        try:\n"
            "            read_formula(text, wrt='delta_k' if 'chain' in source else 'x', **source)\n"
            "        except ValueError:\n"
            "            continue\n"
            "        raise SystemExit(f'not refused: {text!r} {source}')\n"
            "print(derive.cache_info().currsize, 'derive.verifier.verification' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == ["0", "False"]
