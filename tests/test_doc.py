"""Documents: structure, numbering and citations; each equation against the SymPy it came from; pictures.

Compilation with TeX and rendering with KaTeX are in test_doc_render.py.
"""
import itertools
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from codegen.document import document as doc
from codegen.document.article import ARTICLE
from codegen.latex.chain import chain_printer
from codegen.latex.blocks import display, op_blocks
from codegen.latex.breaking import unbroken
from derive.engine.chain import chain, sample_form
from derive.engine.check import expand_sums
from derive.engine.derivation import derive

ROOT = Path(__file__).resolve().parent.parent
CHAIN = ("linear", "tanh", "linear", "softmax_cross_entropy")


@pytest.fixture(scope="module", params=["en", "zh"])
def article(request):
    return doc.article_document(request.param)


def _documents():
    yield "article-en", doc.article_document("en")
    yield "chain-zh", doc.chain_document(CHAIN, "zh")
    yield "ops-en", doc.ops_document(["linear", "softmax_cross_entropy"], "en")


DOCUMENTS = dict(_documents())


def _paragraph_refs(document):
    """(citing position, cited number) for every Ref, the position being the next equation's number."""
    out = []
    number = 1
    for item in document.walk():
        if isinstance(item, doc.Numbered):
            number = item.number + 1
        elif isinstance(item, doc.Para):
            numbers = {n.label: n.number for n in document.equations}
            out += [(number, numbers[p.label]) for p in item.parts if isinstance(p, doc.Ref)]
    return out


@pytest.mark.parametrize("name", DOCUMENTS)
def test_equations_are_numbered_in_order_and_cite_only_earlier_ones(name):
    document = DOCUMENTS[name]
    numbers = [n.number for n in document.equations]
    assert numbers == list(range(1, len(numbers) + 1))
    assert len({n.label for n in document.equations}) == len(numbers)
    refs = _paragraph_refs(document)
    assert refs, "a derivation cites its earlier steps"
    assert all(cited < citing for citing, cited in refs)


@pytest.mark.parametrize("name", DOCUMENTS)
def test_markdown_numbers_contents_and_anchors_agree(name):
    document = DOCUMENTS[name]
    md = document.markdown("post")
    assert md.startswith("---\nlayout: post\ntitle: ")
    tags = [int(t) for t in re.findall(r"\\tag\{(\d+)\}", md)]
    assert tags == [n.number for n in document.equations]
    bodies = re.findall(r"\\begin\{equation\}\n(.*?)\n\\tag\{\d+\}\n\\end\{equation\}", md, re.S)
    assert bodies == [n.equation.tex for n in document.equations]
    contents = "目录" if document.lang == "zh" else "Contents"
    toc = md.split(f"\n{contents}\n", 1)[1].split("<a id=", 1)[0]
    links = re.findall(r"\]\(#([^)]+)\)", toc)
    anchors = re.findall(r'<a id="([^"]+)"></a>', md)
    assert links == anchors and len(set(anchors)) == len(anchors)
    for ref in re.findall(r"\((\d+)\)", re.sub(r"\$[^$]*\$", "", md.split("<a id=", 1)[1])):
        assert 1 <= int(ref) <= len(document.equations)


@pytest.mark.parametrize("name", DOCUMENTS)
def test_latex_labels_every_equation_and_cites_with_eqref(name):
    document = DOCUMENTS[name]
    tex = document.latex()
    labels = [int(n) for n in re.findall(r"\\label\{eq:(\d+)\}", tex)]
    assert labels == [n.number for n in document.equations]
    bodies = re.findall(r"\\begin\{equation\}\n\\label\{eq:\d+\}\n(.*?)\n\\end\{equation\}", tex, re.S)
    tall = [re.sub(r" \\notag \\\\\*?\n", lambda m: " \\\\\n", body) for body in
            re.findall(r"\\begin\{align\}\n(.*?) \\label\{eq:\d+\}\n\\end\{align\}", tex, re.S)]
    shown = [n.equation.tex for n in document.equations]
    assert sorted(bodies + ["\\begin{aligned}\n" + t + "\n\\end{aligned}" for t in tall]) == sorted(shown)
    cited = {int(n) for n in re.findall(r"\\eqref\{eq:(\d+)\}", tex)}
    assert cited and cited <= set(labels)
    assert tex.count(r"\begin{") == tex.count(r"\end{")
    assert ("ctexart" in tex) == (document.lang == "zh")


