"""Documents through real tools: pdflatex (English), xelatex with ctex (Chinese), KaTeX (Markdown), pdftoppm.

Without the tools these tests skip and say what to install; in CI (CI=true,
where .ci/run installs them) a missing tool is a failure, so that nothing
is skipped silently.
"""
import html
import json
import os
import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest

from codegen.document import document as doc
from derive.define.registry import registry

ROOT = Path(__file__).resolve().parent.parent
KATEX = ROOT / "tests" / "katex"


def need(tool: str, how: str):
    if shutil.which(tool) is None:
        message = f"{tool} not found: {how} (.ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def need_katex():
    need("node", "install Node.js")
    if not (KATEX / "node_modules" / "katex").is_dir():
        message = "KaTeX not installed: run `npm ci --prefix tests/katex` (.ci/run does)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


# -- LaTeX -------------------------------------------------------------------------------------

RUNS = {"twice": 2, "three times": 3}


def compile_tex(document, tmp_path: Path, name: str) -> Path:
    """Exactly the runs the document's header prescribes; fail on any error, missing glyph, unresolved
    reference, Rerun warning (stale contents or page numbers) or line wider than the text by over 1 pt."""
    tex = document.latex()
    engine, said = re.search(r"^% Compile with (\w+).*? (twice|three times)", tex, re.M).groups()
    assert engine == ("xelatex" if document.lang == "zh" else "pdflatex")
    need(engine, "apt-get install texlive-latex-base texlive-xetex texlive-lang-chinese")
    source = tmp_path / f"{name}.tex"
    source.write_text(tex, encoding="utf-8")
    for _ in range(RUNS[said]):
        result = subprocess.run([engine, "-interaction=nonstopmode", "-halt-on-error", source.name],
                                cwd=tmp_path, capture_output=True, text=True, errors="replace", timeout=300)
        log = (tmp_path / f"{name}.log").read_text(encoding="utf-8", errors="replace")
        assert result.returncode == 0, "\n".join(line for line in log.splitlines() if line.startswith("!"))[:2000]
    assert "Missing character" not in log, re.findall(r"Missing character.*", log)[:5]
    assert "There were undefined references" not in log and "Rerun" not in log
    overfull = [float(w) for w in re.findall(r"Overfull \\hbox \(([\d.]+)pt too wide\)", log)]
    assert all(w <= 1.0 for w in overfull), re.findall(r"Overfull \\hbox.*\n.*", log)[:5]
    return tmp_path / f"{name}.pdf"


def aux_equation_numbers(aux: Path) -> dict:
    return {int(m[0]): int(m[1]) for m in re.findall(r"\\newlabel\{eq:(\d+)\}\{\{(\d+)\}", aux.read_text())}


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_article_compiles_and_latex_numbers_equations_as_the_document_does(lang, tmp_path):
    document = doc.article_document(lang, example=True)
    pdf = compile_tex(document, tmp_path, f"article-{lang}")
    numbers = aux_equation_numbers(pdf.with_suffix(".aux"))
    assert numbers == {n.number: n.number for n in document.equations}
    check_pages_are_not_blank(pdf)
    check_no_page_is_nearly_empty(pdf)


CHAINS = [("linear", "relu", "linear", "leaky_relu", "linear", "mse"),
          ("linear", "batch_norm", "relu", "linear", "softmax_cross_entropy"),
          ("linear", "tanh", "linear", "softmax_cross_entropy"),
          ("linear", "sigmoid", "linear", "softmax", "cross_entropy")]


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("names", CHAINS, ids=lambda names: "-".join(names))
def test_a_chain_compiles_in_both_languages(names, lang, tmp_path):
    compile_tex(doc.chain_document(names, lang), tmp_path, f"chain-{lang}")


def test_every_op_in_the_registry_compiles(tmp_path):
    """All ops in one document, in English (pdflatex) and Chinese (xelatex): an op added later is covered."""
    for lang in ("en", "zh"):
        compile_tex(doc.ops_document(list(registry()), lang), tmp_path, f"ops-{lang}")


# -- the PDF, looked at ----------------------------------------------------------------------------

def check_pages_are_not_blank(pdf: Path):
    """Each page as a greyscale image at 40 dpi: some ink (a page of text is about 2% non-white), not a solid block."""
    need("pdftoppm", "apt-get install poppler-utils")
    out = pdf.with_name(pdf.stem + "-page")
    subprocess.run(["pdftoppm", "-r", "40", "-gray", str(pdf), str(out)], check=True, timeout=120)
    pages = sorted(pdf.parent.glob(out.name + "*.pgm"))
    assert len(pages) >= 4
    for page in pages:
        width, height, pixels = read_pgm(page)
        ink = sum(1 for p in pixels if p < 200) / (width * height)
        assert 0.004 < ink < 0.5, f"{page.name}: {ink:.2%} of the page is ink"


