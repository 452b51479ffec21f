"""Whole-array forms of image statements (codegen.latex.arrays): recognised from the derived index
expressions, printed only when a NumPy reference of the printed operation computes what the index
statement computes, and compiled and rendered where they are printed."""
import sympy as sp
import pytest

from codegen.latex.arrays import Array, Correlate, Crop, Pad, Rot180, Statement, agrees, check_points, whole_array
from codegen.latex.blocks import blocks_latex, notation, op_blocks
from codegen.latex.network import matrix_statements, network_blocks
from codegen.latex.notation import ArticleLatex
from derive.define import Iverson, Tensor, indices, sizes
from derive.define.registry import get
from derive.engine.derivation import derive
from derive.engine.network import chain_network, derive_network, layer_hyper

CNN = "conv2d,relu,max_pool2d,flatten,linear,softmax_cross_entropy".split(",")


@pytest.fixture(scope="module", params=[(), ("conv2d.padding=1", "conv2d.stride=2", "max_pool2d.kernel=3")],
                ids=["defaults", "padding-stride-kernel"])
def cnn(request):
    composed = chain_network(CNN, layer_hyper(list(request.param)))
    return composed, derive_network(composed)


def _forms(d):
    nt = notation(d.op)
    found = {node.name: whole_array(Statement(node.definition, tuple(node.index), tuple(node.shape)),
                                    check_points(d.op)) for node in d.op.intermediates if node.index}
    for lhs, expr, index, shape in matrix_statements(d, nt):
        found[lhs] = whole_array(Statement(expr, tuple(index), tuple(shape)), check_points(d.op))
    return found, ArticleLatex(nt)


def test_every_image_statement_of_the_cnn_has_its_whole_array_form(cnn):
    composed, d = cnn
    found, p = _forms(d)
    tex = {k: f.tex(p) for k, f in found.items() if f is not None}
    assert r"\star" in tex["y_1"] and "b^{(1)}" in tex["y_1"]  # the forward correlation, plus the bias
    assert tex["mask_3"].startswith(r"\mathrm{argmax}_{p, q}\left(\mathrm{win}")
    assert tex["y_3"].startswith(r"\sum_{p, q} \mathbf{mask^{(3)}} \odot \mathrm{win}")
    assert tex["y_4"].startswith(r"\mathrm{reshape}\left(\mathbf{y^{(3)}}")
    assert tex[r"\boldsymbol{\delta}^{y^{(3)}}"].startswith(r"\mathrm{reshape}")
    assert tex[r"\boldsymbol{\delta}^{\bar{x}^{(3)}}"].startswith(r"\mathrm{win}^{T}")  # the upsampling
    assert r"\mathrm{rot180}\left(W^{(1)}\right)" in tex[r"\boldsymbol{\delta}^{\bar{x}^{(1)}}"]
    assert tex[r"\frac{\partial E}{\partial W^{(1)}}"].startswith(r"\bar{X}^{(1)} \star")
    assert tex[r"\frac{\partial E}{\partial b^{(1)}}"] == r"\sum_{n, i, j} \boldsymbol{\delta}^{y^{(1)}}"
    padded = dict(composed.net.layers[0].hyper).get("padding", 0)
    assert (r"\mathrm{pad}_{1}" in tex["xp_1"]) == (padded == 1)
    assert (r"\mathrm{crop}_{1}" in tex[r"\frac{\partial E}{\partial X}"]) == (padded == 1)


def test_the_matrix_form_states_its_convention_once_and_leaves_no_image_statement_in_index_form(cnn):
    composed, d = cnn
    for lang, head in (("en", "Whole arrays:"), ("zh", "整体数组：")):
        text = "".join(b.text for b in network_blocks(composed, d, lang, "matrix"))
        assert text.count(head) == 1
        assert (r"\star_{s,d}" in text) and ("rot180" in text) and ("reshape" in text)
    tex = blocks_latex(network_blocks(composed, d, "en", "matrix"))
    matrix = tex[tex.index("The same, as matrices"):]
    assert r"\delta^{\bar{x}^{(1)}}_{nchw}" not in matrix and r"mask^{(3)}_{ncijpq} =" not in matrix


def test_a_wrong_recognition_is_caught_and_falls_back_to_the_index_form():
    """The reference computes what would be printed: a correlation without the kernel's rotation, a crop
    at the wrong offset, stride and dilation swapped all disagree with the derived statements."""
    composed = chain_network(CNN, layer_hyper(["conv2d.padding=1", "conv2d.stride=2"]))
    d = derive_network(composed)
    points = check_points(d.op)
    statements = {lhs: Statement(expr, tuple(index), tuple(shape))
                  for lhs, expr, index, shape in matrix_statements(d, notation(d.op))}
    back = statements[r"\boldsymbol{\delta}^{\bar{x}^{(1)}}"]
    right = whole_array(back, points)
    assert isinstance(right, Correlate) and isinstance(right.kernel, Rot180)
    unrotated = Correlate(right.image, right.kernel.arg, right.stride, right.dilation, right.kernel_axes,
                          right.image_axes, right.swap)
    assert all(agrees(right, back, pt) for pt in points) and not agrees(unrotated, back, points[0])
    crop = statements[r"\frac{\partial E}{\partial X}"]
    assert agrees(Crop(Array("dxp_1", 4), (1, 1)), crop, points[0])
    assert not agrees(Crop(Array("dxp_1", 4), (0, 1)), crop, points[0])
    weights = statements[r"\frac{\partial E}{\partial W^{(1)}}"]
    found = whole_array(weights, points)
    swapped = Correlate(found.image, found.kernel, found.dilation, found.stride, found.kernel_axes,
                        found.image_axes, found.swap)
    assert not agrees(swapped, weights, points[0])