def test_weight_gradient_cites_the_error_term_and_the_forward_equation():
    """The chain-rule step dE/dw_kj = dE/dnet_k dnet_k/dw_kj cites delta_k's equation and net_k's."""
    document = doc.article_document("en")
    by_label = {n.label: n for n in document.equations}
    items = list(document.walk())
    position = items.index(by_label["grad:W_2"])
    lead = items[position - 1]
    cited = {p.label for p in lead.parts if isinstance(p, doc.Ref)}
    assert cited == {"delta:net_2", "net_2"}
    delta = by_label["delta:net_2"].equation
    assert delta.tex.startswith(r"\begin{aligned}" + "\n" + r"\delta_{k} = \frac{\partial E}{\partial net_{k}}")
    assert r"\left(y_{k} - t_{k}\right) y_{k} \left(1 - y_{k}\right)" in delta.tex
    hidden = items[items.index(by_label["delta:net_1"]) - 1]
    assert {p.label for p in hidden.parts if isinstance(p, doc.Ref)} == {"delta:net_2", "net_2", "y_1"}
    full = items[items.index(by_label["full:W_1"]) - 1]
    assert {p.label for p in full.parts if isinstance(p, doc.Ref)} == {"grad:W_1", "delta:net_1", "delta:net_2"}


def test_article_part1_keeps_the_articles_numbers_1_to_8(article):
    part1 = article.sections[0]
    numbered = [i for s in part1.sections for i in s.items if isinstance(i, doc.Numbered)]
    assert [n.number for n in numbered] == list(range(1, 9))
    assert numbered[2].equation.tex.startswith("e=E(")
    assert numbered[7].equation.tex.startswith(r"\overrightarrow{y_{\text{")


def test_article_words_in_maths_are_text():
    """CJK inside maths only renders as \\text{...} (xelatex's maths fonts and KaTeX's strict mode)."""
    for document in (doc.article_document("zh"), doc.chain_document(CHAIN, "zh"), doc.ops_document(["relu"], "zh")):
        for n in document.equations:
            outside_text = re.sub(r"\\text\{[^{}]*\}", "", n.equation.tex)
            assert not re.search(r"[\u2e80-\u9fff]", outside_text), n.equation.tex


# -- each equation against the SymPy it came from -------------------------------------------

def test_chain_equations_print_their_expressions():
    """Every row of every chain equation is the printer's text of the SymPy row it carries
    (a chain-rule product row, factor by factor in chain order)."""
    c = chain(CHAIN)
    document = doc.chain_document(CHAIN, "en")
    printer = chain_printer(c, "en")
    checked = 0
    for n in document.equations:
        for row in n.equation.rhs:
            if row.has(sp.Derivative):
                continue
            tex = unbroken(n.equation.tex)
            whole = printer.doprint(row) in tex
            factors = isinstance(row, sp.Mul) and all(printer.doprint(f) in tex for f in row.args)
            assert whole or factors, (n.label, str(row))
            checked += 1
    assert checked >= len(document.equations)


def test_op_documents_show_the_engines_steps(op):
    """Every op in the registry gets its document; its gradients are the engine's, row for row."""
    d = derive(op)
    document = doc.ops_document([op.name], "en")
    shown = [n.equation for n in document.equations if n.label.startswith(f"{op.name}:d")]
    expected = [b.equation for b in op_blocks(d, "en", "index") if b.equation
                and isinstance(b.equation.lhs, sp.Derivative)][:len(d.gradients)]
    assert shown == (expected if d.written_out else [])  # else only through the intermediates (below)
    for eq, grad in zip(shown, d.gradients):
        assert eq.rhs[-1] == display(d, grad.expr)
    through = [n.equation.rhs[-1] for n in document.equations if n.equation.rhs]
    for grad in () if d.written_out else d.backprop:
        assert display(d, grad.expr) in through
    titles = [s.title for s in document.sections[0].sections]
    assert titles[:2] == ["Forward pass", "Backward pass"]
    matrix = [b for b in op_blocks(d, "en", "matrix") if b.equation]
    assert ("Matrix form" in titles) == bool(matrix), "a matrix section exactly when there is a matrix form"