def check_no_page_is_nearly_empty(pdf: Path):
    """No page holds only a lone figure or table, or the document's last two lines: each page has
    at least six lines of text besides its running head."""
    need("pdftotext", "apt-get install poppler-utils")
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True,
                          timeout=60).stdout
    for number, page in enumerate(text.split("\f")[:-1], 1):
        lines = [line for line in page.splitlines() if line.strip()][1:]
        assert len(lines) >= 6, f"page {number} has {len(lines)} lines: {lines}"


def read_pgm(path: Path):
    """A binary PGM (P5, 8 bit): width, height, pixel bytes."""
    data = path.read_bytes()
    fields = re.match(rb"P5\s+(\d+)\s+(\d+)\s+(\d+)\s", data)
    width, height, top = (int(f) for f in fields.groups())
    assert top == 255
    pixels = data[fields.end():]
    assert len(pixels) == width * height
    return width, height, pixels


def test_network_figure_is_drawn_on_its_page(tmp_path):
    """The page with the TikZ network has lines and circles: much more ink than a page of text alone."""
    need("pdftoppm", "apt-get install poppler-utils")
    document = doc.article_document("en")
    pdf = compile_tex(document, tmp_path, "figure")
    subprocess.run(["pdftotext", str(pdf), str(tmp_path / "figure.txt")], check=True, timeout=60)
    pages = (tmp_path / "figure.txt").read_text(errors="replace").split("\f")
    page = next(p for p, text in enumerate(pages, 1) if "Figure 1" in text)
    subprocess.run(["pdftoppm", "-r", "60", "-gray", "-f", str(page), "-l", str(page), str(pdf),
                    str(tmp_path / "fig")], check=True, timeout=60)
    width, height, pixels = read_pgm(next(tmp_path.glob("fig*.pgm")))
    band = [pixels[r * width:(r + 1) * width] for r in range(height)]
    dark_rows = sum(1 for row in band if sum(1 for p in row if p < 160) > 0.05 * width)
    assert dark_rows > 10, "no wide drawing on the figure's page"


# -- KaTeX ---------------------------------------------------------------------------------------------

def maths_in_markdown(md: str) -> list[dict]:
    """Every formula a blog would hand to KaTeX: $$ display blocks, then $inline$ maths in the prose."""
    found = [{"tex": m, "display": True} for m in re.findall(r"^\$\$\n(.*?)\n\$\$$", md, re.S | re.M)]
    prose = re.sub(r"^\$\$\n.*?\n\$\$$", "", md, flags=re.S | re.M)
    prose = re.sub(r"`[^`]*`", "", re.sub(r"<!--.*?-->", "", prose))
    found += [{"tex": m, "display": False} for m in re.findall(r"\$([^$\n]+)\$", prose)]
    return found


@lru_cache(maxsize=None)
def _katex_failures(payload: str) -> str:
    result = subprocess.run(["node", str(KATEX / "render.js")], input=payload, capture_output=True, text=True,
                            timeout=120, cwd=KATEX)
    assert result.returncode == 0, result.stderr
    return result.stdout


def katex_failures(formulas: list[dict]) -> list:
    return json.loads(_katex_failures(json.dumps(formulas)))


def test_katex_catches_what_it_should():
    """The harness itself: bare CJK in maths and \\label fail in strict mode; the same in \\text{} renders."""
    need_katex()
    failures = katex_failures([{"tex": r"y_{隐藏层}", "display": False}, {"tex": r"a \label{x}", "display": True},
                               {"tex": r"y_{\text{隐藏层}}", "display": False}])
    assert [f["tex"] for f in failures] == [r"y_{隐藏层}", r"a \label{x}"]


def through_plain_markdown(md: str) -> str:
    """The HTML a Markdown converter that knows no maths makes (marked), with the HTML entities read back."""
    result = subprocess.run(["node", str(KATEX / "markdown.js")], input=md, capture_output=True, text=True,
                            timeout=120, cwd=KATEX)
    assert result.returncode == 0, result.stderr
    return html.unescape(result.stdout)


def maths_in_html(page: str) -> list[dict]:
    """Every formula in the converted page, as MathJax or KaTeX's auto-render would find it."""
    found = [{"tex": m, "display": True} for m in re.findall(r"^\$\$\n(.*?)\n\$\$$", page, re.S | re.M)]
    prose = re.sub(r"^\$\$\n.*?\n\$\$$", "", page, flags=re.S | re.M)
    prose = re.sub(r"<code>.*?</code>|<img [^>]*>", "", prose, flags=re.S)  # an image's alt text is not shown
    found += [{"tex": m, "display": False} for m in re.findall(r"\$([^$\n]+)\$", prose)]
    return found


