"""Every emitted equation against the SymPy expressions it claims to show."""
import itertools

import numpy as np
import pytest
import sympy as sp

from codegen.document.article import NodeNetwork, node_forward, part1, part2, weight_matrix, x, y
from codegen.render import op_latex
from codegen.latex.blocks import op_blocks
from derive.engine import check
from derive.engine.chain import chain
from derive.engine.backprop import expanded, upstream_of
from derive.engine.rewrite import inline


def _evaluate(expr, op, sizes, values, at):
    """A row of an equation at explicit sizes, indices and input values (intermediates inlined)."""
    expr = inline(expr)
    expr = check._unroll(expr, at, {s: sp.Integer(v) for s, v in sizes.items()})
    return complex(sp.N(check.at_numbers(expr, values))).real


def _values(op, d, sizes, rng):
    values = {}
    sizes_ = {s: sp.Integer(v) for s, v in sizes.items()}
    drawn = check.sample(op, sizes, rng, leading=())
    for inp in list(op.inputs):
        sample = np.reshape(drawn[inp.name], [int(sp.sympify(s).subs(sizes_)) for s in inp.shape])
        for idx in np.ndindex(*sample.shape):
            values[inp.tensor[idx]] = sp.Integer(int(sample[idx])) if inp.domain == "index" \
                else sp.Float(float(sample[idx]), 30)
    for y in () if op.is_loss else op.outputs:
        shape, g = [int(sp.sympify(s).subs(sizes_)) for s in y.shape], upstream_of(op, y)
        for idx in np.ndindex(*shape):
            values[g[idx]] = sp.Float(float(rng.standard_normal()), 30)
    values.update({h.symbol: sp.Float(h.default, 30) for h in op.hyper if h.kind == "float"})
    return values


def test_each_row_of_each_derivation_equals_the_gradient(op, derivation, rng):
    """The rows of a derivation (differentiated, deltas eliminated, folded, final) are all equal."""
    sizes = check.example_sizes(op, small=True)
    resolved = check.hyper_values(op, resolve=True)
    sizes = check.with_hyper(op, sizes, resolved)  # stride, padding shape the sums; group norm's K
    values = _values(op, derivation, sizes, rng)
    blocks = op_blocks(derivation, "en", "index")
    equations = [b.equation for b in blocks if b.equation and isinstance(b.equation.lhs, sp.Derivative)]
    equations = equations[:len(derivation.gradients)]  # then a convolution's full-convolution reading (test_conv)
    assert len(equations) == len(derivation.gradients)
    for eq, grad in zip(equations, derivation.gradients):
        shape = [int(sp.sympify(s).subs({k: sp.Integer(v) for k, v in sizes.items()})) for s in grad.input.shape]
        for idx in itertools.product(*(range(n) for n in shape)):
            at = dict(zip(grad.index, idx))
            target = grad.expr.xreplace({derivation.upstream: 1}) if op.is_loss else grad.expr
            expected = _evaluate(target, op, sizes, values, at)
            for row in eq.rhs:
                if row.has(sp.Derivative):
                    continue
                # an op shown only through its intermediates: the row in their gradients, written out
                row = row if derivation.written_out else expanded(row, derivation.adjoints)
                got = _evaluate(row, op, sizes, values, at)
                assert got == pytest.approx(expected, rel=1e-12, abs=1e-12), (op.name, str(row))


def test_printed_tex_is_the_printer_output_of_the_expressions(op, derivation):
    from codegen.latex.notation import ArticleLatex
    from codegen.latex.blocks import notation
    from codegen.latex.blocks import full_convolution_blocks
    printer = ArticleLatex(notation(op), "en")
    explained = {b.equation for b in full_convolution_blocks(derivation, "en") if b.equation}  # own notation
    from codegen.latex.breaking import fit
    for block in op_blocks(derivation, "en", "index"):
        if block.equation and len(block.equation.rhs) == 1 and block.equation not in explained:
            printed = f"{printer.doprint(block.equation.lhs)} = {printer.doprint(block.equation.rhs[0])}"
            assert block.equation.tex == fit(printed)  # as printed, broken only where it is too long


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_latex_fragment_has_balanced_environments(op, derivation, lang):
    tex = op_latex(derivation, lang)
    assert tex.count(r"\begin{equation}") == tex.count(r"\end{equation}") > 0
    assert tex.count(r"\left(") == tex.count(r"\right)")
    assert tex.count("{") == tex.count("}")
    assert "w_{k,j}" not in tex and r"\frac{d}{d" not in tex