def _unroll(c, sizes, keep=None):
    """The article's network for one sample, each forward element written out in the inputs;
    the elements of the tensor labelled ``keep`` stay symbols (to differentiate by them)."""
    values = {}
    for lhs, rhs in c.forward:
        lhs, rhs = sample_form(lhs), sample_form(rhs)
        if not isinstance(lhs, sp.Indexed):
            values[lhs] = expand_sums(rhs.xreplace(sizes)).xreplace(values)
            continue
        shape = [int(s.xreplace(sizes)) for s in lhs.base.shape]
        for idx in itertools.product(*(range(m) for m in shape)):
            if str(lhs.base.label) != keep:
                at = rhs.xreplace(dict(zip(lhs.indices, idx))).xreplace(sizes)
                values[lhs.base[idx]] = expand_sums(at).xreplace(values)
    return values


def test_article_derivation_rows_equal_the_derivative_of_the_unrolled_network():
    """Each row of each error-term and gradient equation (one sample, sizes 2-2-2), with the document's
    own error-term equations substituted, equals SymPy's derivative of the unrolled E at a random point."""
    c = chain(ARTICLE)
    document = doc.article_document("en")
    rng = np.random.default_rng(0)
    sizes = {s: sp.Integer(2) for layer in c.layers for s in layer.sizes.values() if isinstance(s, sp.Symbol)}
    values = _unroll(c, sizes)
    objective = values[sp.Symbol("E")]
    point = {e: sp.Rational(int(rng.integers(1, 99)), 100) for e in objective.atoms(sp.Indexed)}
    deltas = {}  # error-term element -> its number, from the document's own equations

    def number(expr):
        expr = expand_sums(expr.xreplace(sizes))
        expr = expr.xreplace(deltas).xreplace(values).xreplace(point)
        return sp.N(expr, 30)

    checked = 0
    for n in document.equations:
        kind, _, name = n.label.partition(":")
        if kind not in ("delta", "grad", "full"):
            continue
        lhs = n.equation.lhs
        element = lhs.variables[0] if isinstance(lhs, sp.Derivative) else lhs
        kept = _unroll(c, sizes, keep=name) if kind == "delta" else None
        for idx in itertools.product(range(2), repeat=len(element.indices)):
            at = dict(zip(element.indices, idx))
            if kind == "delta":  # dE/dnet, with net kept a symbol in everything after it
                net = next(e for e in kept[sp.Symbol("E")].atoms(sp.Indexed)
                           if str(e.base.label) == name and e.indices == tuple(idx))
                expected = sp.N(sp.diff(kept[sp.Symbol("E")], net).xreplace({net: values[net]})
                                .xreplace(values).xreplace(point), 30)
            else:
                expected = sp.N(sp.diff(objective, element.xreplace(at)).xreplace(point), 30)
            for row in n.equation.rhs:
                if not row.has(sp.Derivative):
                    got = number(row.xreplace(at))
                    assert abs(got - expected) < 1e-25, (n.label, idx, str(row), got, expected)
                    checked += 1
            if kind == "delta":
                deltas[element.xreplace(at)] = expected
    assert len(deltas) == 4 and checked >= 25


def test_article_document_checks_the_articles_claims():
    """Part 1's claims are checked when the document is made; a wrong gradient is caught."""
    import dataclasses

    from codegen.document.article import verify
    c = chain(ARTICLE)
    assert verify(c) == []
    i = next(i for i, q in enumerate(c.backward) if q.kind == "gradient" and q.layer is c.layers[2])
    c.backward[i] = dataclasses.replace(c.backward[i], expanded=2 * c.backward[i].expanded)
    assert any(p.startswith("(5) output") for p in verify(c))


# -- pictures ---------------------------------------------------------------------------------