@pytest.mark.parametrize("flavor", ["jekyll", "cnblogs"])
@pytest.mark.parametrize("name, make", [
    ("article-zh", lambda: doc.article_document("zh", example=True)),
    ("chain-en", lambda: doc.chain_document(("linear", "tanh", "linear", "softmax_cross_entropy"), "en")),
    ("every-op-zh", lambda: doc.ops_document(list(registry()), "zh")),
])
def test_maths_survive_a_plain_markdown_converter(name, make, flavor):
    """Through marked, each equation comes out exactly as printed (its \\\\ kept), inline maths too,
    and all of it renders in KaTeX; cnblogs's has no front matter to turn into a heading."""
    need_katex()
    document = make()
    page = through_plain_markdown(document.markdown("post", flavor=flavor))
    for n in document.equations:
        assert f"\\begin{{equation}}\n{n.equation.tex}\n\\tag{{{n.number}}}" in page, n.label
    formulas = maths_in_html(page)
    assert len([f for f in formulas if f["display"]]) >= len(document.equations)
    inline = [f for f in formulas if not f["display"]]
    assert inline and not any("<em>" in f["tex"] or "\\_" in f["tex"] for f in inline)
    assert katex_failures(formulas) == []
    if flavor == "cnblogs":
        assert "<hr>" not in page.split("<h2", 1)[0] and "layout: post" not in page


def test_chinese_inside_maths_is_one_run_in_katex():
    """KaTeX sets \\text{输出层} as one run of text (not a glyph to a box, which spaces the letters)."""
    need_katex()
    result = subprocess.run(["node", "-e", KATEX_TEXT_RUNS], input=json.dumps(
        [n.equation.tex for n in doc.article_document("zh").equations]), capture_output=True, text=True,
        timeout=120, cwd=KATEX)
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout)
    assert "输出层" in runs and "隐藏层" in runs
    assert all(len(run) > 1 for run in runs), [run for run in runs if len(run) == 1]


KATEX_TEXT_RUNS = """
const katex = require("katex");
let input = "";
process.stdin.on("data", (c) => { input += c; });
process.stdin.on("end", () => {
  const runs = new Set();
  for (const tex of JSON.parse(input)) {
    const html = katex.renderToString(tex, { displayMode: true, strict: "error", output: "html" });
    for (const m of html.matchAll(/>([^<>]*[\u4e00-\u9fff][^<>]*)</g)) runs.add(m[1]);
  }
  process.stdout.write(JSON.stringify([...runs]));
});
"""


@pytest.mark.parametrize("name, make", [
    ("article-zh", lambda: doc.article_document("zh")),
    ("article-en", lambda: doc.article_document("en")),
    ("chain-zh", lambda: doc.chain_document(("linear", "softmax", "cross_entropy"), "zh")),
    ("batch-norm-chain-en", lambda: doc.chain_document(
        ("linear", "batch_norm", "relu", "linear", "softmax_cross_entropy"), "en")),
    ("every-op-zh", lambda: doc.ops_document(list(registry()), "zh")),
    ("every-op-en", lambda: doc.ops_document(list(registry()), "en")),
])
def test_markdown_renders_in_katex(name, make):
    need_katex()
    document = make()
    formulas = maths_in_markdown(doc.Shown(document)._repr_markdown_())  # maths as written, unprotected
    displays = [f for f in formulas if f["display"]]
    assert len([f for f in displays if r"\begin{equation}" in f["tex"]]) == len(document.equations)
    assert any(not f["display"] for f in formulas)
    assert katex_failures(formulas) == []


def test_notebook_display_renders_in_katex():
    need_katex()
    import derive
    for shown in (derive.show("softmax_cross_entropy"), derive.show("linear", "sigmoid", "half_sse", chain=True)):
        assert katex_failures(maths_in_markdown(shown._repr_markdown_())) == []
        latex = [{"tex": m, "display": True} for m in re.findall(r"\$\$(.*?)\$\$", shown._repr_latex_(), re.S)]
        assert len(latex) == len(shown.document.equations) and katex_failures(latex) == []


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("cell", ["rnn_cell", "lstm_cell"])
def test_a_cell_unrolled_compiles_and_renders_in_katex(cell, lang, tmp_path):
    """Backpropagation through time as a document: TeX (its picture, every line within the text) and KaTeX."""
    from codegen.document.unroll import unrolled_document
    from derive.define.registry import get
    from derive.engine.unroll import unroll
    document = unrolled_document(unroll(get(cell)), lang)
    compile_tex(document, tmp_path, f"{cell}-{lang}")
    need_katex()
    assert katex_failures(maths_in_markdown(doc.Shown(document)._repr_markdown_())) == []