def test_article_node_equations_compute_what_the_generated_code_computes(rng):
    """y_4 = f(w_{b_4} + w_{41} x_1 + ...) and the matrix form, evaluated against generated.linear."""
    from generated import linear, sigmoid
    c = chain(("linear", "sigmoid", "linear", "sigmoid", "half_sse"))
    net = NodeNetwork.of()
    rows = dict(node_forward(c, net))
    W1, b1 = rng.standard_normal((2, 3)), rng.standard_normal(2)
    W2, b2 = rng.standard_normal((2, 2)), rng.standard_normal(2)
    xs = rng.standard_normal(3)
    hidden, _ = sigmoid.forward(linear.forward(xs[None, :], W1, b1)[0])
    out, _ = sigmoid.forward(linear.forward(hidden, W2, b2)[0])
    f = sp.Function("f")
    sig = sp.Lambda(sp.Symbol("a"), 1 / (1 + sp.exp(-sp.Symbol("a"))))
    values = {x(n): xs[p] for p, n in enumerate(net.inputs)}
    for r, t in enumerate(net.hidden):
        values[sp.Symbol(f"w_{{b_{t}}}")] = b1[r]
        values.update({sp.Symbol(f"w_{{{t}{s}}}"): W1[r, col] for col, s in enumerate(net.inputs)})
    for r, t in enumerate(net.outputs):
        values[sp.Symbol(f"w_{{b_{t}}}")] = b2[r]
        values.update({sp.Symbol(f"w_{{{t}{s}}}"): W2[r, col] for col, s in enumerate(net.hidden)})
    for p, node in enumerate(net.hidden):
        value = float(rows[y(node)].replace(f, sig).xreplace(values))
        values[y(node)] = value
        assert value == pytest.approx(hidden[0, p], rel=1e-12)
    for p, node in enumerate(net.outputs):
        assert float(rows[y(node)].replace(f, sig).xreplace(values)) == pytest.approx(out[0, p], rel=1e-12)
    matrix = (weight_matrix(net.hidden, net.inputs) * sp.Matrix([1] + [x(n) for n in net.inputs])).applyfunc(f)
    for p, node in enumerate(net.hidden):
        assert sp.simplify(matrix[p] - rows[y(node)]) == 0


def test_article_equation_2_is_equation_1_with_the_bias_folded():
    w1, w2, x1, x2, b, wb = sp.symbols("w_1 w_2 x_1 x_2 b w_b")
    blocks = [bl.equation for bl in part1("en") if bl.equation]
    eq1, eq2, proof = blocks[0], blocks[1], blocks[2]
    f = sp.Function("f")
    assert eq2.rhs[0].xreplace({wb: b}) == eq1.rhs[0]
    assert sp.expand(proof.rhs[0] - (w1 * x1 + w2 * x2 + b)) == 0
    assert eq1.rhs[0] == f(w1 * x1 + w2 * x2 + b)


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_article_uses_the_article_words(lang):
    tex = "\n".join(b.equation.tex if b.equation else b.text for b in part1(lang) + part2(lang))
    words = ("隐藏层", "输出层", "误差项", "样本") if lang == "zh" else ("hidden layer", "output layer", "error term")
    for word in words:
        assert word in tex
    assert r"w_{b_4}" in tex and r"\vec{w_4}^T\cdot" in tex
    assert r"\left(y_{k} - t_{k}\right) y_{k} \left(1 - y_{k}\right)" in tex
    assert r"y_{j} \left(1 - y_{j}\right) \sum_{k} \delta_{k} w_{kj}" in tex
    assert r"\delta_{j} x_{i}" in tex and r"\delta_{k} y_{j}" in tex