def test_network_picture_has_the_articles_node_numbers_and_weight_labels():
    document = doc.article_document("zh")
    network = next(f for f in document.figures if f.name == "network")
    svg = network.picture.svg()
    root = ET.fromstring(svg)
    texts = ["".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert [t for t in texts if t.isdigit()] == [str(n) for n in range(1, 8)]
    weights = {f"w{t}{s}" for t in (4, 5) for s in (1, 2, 3)} | {f"w{t}{s}" for t in (6, 7) for s in (4, 5)}
    weights |= {f"wb{t}" for t in (4, 5, 6, 7)}  # the bias node's edges: w_{b_4} ...
    assert weights == {t for t in texts if t.startswith("w")}
    assert texts.count("+1") == 2, "a bias node before the hidden and the output layer"
    assert {"输入层", "隐藏层", "输出层"} <= set(texts)
    tikz = network.picture.tikz()
    for label in ("w_{41}", "w_{53}", "w_{64}", "w_{75}"):
        assert f"${label}$" in tikz
    assert len(root.findall("{http://www.w3.org/2000/svg}line")) == 3 * 2 + 2 * 2 + 2 + 2
    assert "$w_{b_{4}}$" in tikz
    assert svg == doc.article_document("zh").figures[0].picture.svg()


def test_network_picture_follows_the_chain_and_the_sizes():
    c = chain(("linear", "relu", "linear", "relu", "linear", "mse"))
    figure = doc.network_figure(c, "en", (2, 3, 3, 1))
    texts = ["".join(t.itertext()) for t in ET.fromstring(figure.picture.svg()).iter("{http://www.w3.org/2000/svg}text")]
    assert [t for t in texts if t.isdigit()] == [str(n) for n in range(1, 10)]
    assert "hidden layer 1" in texts and "hidden layer 2" in texts and "w96" in texts
    with pytest.raises(ValueError, match="sizes"):
        doc.network_figure(c, "en", (2, 3))
    with pytest.raises(ValueError, match="sizes"):
        doc.network_figure(c, "en", (2, 30, 3, 1))


def test_shapes_picture_shows_each_tensor_and_parameter_shape():
    c = chain(CHAIN)
    figure = doc.shapes_figure(c, "en")
    text = " ".join("".join(t.itertext()) for t in ET.fromstring(figure.picture.svg()).iter(
        "{http://www.w3.org/2000/svg}text"))
    for piece in ("N × I", "W1: J × I", "b1: J", "net1", "N × J", "W2: K × J", "t: N × K", "scalar",
                  "softmax_cross_entropy"):
        assert piece in text
    assert r"W_{1}:\ J \times I" in figure.picture.tikz()


# -- notebooks ---------------------------------------------------------------------------------

def test_show_renders_a_derivation_as_markdown_and_latex():
    import derive
    shown = derive.show("linear")
    md = shown._repr_markdown_()
    document = shown.document
    assert not md.startswith("---") and md.startswith("# ")
    for n in document.equations:
        assert n.equation.tex in md and rf"\tag{{{n.number}}}" in md
    latex = shown._repr_latex_()
    assert latex.count(r"\begin{equation}") == len(document.equations)
    assert r"\frac{\partial E}{\partial w_{kj}}" in latex


def test_show_a_chain_embeds_its_pictures():
    import derive
    shown = derive.show(*CHAIN, chain=True, lang="zh")
    md = shown._repr_markdown_()
    assert md.count("data:image/svg+xml;base64,") == 2
    assert r"\delta_{j}" in shown._repr_latex_()
    assert "equations" in repr(shown)
    with pytest.raises(ValueError, match="names"):
        derive.show()


# -- the command line -------------------------------------------------------------------------

def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "derive", *args], cwd=cwd, capture_output=True, text=True)


def test_doc_writes_markdown_with_pictures_beside_it(tmp_path):
    out = tmp_path / "post.md"
    result = run("doc", "--chain", ",".join(CHAIN), "--lang", "zh", "--sizes", "4,3,2", "-o", str(out))
    assert result.returncode == 0, result.stderr
    md = out.read_text(encoding="utf-8")
    assert "](post-network.svg)" in md and "](post-shapes.svg)" in md
    svg = (tmp_path / "post-network.svg").read_text(encoding="utf-8")
    assert ">9<" in svg and "w" in svg
    ET.fromstring((tmp_path / "post-shapes.svg").read_text(encoding="utf-8"))