def test_groups_that_pair_the_wrong_channels_are_caught():
    """The grouped correlation checked at groups = 2: the same form without its groups disagrees."""
    from dataclasses import replace
    op = get("conv2d")
    y = op.output
    st = Statement(y.definition, tuple(y.index), tuple(y.shape))
    points = check_points(op)
    found = whole_array(st, points)
    assert found is not None and found.arg.groups is not None
    grouped = [pt for pt in points if any(str(k) == "groups" and v == 2 for k, v in pt.items())]
    assert grouped and not agrees(replace(found, arg=replace(found.arg, groups=None)), st, grouped[0])


def test_a_statement_that_only_looks_like_a_correlation_is_refused():
    """The kernel read flipped in one direction only: no proposal matches, so there is no whole-array form."""
    N, C, H, W, O, K = sizes("N C H W O K")
    n, o, c, i, j, p, q = indices("n o c i j p q")
    x, w = Tensor("x", N, C, H, W), Tensor("w", O, C, K, K)
    shape = (N, O, H - K + 1, W - K + 1)
    flipped = sp.Sum(w[o, c, K - 1 - p, q] * x[n, c, i + p, j + q], (q, 0, K - 1), (p, 0, K - 1), (c, 0, C - 1))
    plain = sp.Sum(w[o, c, p, q] * x[n, c, i + p, j + q], (q, 0, K - 1), (p, 0, K - 1), (c, 0, C - 1))
    points = [{N: 2, C: 2, H: 4, W: 5, O: 3, K: 2}]
    assert whole_array(Statement(flipped, (n, o, i, j), shape), points) is None
    assert isinstance(whole_array(Statement(plain, (n, o, i, j), shape), points), Correlate)
    # a padding whose bracket guards another range than the shift's: not pad_P(X)
    h, v = indices("h v")
    odd = Iverson(sp.And(h - 1 >= 0, h - 1 <= H - 2)) * Iverson(sp.And(v - 1 >= 0, v - 1 <= W - 1)) * x[n, c, h - 1, v - 1]
    assert whole_array(Statement(odd, (n, c, h, v), (N, C, H + 2, W + 2)), points) is None
    good = Iverson(sp.And(h - 1 >= 0, h - 1 <= H - 1)) * Iverson(sp.And(v - 1 >= 0, v - 1 <= W - 1)) * x[n, c, h - 1, v - 1]
    assert isinstance(whole_array(Statement(good, (n, c, h, v), (N, C, H + 2, W + 2)), points), Pad)


@pytest.mark.parametrize("name, wanted", [
    ("conv2d", [r"\bar{X} = \mathrm{pad}_{(P_H, P_W)}\left(X\right)", r"\sum_{n, i, j} \boldsymbol{\delta}",
                r"Y = \bar{X} \star_{(s_H, s_W), (d_H, d_W)}^{G} W + \vec{b}",  # in groups: checked at groups = 2
                r"\frac{\partial E}{\partial W} = \bar{X} \star_{(d_H, d_W), (s_H, s_W)}^{G} \boldsymbol{\delta}",
                r"\star_{1, (d_H, d_W)}^{G} \mathrm{rot180}\left(W\right)"]),
    ("max_pool2d", [r"\mathrm{argmax}_{p, q}", r"\mathrm{win}^{T}_{(s_H, s_W), (d_H, d_W)}",
                    r"\mathrm{crop}_{(P_H, P_W)}\left(\boldsymbol{\delta}^{\bar{x}}\right)"]),
    ("avg_pool2d", [r"\frac{1}{K_H K_W} \mathrm{crop}_{(P_H, P_W)}\left(\mathrm{win}^{T}"]),
    ("flatten", [r"Y = \mathrm{reshape}\left(X, (N, C S)\right)", r"\mathrm{reshape}\left(G, (N, C, S)\right)"]),
])
def test_single_ops_print_their_whole_array_forms(name, wanted):
    d = derive(get(name))
    for lang in ("en", "zh"):
        tex = blocks_latex(op_blocks(d, lang, "matrix"))
        assert all(w in tex for w in wanted), tex
        assert tex.count("Whole arrays:" if lang == "en" else "整体数组：") == 1


def test_the_cnn_document_compiles_and_renders_in_katex(tmp_path):
    from codegen.document import document as doc
    from codegen.document.network import network_document
    from tests.test_doc_render import compile_tex, katex_failures, maths_in_markdown, need_katex
    composed = chain_network(CNN, layer_hyper(["conv2d.padding=1", "conv2d.stride=2"]))
    d = derive_network(composed)
    for lang in ("en", "zh"):
        document = network_document(composed, d, lang)
        assert r"\mathrm{rot180}" in document.latex()
        compile_tex(document, tmp_path, f"cnn-{lang}")
        need_katex()
        formulas = maths_in_markdown(doc.Shown(document)._repr_markdown_())
        assert katex_failures(formulas) == []
