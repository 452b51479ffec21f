"""The functions a formula may apply (erf, Φ, φ, softplus, sign, |x|, π), read by the verify grammar."""
import pytest
import sympy as sp

from derive.define.functions import NormalPdf, Phi, Sigmoid, Softplus
from derive.verifier.formula import BAR_CLOSE, BAR_OPEN, Call, FormulaError, mark_bars, parse
from derive.verifier.verification import read


def x(op="gelu"):
    return read("x_i", op=op)


@pytest.mark.parametrize("text, expected", [
    (r"\operatorname{erf}(x_i)", lambda: sp.erf(x())),
    (r"\mathrm{erf}\left(\frac{x_i}{\sqrt{2}}\right)", lambda: sp.erf(x() / sp.sqrt(2))),
    (r"\Phi(x_i)", lambda: Phi(x())),
    (r"\varphi(x_i)", lambda: NormalPdf(x())),
    (r"\phi(x_i)", lambda: NormalPdf(x())),
    (r"\operatorname{softplus}(x_i)", lambda: Softplus(x())),
    (r"\operatorname{sigmoid}(x_i)", lambda: Sigmoid(x())),
    (r"\operatorname{sign}(x_i)", lambda: sp.sign(x())),
    (r"\operatorname{sgn} x_i", lambda: sp.sign(x())),
    (r"|x_i|", lambda: sp.Abs(x())),
    (r"\left| x_i \right|", lambda: sp.Abs(x())),
    (r"\lvert x_i \rvert", lambda: sp.Abs(x())),
    (r"||x_i| - 1|", lambda: sp.Abs(sp.Abs(x()) - 1)),
    (r"|x_i| |x_i - 1|", lambda: sp.Abs(x()) * sp.Abs(x() - 1)),
    (r"\sqrt{2 \pi}", lambda: sp.sqrt(2 * sp.pi)),
    ("erf(x[i]) + Phi(x[i]) + phi(x[i]) + softplus(x[i]) + sign(x[i]) + abs(x[i])",
     lambda: sp.erf(x()) + Phi(x()) + NormalPdf(x()) + Softplus(x()) + sp.sign(x()) + sp.Abs(x())),
])
def test_functions_read_as_the_engine_names_them(text, expected):
    assert read(text, op="gelu") == expected()


def test_a_bare_bar_opens_or_closes_by_what_comes_before_it():
    """Columns stay the user's: each bar becomes one character."""
    assert mark_bars(r"\delta |y - t|") == rf"\delta {BAR_OPEN}y - t{BAR_CLOSE}"
    assert mark_bars("||x| - 1|") == f"{BAR_OPEN}{BAR_OPEN}x{BAR_CLOSE} - 1{BAR_CLOSE}"
    assert mark_bars(r"\left| x \right| + \|x\|") == r"\left| x \right| + \|x\|"
    for text in (r"|y - t| < \delta", r"\delta |x|"):
        assert len(mark_bars(text)) == len(text)


def test_a_condition_on_an_absolute_value_reads_in_cases():
    (part,) = parse(r"\begin{cases} y - t & |y - t| < \delta \\ \delta & \text{otherwise} \end{cases}").parts
    condition = part.rows[0][1]
    assert isinstance(condition.left, Call) and condition.left.func == "abs" and condition.op == "<"


@pytest.mark.parametrize("text, column", [("|x_i", 5), (r"|x_i| + |", 10)])
def test_an_unclosed_bar_is_refused_with_its_column(text, column):
    with pytest.raises(FormulaError, match="ends too early") as error:
        read(text, op="gelu", syntax="latex")
    assert error.value.column == column


def test_greek_names_stay_names_with_a_subscript():
    """\\Phi_c and \\varphi_j are names (of an op that has them), not the functions: only an argument calls."""
    assert parse(r"\Phi_c").parts[0].word == "Phi"
    assert parse(r"\varphi_j").parts[0].word == "phi"