def test_doc_writes_latex_by_suffix_and_prints_without_output(tmp_path):
    result = run("doc", "sigmoid", "half_sse", "-o", str(tmp_path / "notes.tex"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "notes.tex").read_text().startswith("% Generated by `derive doc`")
    result = run("doc", "relu", "--format", "md")
    assert result.returncode == 0 and "\\tag{1}" in result.stdout


def test_doc_article_writes_without_tex(tmp_path):
    """The article's document needs no TeX on the machine (its time is the benchmark's floor, not a test's)."""
    result = run("doc", "article", "--lang", "zh", "-o", str(tmp_path / "a.md"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "a.md").stat().st_size > 0


@pytest.mark.parametrize("args, message", [
    (["doc"], "give ops"),
    (["doc", "linear", "--chain", "linear,half_sse"], "not both"),
    (["doc", "article", "linear"], "stands alone"),
    (["doc", "nope"], "unknown op 'nope'"),
    (["doc", "--chain", "linear,sigmoid,half_sse", "--sizes", "3,x"], "--sizes"),
    (["doc", "--chain", "linear,sigmoid,half_sse", "--sizes", "3,2,2"], "sizes: this network has 2"),
    (["doc", "linear", "--sizes", "3,2"], "--sizes is for --chain"),
    (["doc", "linear", "-o", "/nonexistent/dir/x.md"], "cannot write"),
    (["doc", "linear", "--lang", "fr"], "invalid choice"),
])
def test_doc_bad_usage_is_one_line_and_exit_2(args, message):
    result = run(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert "Traceback" not in result.stderr


# -- Chinese throughout, one convention per document ---------------------------------------------

ENGLISH_SENTENCE = re.compile(r"[A-Za-z]{2,}(?:[ ,;:'-]+[A-Za-z]{2,}){2,}")  # three words or more


def prose_of(md: str) -> str:
    """A Markdown document less its maths, code, links' addresses, HTML and anchors: what a reader reads as text."""
    md = re.sub(r"<div class=\"math\">.*?</div>", "", md, flags=re.S)
    md = re.sub(r"\$\$.*?\$\$", "", md, flags=re.S)
    md = re.sub(r"(?<!\\)\$(?:\\.|[^$\\])*\$", "", md)
    md = re.sub(r"`[^`]*`", "", md)
    md = re.sub(r"\]\([^)]*\)", "]", md)
    md = re.sub(r"<[^>]+>|^---$.*?^---$", "", md, flags=re.S | re.M)
    return md


@pytest.mark.parametrize("make", [
    lambda: doc.ops_document([op for op in __import__("derive.define.registry", fromlist=["registry"]).registry()], "zh"),
    lambda: doc.chain_document(CHAIN, "zh", example=True),
    lambda: doc.chain_document(("linear", "batch_norm", "relu", "linear", "softmax_cross_entropy"), "zh"),
    lambda: doc.article_document("zh", example=True),
], ids=["every-op", "chain", "batch-norm-chain", "article"])
def test_chinese_documents_have_no_english_sentence(make):
    document = make()
    text = prose_of(document.markdown("post"))
    assert ENGLISH_SENTENCE.findall(text) == []
    svg = " ".join("".join(t.itertext()) for f in document.figures
                   for t in ET.fromstring(f.picture.svg()).iter("{http://www.w3.org/2000/svg}text"))
    assert ENGLISH_SENTENCE.findall(svg) == [], "figure labels in Chinese too"
    assert "偏置" not in text and "以上标形式" not in text


def test_every_op_has_a_chinese_description(op):
    """``doc_zh``: the name, a colon, a sentence, in Chinese; documents in Chinese use it."""
    name, _, sentence = op.doc_zh.partition("：")
    assert name and sentence and re.search(r"[\u4e00-\u9fff]", name + sentence), op.name
    section = doc.ops_document([op.name], "zh").sections[0]
    assert section.title == name
    assert doc.ops_document([op.name], "en").sections[0].title == op.name


def test_an_ops_document_names_the_upstream_gradient_once():
    """conv2d calls it delta on its own, relu g: together, one symbol for both."""
    tex = doc.ops_document(["conv2d", "relu", "max_pool2d"], "en").latex()
    assert r"\delta_{" not in tex and "g_{noij}" in tex
    alone = doc.ops_document(["conv2d"], "en").latex()
    assert r"\delta_{noij}" in alone and "g_{" not in alone
    assert r"Kronecker" not in tex and r"$[a = b]$ is 1 where" in tex


def test_index_letters_do_not_collide_and_keep_one_order():
    """conv2d's kernel is w, so its column index prints as another letter; each axis's terms in one order."""
    tex = doc.ops_document(["conv2d"], "en").latex()
    assert "x_{nchw}" not in tex and "x_{nchv}" in tex
    assert r"w_{o,c - C_{g} g,\frac{h + P_H - i s_H}{d_H},\frac{v + P_W - j s_W}{d_W}}" in unbroken(tex)  # group g's
    assert "P_W + v" not in tex and "P_H + h" not in tex


def test_english_has_no_words_run_together_and_no_fragments():
    tex = doc.article_document("en").latex()
    assert "layernew" not in tex and "layerold" not in tex
    chain_doc = doc.chain_document(CHAIN, "en").markdown("post")
    assert "From the input layer, each layer's output in turn" not in chain_doc


def test_softmax_cross_entropy_in_a_chain_shows_its_steps():
    document = doc.chain_document(CHAIN, "en")
    by_label = {n.label: n for n in document.equations}
    objective = by_label["E"].equation.tex
    assert objective.startswith("\\begin{aligned}\nE &= - \\sum_{k} t_{k} \\log y_{k}")
    delta = by_label["delta:net_2"].equation
    assert len(delta.rhs) >= 4 and delta.rhs[-1] == sp.Symbol("y") * 0 + delta.rhs[-1]
    assert "[k = k']" in delta.tex and r"y_{k} \sum_{k'} t_{k'} - t_{k}" in delta.tex
    assert delta.tex.endswith(r"&= y_{k} - t_{k}" + "\n\\end{aligned}")
    md = document.markdown("post")
    assert r"the targets are probabilities, $\sum\_{k} t\_{k} = 1$" in md
    assert r"$E = - \sum\_{k} t\_{k} \log y\_{k}$" in md


def test_the_article_states_one_bias_convention():
    """Folded as w_{b_4} in the node equations, linked to b_j and b_k once before the derivation uses them."""
    document = doc.article_document("en")
    md = document.markdown("post")
    link = md.index(r"so that $net\_k=\sum\_j w\_{kj}y\_j+b\_k$")
    assert md.index("w\\_{b\\_4}") < link < md.index("\\tag{15}")
    node6 = next(n for n in document.equations if n.equation.lhs == sp.Symbol("y_6")).equation.tex
    assert r"\begin{bmatrix}1\\ \overrightarrow{y_{\text{hidden layer}}}\end{bmatrix}" in node6


def test_lead_ins_are_one_paragraph_with_their_equation_and_figures_are_cited():
    tex = doc.article_document("zh").latex()
    stranded = re.findall(r"([^\n]*：)\n\n\\begin\{equation", tex)
    assert stranded == [], "a blank line would let a page break strand a lead-in"
    assert re.search(r"：\n\\begin\{equation\}", tex)
    labels = re.findall(r"\\label\{fig:(\w+)\}", tex)
    assert labels and all(tex.count(rf"\ref{{fig:{name}}}") >= 1 for name in labels)
    assert "[!htb]" in tex and "[htbp]" not in tex


# -- the worked example -------------------------------------------------------------------------

@pytest.mark.parametrize("names", [ARTICLE, CHAIN, ("linear", "batch_norm", "relu", "linear", "softmax_cross_entropy")],
                         ids=lambda names: "-".join(names))
def test_worked_example_is_the_generated_code_checked_by_the_equations(names):
    from codegen.document.example import one_step
    c = chain(names)
    step = one_step(c, (3, 2, 2))
    assert step.loss_after < step.loss
    assert step.checked >= len(step.forward) + sum(v.size for v in step.grads.values())
    section = doc.chain_document(names, "en", example=True).sections[-1]
    tables = [i for i in section.items if isinstance(i, doc.Table)]
    assert [t.caption for t in tables] == ["Inputs and targets", "Parameters before the step", "The forward pass",
                                           "The error terms", "The gradients", "After one step"]
    assert tables[-1].rows[-1][0] == "$E$ after the step"


def test_worked_example_refuses_numbers_its_equations_do_not_give():
    import dataclasses

    from codegen.document.example import one_step
    c = chain(ARTICLE)
    i = next(i for i, q in enumerate(c.backward) if q.kind == "gradient")
    c.backward[i] = dataclasses.replace(c.backward[i], expr=1.01 * c.backward[i].expr)
    with pytest.raises(ValueError, match="example: dE/d"):
        one_step(c, (3, 2, 2))


def test_doc_example_on_the_command_line(tmp_path):
    result = run("doc", "article", "--example", "--lang", "zh", "-o", str(tmp_path / "a.md"))
    assert result.returncode == 0, result.stderr
    md = (tmp_path / "a.md").read_text(encoding="utf-8")
    assert "## 数值算例" in md and "表6：更新一步之后" in md
    result = run("doc", "linear", "--example")
    assert result.returncode == 2 and "--example is for a network" in result.stderr


def test_markdown_flavours():
    document = doc.chain_document(CHAIN, "zh")
    assert document.markdown("post").startswith("---\nlayout: post\n")
    cnblogs = document.markdown("post", flavor="cnblogs")
    assert not cnblogs.startswith("---") and cnblogs.startswith("# ")
    with pytest.raises(ValueError, match="flavor"):
        document.markdown("post", flavor="hugo")


# -- pictures of what an op does ------------------------------------------------------------------

def _svg_texts(picture):
    return ["".join(t.itertext()) for t in ET.fromstring(picture.svg()).iter("{http://www.w3.org/2000/svg}text")]


@pytest.mark.parametrize("name", ["conv2d", "max_pool2d", "batch_norm"])
def test_op_pictures_are_cited_and_drawn_in_both_formats(name):
    document = doc.ops_document([name], "zh")
    figure = next(f for f in document.figures if f.name == name)
    items = list(document.walk())
    cites = [k for k, i in enumerate(items) if isinstance(i, doc.Para) and doc.FigRef(name) in i.parts]
    assert cites and cites[0] < items.index(figure)
    assert 'stroke="#c0392b"' in figure.picture.svg() and "red!75!black" in figure.picture.tikz()
    assert ENGLISH_SENTENCE.findall(" ".join(_svg_texts(figure.picture))) == []


def test_pooling_picture_marks_the_first_maximum_of_each_window():
    figure = next(f for f in doc.ops_document(["max_pool2d"], "en").figures)
    cells = [s for s in figure.picture.shapes if isinstance(s, doc.figures.Box) and s.square]
    marked = {(round(s.y / 30), round(s.x / 30)) for s in cells if s.fill == "#f5b7b1"}
    x = np.array([[1, 3, 2, 0], [4, 2, 1, 5], [0, 1, 3, 3], [2, 2, 1, 0]])
    first = set()
    for r in (0, 2):
        for c in (0, 2):
            window = x[r:r + 2, c:c + 2]
            a, b = np.unravel_index(np.argmax(window), window.shape)  # argmax: the first maximum
            first.add((r + a, c + b))
    origin = min(marked)
    assert {(r - origin[0] + min(first)[0], c - origin[1] + min(first)[1]) for r, c in marked} == first


def test_batch_norm_picture_shows_each_channels_statistics():
    figure = next(f for f in doc.ops_document(["batch_norm"], "en").figures)
    texts = _svg_texts(figure.picture)
    assert {"c = 1", "c = 3", "sample 4", "μ", "σ²"} <= set(texts)
    joined = " ".join(texts)
    assert "2 1.5 2" in joined and "0.5 1.25 1.25" in joined  # each channel's mean, then its variance
