"""Complete documents: a derivation written up in the article's structure, as Markdown or LaTeX.

A ``Document`` is data: sections holding paragraphs, numbered equations and
figures. Every equation is a ``codegen.latex.blocks.Equation`` printed from the SymPy
expressions the engine or the chain derived; the document only numbers
them, in order, and lets the prose cite earlier ones ("by equation (5)").
Prose is a tuple of parts (text with inline ``$maths$``, ``Ref``,
``Code``) so that each format renders citations and names its own way:
``\\eqref`` in LaTeX, a literal "(5)" with a matching ``\\tag{5}`` in
Markdown (KaTeX has no ``\\label``).
"""
from __future__ import annotations

import base64
import dataclasses
import re
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from derive.engine.chain import BATCH_SIZE, ChainDerivation, chain
from derive.engine.derivation import derive
from derive.define.registry import get
from derive.engine.rewrite import textbook

from codegen.latex import chain as chain_tex

from codegen.document import figures
from codegen.document.figures import Label, tex_escape
from codegen.latex.notation import ArticleLatex, words
from codegen.render import environment
from codegen.latex.blocks import (Block, Equation, adjoint_blocks, backward_blocks, forward_blocks, full_convolution_blocks, gradient_block, notation,
                  upstream_sentence)

DOC_WORDS = {
    "en": {
        "contents": "Contents", "network": "The network", "forward": "Forward pass",
        "backward": "Backward pass", "gradients": "Gradients", "updates": "Updates", "summary": "Summary",
        "matrix": "Matrix form", "figure": "Figure", "equation": "equation", "equations": "equations",
        "and": "and", "input layer": "input layer", "hidden layer": "hidden layer",
        "output layer": "output layer", "objective": "objective", "nodes": "nodes", "scalar": "scalar",
        "neuron": "The neuron", "gradient descent": "Gradient descent", "backpropagation": "Backpropagation",
        "overview": "Part 1: overview", "fully connected": "Part 2: the fully connected layer",
        "example": "An example", "shapes": "Tensor shapes", "neural network": "The neural network",
        "references": "References", "worked example": "A worked example", "quantity": "Quantity",
        "values": "Values (row by row)", "table": "Table", "example inputs": "Inputs and targets",
        "example weights": "Parameters before the step", "example forward": "The forward pass",
        "example deltas": "The error terms", "example gradients": "The gradients",
        "example after": "After one step", "loss before": "$E$ before the step", "loss after": "$E$ after the step",
    },
    "zh": {
        "contents": "目录", "network": "网络", "forward": "前向传播", "backward": "后向传播",
        "gradients": "梯度", "updates": "更新", "summary": "总结", "matrix": "矩阵形式", "figure": "图",
        "equation": "式", "equations": "式", "and": "、", "input layer": "输入层", "hidden layer": "隐藏层",
        "output layer": "输出层", "objective": "目标函数", "nodes": "个节点", "scalar": "标量",
        "neuron": "神经元", "gradient descent": "梯度下降", "backpropagation": "后向传播",
        "overview": "概览", "fully connected": "全连接层", "example": "举例", "shapes": "张量的形状",
        "neural network": "神经网络", "references": "参考资料", "worked example": "数值算例", "quantity": "量",
        "values": "数值（逐行）", "table": "表", "example inputs": "输入与目标值", "example weights": "更新前的参数",
        "example forward": "前向传播", "example deltas": "误差项", "example gradients": "梯度",
        "example after": "更新一步之后", "loss before": "更新前的$E$", "loss after": "更新后的$E$",
    },
}

#: How each engine step is named in prose (``derive.engine.derivation`` records these names).
STEP_WORDS = {
    "en": {"chain rule": "the chain rule", "differentiate": "differentiate",
           "eliminate deltas": "sum out the index brackets $[a = b]$", "fold intermediates": "fold the intermediates back in",
           "apply identities": "apply the identities the inputs guarantee", "textbook form": "tidy up"},
    "zh": {"chain rule": "链式法则", "differentiate": "求导", "eliminate deltas": "消去下标括号$[a = b]$",
           "fold intermediates": "代回中间量", "apply identities": "应用输入满足的恒等式", "textbook form": "整理"},
}


# -- the document model --------------------------------------------------------------

@dataclass(frozen=True)
class Ref:
    """A citation of an earlier equation, by label."""

    label: str


@dataclass(frozen=True)
class Code:
    """A name from the code (an op name): set in monospace."""

    text: str


@dataclass(frozen=True)
class FigRef:
    """A citation of a figure, by its name: ``Figure 1`` / ``图1``."""

    name: str


@dataclass(frozen=True)
class Link:
    """A link: its text, and where it goes."""

    text: str
    url: str


@dataclass(frozen=True)
class Para:
    """A paragraph: text with inline ``$maths$``, ``Ref`` and ``Code`` parts."""

    parts: tuple


@dataclass(frozen=True)
class Bullets:
    items: tuple  # of Para


@dataclass(frozen=True)
class Numbered:
    """A displayed equation with its number and the label prose cites it by."""

    number: int
    label: str
    equation: Equation


@dataclass(frozen=True)
class Display:
    """A displayed equation without a number: a step of reasoning that no one cites."""

    equation: Equation


@dataclass(frozen=True)
class Table:
    """A table of numbers: its caption, the header and the rows (cells are text with inline maths)."""

    caption: str
    header: tuple
    rows: tuple


@dataclass(frozen=True)
class Figure:
    name: str  # file stem suffix: "network", "shapes"
    caption: str
    picture: figures.Picture


@dataclass
class Section:
    title: str
    anchor: str
    items: list = field(default_factory=list)
    sections: list = field(default_factory=list)


@dataclass
class Document:
    title: str
    lang: str
    intro: list
    sections: list

    def walk(self):
        """Every item in reading order."""
        yield from self.intro

        def visit(section):
            yield from section.items
            for sub in section.sections:
                yield from visit(sub)
        for s in self.sections:
            yield from visit(s)

    @property
    def equations(self) -> list[Numbered]:
        return [i for i in self.walk() if isinstance(i, Numbered)]

    @property
    def figures(self) -> list[Figure]:
        return [i for i in self.walk() if isinstance(i, Figure)]

    def markdown(self, stem: str | None = None, flavor: str = "jekyll") -> str:
        """Markdown for Jekyll (front matter) or cnblogs (none); figures are linked as ``<stem>-<name>.svg``
        (left out without a stem). The maths is protected from a converter that knows no maths: each
        display in an HTML block, which Markdown passes through as it is, and inline maths with the
        characters Markdown would take (``\\,``, ``_``, ``*``) escaped, so that ``\\\\`` survives."""
        if flavor not in FLAVORS:
            raise ValueError(f"flavor: expected one of {sorted(FLAVORS)}, got {flavor!r}")
        return _render("doc.md.j2", self, _Markdown(self, stem, protect=True), front_matter=flavor == "jekyll",
                       protect=True)

    def latex(self) -> str:
        """A standalone LaTeX document: pdflatex for English, xelatex (ctex) for Chinese."""
        return _render("doc.tex.j2", self, _Latex(self))


class _Writer:
    """Numbers equations in order and checks that prose only cites earlier ones."""

    def __init__(self, lang: str):
        self.lang = lang
        self.numbers: dict[str, int] = {}

    def equation(self, eq: Equation | Block, label: str | None = None) -> Numbered:
        eq = eq.equation if isinstance(eq, Block) else eq
        number = len(self.numbers) + 1
        label = label or f"eq{number}"
        if label in self.numbers:
            raise ValueError(f"label: {label!r} is used twice")
        self.numbers[label] = number
        return Numbered(number, label, eq)

    def cite(self, labels) -> tuple:
        """``equations (3) and (5)`` / ``式(3)、(5)``: the parts of a citation, in number order."""
        labels = sorted({lab for lab in labels if lab in self.numbers}, key=self.numbers.get)
        if not labels:
            return ()
        w = DOC_WORDS[self.lang]
        refs = [Ref(lab) for lab in labels]
        if self.lang == "zh":
            parts = ["式"]
            for p, r in enumerate(refs):
                parts += ([w["and"]] if p else []) + [r]
            return tuple(parts)
        parts = [f"{w['equation'] if len(refs) == 1 else w['equations']} "]
        for p, r in enumerate(refs):
            if p:
                parts.append(" and " if p == len(refs) - 1 else ", ")
            parts.append(r)
        return tuple(parts)

    def items(self, blocks, labels=None, unnumbered=()) -> list:
        """Blocks to document items: text becomes a paragraph, an equation gets the next number
        (or none, for the positions in ``unnumbered``)."""
        out = []
        labels = list(labels or [])
        for position, b in enumerate(blocks):
            if b.equation and position in unnumbered:
                out.append(Display(b.equation))
            elif b.equation:
                out.append(self.equation(b, labels.pop(0) if labels else None))
            elif b.text:
                out.append(Para((b.text,)))
        return out


def _para(*parts) -> Para:
    """A paragraph from strings, Refs, Codes and tuples of them (a citation)."""
    flat = []
    for p in parts:
        flat += list(p) if isinstance(p, tuple) else [p]
    return Para(tuple(flat))


def _by(writer: _Writer, labels) -> Para:
    """``By equation (5):`` / ``由式(5)：``, leading an equation that uses (5)."""
    cite = writer.cite(labels)
    return _para("由", cite, "：") if writer.lang == "zh" else _para("By ", cite, ":")


# -- ops ------------------------------------------------------------------------------

_CJK_NAME = re.compile(r"\s*[(（]([A-Za-z]*[\u2e80-\u9fff]+)[)）]")


def op_title(op, lang: str) -> str:
    """An op's name for headings and labels: in Chinese, its Chinese name (``doc_zh`` up to the colon)."""
    return op.doc_zh.split("：", 1)[0] if lang == "zh" and op.doc_zh else op.name


def op_summary(op, lang: str) -> str:
    """One sentence on the op: ``doc_zh`` after its name in Chinese; else the docstring's first line,
    without its Chinese name (pdflatex has no CJK)."""
    if lang == "zh" and op.doc_zh:
        return op.doc_zh.split("：", 1)[-1]
    return _CJK_NAME.sub("", op.doc.strip().splitlines()[0])


PICTURE_WORDS = {
    "en": {"padded": "padded input (P = 1)", "output": "output, one channel", "input": "input, one channel",
           "window": "red: the window of output position (i, j), from (i s, j s); grey: the zeros added",
           "mask": "red: the first maximum of each window (mask 1), where the gradient goes",
           "channel": "c = {}", "sample": "sample {}"},
    "zh": {"padded": "补零后的输入（P = 1）", "output": "输出（一个通道）", "input": "输入（一个通道）",
           "window": "红框：输出位置 (i, j) 的窗口，从 (i s, j s) 开始；灰色：补的零",
           "mask": "红色：每个窗口中第一个最大值（掩码为1），梯度只传到这里",
           "channel": "通道 {}", "sample": "样本 {}"},
}


def op_figure(op, lang: str):
    """A picture of what the op does on a small example, and the sentence that cites it; None for most ops."""
    words = PICTURE_WORDS[lang]
    if op.name == "conv2d":
        picture = figures.window_picture(3, 3, 1, 3, 1, (1, 2), words)
        caption = ("卷积：补零后的输入上的一个窗口与卷积核相乘求和，得到输出的一个位置" if lang == "zh" else
                   "Convolution: one window of the padded input, times the kernel and summed, makes one output "
                   "position")
        cite = (("如", FigRef("conv2d"), "所示，步长$s=1$、补零$P=1$时，3×3的卷积核在5×5的补零输入上滑动，"
                 "窗口$(is+p, js+q)$给出输出位置$(i, j)$：") if lang == "zh" else
                (FigRef("conv2d"), " shows it for stride $s=1$ and padding $P=1$: the 3×3 kernel slides over the "
                 "5×5 padded input, and the window $(is+p, js+q)$ makes output position $(i, j)$."))
    elif op.name == "max_pool2d":
        import importlib
        module = importlib.import_module("generated.max_pool2d")
        x = np.array([[1, 3, 2, 0], [4, 2, 1, 5], [0, 1, 3, 3], [2, 2, 1, 0]], dtype=float)
        out, cache = module.forward(x[None, None])
        mask = module.backward(np.ones_like(out), cache)["x"][0, 0]  # the gradient of a 1 from every window
        picture = figures.pooling_picture(x, out[0, 0], mask, words)
        caption = ("最大池化的掩码：梯度只传给每个窗口中第一个最大值" if lang == "zh" else
                   "Max pooling's mask: the gradient goes to the first maximum of each window only")
        cite = (("", FigRef("max_pool2d"), "是2×2窗口的例子（由生成的代码算出）：窗口中有两个相同的最大值时，"
                 "只有第一个得到梯度。") if lang == "zh" else
                (FigRef("max_pool2d"), " is an example with 2×2 windows (computed by the generated code): where "
                 "two values tie for a window's maximum, only the first gets the gradient."))
    elif op.name == "batch_norm":
        x = np.array([[1.0, 2.0, 0.5], [3.0, 0.0, 1.5], [2.0, 1.0, 2.5], [2.0, 3.0, 3.5]])
        picture = figures.statistics_picture(x, x.mean(axis=0), x.var(axis=0), words)
        caption = ("批归一化的统计量：每个通道在整个批次上求均值和方差" if lang == "zh" else
                   "Batch norm's statistics: each channel's mean and variance, over the whole batch")
        cite = (("", FigRef("batch_norm"), "中，每列是一个通道、每行是一个样本：$\\mu_c$和$\\sigma^2_c$"
                 "按列计算，所以一个样本的输出依赖整个批次。") if lang == "zh" else
                ("In ", FigRef("batch_norm"), ", each column is a channel and each row a sample; $\\mu_c$ and $\\sigma^2_c$ "
                 "are taken down a column, so one sample's output depends on the whole batch."))
    else:
        return None
    return Figure(op.name, caption, picture), cite


def upstream_symbol(ops) -> str:
    """One name for the gradient arriving at an output, for a whole document: the ops' own if they
    agree (conv2d's ``\\delta``), else ``g``."""
    names = {op.upstream for op in ops if not op.is_loss}
    return names.pop() if len(names) == 1 else "g"


def ops_document(names, lang: str = "en", title: str | None = None) -> Document:
    """Each op on its own: forward, the engine's steps for each gradient, matrix form, updates."""
    words(lang)
    ops = list(dict.fromkeys(get(n) for n in names))
    if not ops:
        raise ValueError("ops: give at least one op")
    names = [op.name for op in ops]
    writer = _Writer(lang)
    if title is None:
        title = ("神经网络前向和后向传播推导：" + "、".join(op_title(op, lang) for op in ops)) if lang == "zh" else \
            "Forward and backward propagation derived: " + ", ".join(names)
    g = upstream_symbol(ops)
    sources = sorted({op.definition_source if not op.is_builtin else "derive/ops" for op in ops})
    where_zh = [part for k, s in enumerate(sources) for part in (("、",) if k else ()) + (Code(s),)]
    where_en = [part for k, s in enumerate(sources) for part in ((", ",) if k else ()) + (Code(s),)]
    intro = [_para(
        "下面每个公式都由 SymPy 从该层的前向定义（见 ", *where_zh,
        "）推导而来，推导中没有手写任何后向公式。"
        f"记号：${g}$ 表示输出端传来的梯度 $\\frac{{\\partial E}}{{\\partial y}}$，所以更新时减去梯度；"
        "$[a = b]$ 在 $a = b$ 时为 1，否则为 0。") if lang == "zh" else _para(
        "Every equation below was derived by SymPy from the layer's forward definition (in ", *where_en,
        "); no backward formula was typed in. "
        f"Notation: ${g}$ is the gradient arriving at the output, $\\frac{{\\partial E}}{{\\partial y}}$, so an "
        "update subtracts the gradient; $[a = b]$ is 1 where $a = b$ and 0 elsewhere.")]
    sections = [_op_section(op, writer, lang, g) for op in ops]
    return Document(title, lang, intro, sections)


def _op_section(op, writer: _Writer, lang: str, upstream: str) -> Section:
    w, sw = DOC_WORDS[lang], STEP_WORDS[lang]
    d = derive(op)
    if op.upstream != upstream:  # the document's one name for the upstream gradient
        op = dataclasses.replace(op, upstream=upstream)
        d = dataclasses.replace(d, op=op)
    printer = ArticleLatex(notation(op), lang)
    colon = "：" if lang == "zh" else ":"
    summary = op_summary(op, lang)
    section = Section(op_title(op, lang), op.name, [_para(Code(op.name), colon + " " * (lang == "en"), summary)])
    forward = Section(w["forward"], f"{op.name}-forward")
    labels = [f"{op.name}:{node.name}" for node in op.intermediates]
    forward.items = writer.items(forward_blocks(d, lang, "index"), labels)
    picture = op_figure(op, lang)
    if picture:
        forward.items += [_para(*picture[1]), picture[0]]
    backward = Section(w["backward"], f"{op.name}-backward")
    if not op.is_loss:
        backward.items.append(_para(upstream_sentence(d, printer, lang)))
    if not d.written_out:
        backward.items.append(_para(words(lang)["through only"]))
    for grad in d.gradients if d.written_out else ():
        block = gradient_block(d, printer, grad)
        steps = [sw.get(s.name, s.name) for s in grad.steps]
        element = printer.doprint(grad.element)
        cite = writer.cite(labels)
        if lang == "zh":
            lead = _para(f"对${element}$求梯度：由", cite, "，依次" + "、".join(steps) + "：")
        else:
            lead = _para(f"The gradient with respect to ${element}$, from ", cite,
                         ": " + ", ".join(steps) + ":")
        backward.items += [lead, writer.equation(block, f"{op.name}:d{grad.input.name}")]
    backward.items += writer.items(full_convolution_blocks(d, lang))
    section.sections = [forward, backward]
    through = adjoint_blocks(d, lang)
    if through:
        steps = Section({"en": "Through the intermediates", "zh": "经过中间量"}[lang], f"{op.name}-through")
        steps.items = writer.items(through)
        section.sections.append(steps)
    matrix_blocks = forward_blocks(d, lang, "matrix") + backward_blocks(d, lang, "matrix")
    if any(b.equation for b in matrix_blocks):  # no section that only says there is no matrix form
        matrix = Section(w["matrix"], f"{op.name}-matrix")
        matrix.items = writer.items(matrix_blocks)
        section.sections.append(matrix)
    shown = d.gradients if d.written_out else d.backprop  # in terms of the named gradients, if not written out
    params = [g for g in shown if g.input != op.inputs[0]] if not op.is_loss else []
    if params:
        update = Section(w["updates"], f"{op.name}-updates")
        eta = sp.Symbol("eta")
        for grad in params:
            element = grad.element
            new = element - eta * grad.expr
            tex = (rf"{printer.doprint(element)} \leftarrow {printer.doprint(element)} - \eta "
                   rf"\frac{{\partial E}}{{\partial {printer.doprint(element)}}} = {printer.doprint(new)}")
            update.items += [_by(writer, [f"{op.name}:d{grad.input.name}"]),
                             writer.equation(Equation(tex, element, (new,)), f"{op.name}:update-{grad.input.name}")]
        section.sections.append(update)
    return section


# -- chains -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Group:
    """A column of the network: the layers whose outputs have the same width (linear, then its activation)."""

    role: str  # "input", "hidden" or "output"
    size: sp.Symbol
    layers: tuple


def groups(c: ChainDerivation) -> list[Group]:
    x = c.inputs["x"]
    found = [Group("input", x.shape[-1], ())]
    for layer in c.layers:
        if layer.op.is_loss:
            continue
        width = layer.output.shape[-1]
        last = found[-1]
        if width == last.size:
            found[-1] = Group(last.role, last.size, last.layers + (layer,))
        else:
            found.append(Group(layer.role, width, (layer,)))
    if len(found) > 1:  # the last column is the output layer, whatever its op called itself
        found[-1] = Group("output", found[-1].size, found[-1].layers)
    return found


def _tensor_label(label: str) -> Label:
    base, _, sub = label.partition("_")
    return Label(base, sub if sub.isdigit() else "")


def network_figure(c: ChainDerivation, lang: str, sizes=None) -> Figure | None:
    """The layered graph with the article's node numbers and weight labels; None for a single column."""
    cols = groups(c)
    if len(cols) < 2:
        return None
    sizes = tuple(sizes) if sizes else (3,) + (2,) * (len(cols) - 1)
    if len(sizes) != len(cols):
        raise ValueError(f"sizes: this network has {len(cols)} layers of nodes, got {len(sizes)} sizes")
    w = DOC_WORDS[lang]
    columns = []
    hidden = sum(g.role == "hidden" for g in cols)
    count = 0
    for g, n in zip(cols, sizes):
        caption = w[f"{g.role} layer"]
        if g.role == "hidden" and hidden > 1:
            count += 1
            caption += f" {count}"
        acts = [op_title(layer.op, lang) for layer in g.layers if not _width_changes(layer)]
        columns.append(figures.Column(caption, n, ", ".join(acts)))
    element = next((i.element for g in cols[1:] for layer in g.layers[:1] for i in layer.op.inputs
                    if i.element), "w")
    picture = figures.network_picture(columns, element)
    drawn = "、".join(map(str, sizes)) if lang == "zh" else ", ".join(map(str, sizes))
    caption = (f"网络结构：节点按层编号，权重 $w_{{ts}}$ 的下标先写后一层的节点 $t$（图中各层画 {drawn} 个节点）"
               if lang == "zh" else
               f"The network: nodes numbered layer by layer; a weight $w_{{ts}}$ names the later node $t$ first "
               f"(drawn with {drawn} nodes)")
    return Figure("network", caption, picture)


def _width_changes(layer) -> bool:
    first = layer.tensors[layer.op.inputs[0].name]
    return layer.output.shape[-1] != first.shape[-1]


def shapes_figure(c: ChainDerivation, lang: str) -> Figure:
    """Each tensor's shape from the input to the objective; parameters beside the op that reads them."""
    w = DOC_WORDS[lang]
    x = c.inputs["x"]
    stages = []
    for layer in c.layers:
        params = tuple((_tensor_label(str(t.label)), figures.shape_label([str(s) for s in t.shape], w["scalar"]))
                       for name, t in layer.tensors.items() if name != layer.op.inputs[0].name)
        if layer.output is None:
            out, shape = Label("E"), figures.shape_label([], w["scalar"])
        else:
            out = _tensor_label(str(layer.output.label))
            shape = figures.shape_label([str(s) for s in layer.output.shape], w["scalar"])
        stages.append(figures.Stage(op_title(layer.op, lang), params, out, shape))
    picture = figures.shapes_picture(Label("x"), figures.shape_label([str(s) for s in x.shape], w["scalar"]),
                                     stages)
    caption = ("张量的形状：从输入到目标函数，每行一个样本；每个梯度与其参数形状相同" if lang == "zh" else
               "Tensor shapes from the input to the objective, one row per sample; "
               "each gradient has its parameter's shape")
    return Figure("shapes", caption, picture)


def _network_description(c: ChainDerivation, lang: str, form) -> list:
    """The layers, their sizes and activations, and the objective, as a list."""
    w = DOC_WORDS[lang]
    printer = chain_tex.chain_printer(c, lang)
    items = []
    for g in groups(c):
        size = printer.doprint(g.size)
        ops = [layer.op.name for layer in g.layers]
        if g.role == "input":
            text = (f"{w['input layer']}：${size}$ {w['nodes']}" if lang == "zh"
                    else f"{w['input layer']}: ${size}$ {w['nodes']}")
        else:
            text = (f"{w[g.role + ' layer']}：${size}$ {w['nodes']}，" if lang == "zh"
                    else f"{w[g.role + ' layer']}: ${size}$ {w['nodes']}, ")
        parts = [text]
        for p, name in enumerate(ops):
            parts += [" → "] * bool(p) + [Code(name)]
        items.append(Para(tuple(parts)))
    loss = c.layers[-1]
    if loss.op.is_loss:
        tex = printer.doprint(chain_tex.objective_rows(c, form)[0])
        items.append(Para((f"{w['objective']}：" if lang == "zh" else f"{w['objective']}: ", Code(loss.op.name),
                           f"，$E = {tex}$" if lang == "zh" else f", $E = {tex}$")))
    return [Bullets(tuple(items))]


def chain_sections(c: ChainDerivation, writer: _Writer, lang: str, sample: bool = True,
                   anchor: str = "") -> list[Section]:
    """Forward, backward (each chain-rule step citing what it uses), gradients with the error terms
    substituted, updates, and a summary that points at each group of equations."""
    w = DOC_WORDS[lang]
    printer = chain_tex.chain_printer(c, lang)
    sample = sample and not c.coupled_by  # a batch norm's network has no one-sample form
    form = chain_tex.form_of(sample)

    forward = Section(w["forward"], anchor + "forward")
    forward.items.append(_para("从输入层开始，逐层计算每层的输出，最后得到目标函数：" if lang == "zh" else
                               "The forward pass computes each layer's output in turn, from the input layer to "
                               "the objective:"))
    for (lhs, _), block in zip(c.forward, chain_tex.forward_blocks(c, printer, form)):
        forward.items.append(writer.equation(block, _label(lhs)))
    first_forward = forward.items[1].label

    backward = Section(w["backward"], anchor + "backward")
    backward.items.append(_para(
        "记$\\delta=\\frac{\\partial E}{\\partial net}$为误差项（输出层先算，再逐层向前），更新时减去梯度："
        if lang == "zh" else
        "Write $\\delta=\\frac{\\partial E}{\\partial net}$ for the error term (the output layer first, then "
        "each layer before it); an update subtracts the gradient:"))
    deltas = {}  # label of the tensor whose gradient is named -> equation label
    for q in c.backward:
        cite = writer.cite(_cited(q, deltas))
        block = chain_tex.quantity_block(printer, form, q, c)
        name = printer.doprint(form(q.lhs))
        if q.kind == "delta":
            role = words(lang)[q.layer.role + " layer"] if q.layer.role in ("hidden", "output") else ""
            subject = (f"{role}节点的误差项${name}$" if lang == "zh" else
                       f"the error term ${name}$ of {'an' if role.startswith('o') else 'a'} {role} node")
            label = f"delta:{q.layer.output.label}"
        elif q.kind == "gradient":
            element = printer.doprint(form(q.lhs).variables[0])
            subject = f"对参数${element}$的梯度" if lang == "zh" else f"the gradient with respect to ${element}$"
            label = f"grad:{q.lhs.variables[0].base.label}"
        else:
            subject = "传回输入的梯度" if lang == "zh" else "the gradient passed back to the input"
            label = "grad:input"
        identity = chain_tex.identity_sentence(c, form, printer, lang) if chain_tex.loss_steps(c, form, q) else ""
        if lang == "zh":
            lead = _para("由链式法则", ("及",) + cite if cite else (), f"，{subject}" +
                         (f"（{identity}）" if identity else "") + "：")
        else:
            lead = _para("By the chain rule", (" and ",) + cite if cite else (), f", {subject}" +
                         (f" ({identity})" if identity else "") + ":")
        backward.items += [lead, writer.equation(block, label)]
        if q.kind == "delta":
            deltas[str(q.layer.output.label)] = label

    gradients = Section(w["gradients"], anchor + "gradients")
    gradients.items.append(_para("把误差项代入，每个梯度只用前向传播算出的量表示：" if lang == "zh" else
                                 "With the error terms substituted, each gradient in terms of the forward pass alone:"))
    delta_of = {q.lhs.base: q.expr for q in c.backward if q.kind == "delta"}
    for q in c.parameters:
        lhs = form(q.lhs)
        expanded = textbook(form(q.expanded))
        rows = (form(q.expr), expanded) if form(q.expr) != expanded else (expanded,)
        block = chain_tex.equation_block(printer, lhs, rows)
        used = _deltas_used(q.expr, delta_of)
        cited = [f"grad:{q.lhs.variables[0].base.label}"] + [f"delta:{_delta_layer(c, d)}" for d in used]
        gradients.items += [_by(writer, cited), writer.equation(block, f"full:{q.lhs.variables[0].base.label}")]

    updates = Section(w["updates"], anchor + "updates")
    updates.items.append(_para("每个参数沿梯度的反方向走一步，$\\eta$为学习率：" if lang == "zh" else
                               "Each parameter takes a step against its gradient, $\\eta$ the learning rate:"))
    for q in c.parameters:
        base = q.lhs.variables[0].base.label
        updates.items += [_by(writer, [f"grad:{base}"]),
                          writer.equation(chain_tex.update_block(printer, form, q), f"update:{base}")]

    summary = Section(w["summary"], anchor + "summary")
    last_forward = forward.items[-1].label
    back = [i.label for i in backward.items if isinstance(i, Numbered)]
    ups = [i.label for i in updates.items if isinstance(i, Numbered)]
    if lang == "zh":
        summary.items.append(_para(f"训练时对每个{'样本' if sample else '批次'}：先按式", Ref(first_forward), "–", Ref(last_forward),
                                   "前向传播，再按式", Ref(back[0]), "–", Ref(back[-1]), "后向传播得到误差项和梯度，"
                                   "最后按式", Ref(ups[0]), "–", Ref(ups[-1]), "更新参数。"))
    else:
        summary.items.append(_para(f"Training, for each {'sample' if sample else 'batch'}: the forward pass by equations ", Ref(first_forward), "–",
                                   Ref(last_forward), ", the backward pass by ", Ref(back[0]), "–", Ref(back[-1]),
                                   " for the error terms and gradients, then the updates ", Ref(ups[0]), "–",
                                   Ref(ups[-1]), "."))
    return [forward, backward, gradients, updates, summary]


def _label(lhs) -> str:
    return str(lhs.base.label) if isinstance(lhs, sp.Indexed) else str(lhs)


def _cited(q, deltas: dict) -> list[str]:
    """What a chain-rule step uses: the error term behind each dE/d(...), the forward equation of each local factor."""
    out = []
    for node in sp.preorder_traversal(q.chain):
        if not isinstance(node, sp.Derivative):
            continue
        num, var = node.expr, node.variables[0]
        if num == sp.Symbol("E"):
            label = deltas.get(str(var.base.label), "E") if isinstance(var, sp.Indexed) else "E"
        else:
            label = _label(num)
        if label not in out:
            out.append(label)
    return out


def _deltas_used(expr, delta_of: dict) -> list:
    """The error-term tensors an expression reads, and those they read in turn (``delta_of``: tensor -> its expression)."""
    found, todo = [], [expr]
    while todo:
        e = todo.pop()
        for t in {x.base for x in e.atoms(sp.Indexed)}:
            if t in delta_of and t not in found:
                found.append(t)
                todo.append(delta_of[t])
    return found


def _delta_layer(c: ChainDerivation, delta) -> str:
    q = next(q for q in c.backward if q.kind == "delta" and q.lhs.base == delta)
    return str(q.layer.output.label)


# -- a worked example ------------------------------------------------------------------------

def _numbers(array) -> str:
    """Each value as inline maths, row after row (``;`` between rows of a matrix or between samples)."""
    array = np.atleast_1d(np.asarray(array, dtype=float))
    rows = array.reshape(-1, array.shape[-1]) if array.ndim > 1 else array[None, :]
    return "; ".join(", ".join(f"${_number(v)}$" for v in row) for row in rows)


def _number(v: float) -> str:
    """Four significant digits; a power of ten below 0.0001."""
    text = f"{v:.4g}"
    if "e" not in text:
        return text
    mantissa, exponent = text.split("e")
    return rf"{mantissa} \times 10^{{{int(exponent)}}}"


def _element_of(c: ChainDerivation, tensor, form):
    """How the document writes one element of a tensor (``w_{kj}``, ``net_{j}``): as its equations index it."""
    for lhs, rhs in c.forward:
        for e in [lhs, *sp.preorder_traversal(rhs)]:
            if isinstance(e, sp.Indexed) and e.base == tensor:
                return form(e)
    for q in c.backward:
        element = q.lhs.variables[0] if isinstance(q.lhs, sp.Derivative) else q.lhs
        if isinstance(element, sp.Indexed) and element.base == tensor:
            return form(element)
    return tensor


def example_section(c: ChainDerivation, writer: _Writer, lang: str, nodes, sample: bool, anchor: str = "") -> Section:
    """One training step on concrete numbers, as tables; computed by the generated code and checked
    against this document's equations at the same numbers (``codegen.document.example``)."""
    from codegen.document.example import one_step
    step = one_step(c, nodes)
    w = DOC_WORDS[lang]
    form = chain_tex.form_of(sample and not c.coupled_by)
    printer = chain_tex.chain_printer(c, lang)

    def name(tensor) -> str:
        return f"${printer.doprint(_element_of(c, tensor, form))}$"

    def table(caption, rows):
        return Table(caption, (w["quantity"], w["values"]), tuple(rows))

    grad_name = {q.lhs.variables[0].base: f"$\\partial E/\\partial {printer.doprint(form(q.lhs.variables[0]))}$"
                 for q in c.parameters}  # on one line: a table row is not a display
    modules = sorted({f"generated/{layer.op.name}.py" for layer in c.layers})
    code = []
    for p, m in enumerate(modules):
        code += ["、" if lang == "zh" else ", "] * bool(p) + [Code(m)]
    checked = [_label(lhs) for lhs, _ in c.forward] + [
        f"delta:{q.layer.output.label}" if q.kind == "delta" else f"grad:{q.lhs.variables[0].base.label}"
        for q in c.backward if q.kind in ("delta", "gradient")]
    checked = sorted((lab for lab in checked if lab in writer.numbers), key=writer.numbers.get)
    first, last = checked[0], checked[-1]
    samples = step.sizes[BATCH_SIZE]
    section = Section(w["worked example"], anchor + "worked-example")
    if lang == "zh":
        section.items.append(_para(
            f"取学习率$\\eta = {step.lr}$，" + (f"一个批次{samples}个样本，" if samples > 1 else "一个样本，") +
            "输入、权重和目标值取两位小数。表中的每个数都由生成的代码（", *code, "）算出；"
            "同一组数代入式", Ref(first), "–", Ref(last), f"所得的值与之相同（比较了{step.checked}个数，"
            "相对误差不超过$10^{-9}$）。"))
    else:
        section.items.append(_para(
            f"Take the learning rate $\\eta = {step.lr}$, " + (f"a batch of {samples} samples" if samples > 1 else
                                                              "one sample") +
            ", and inputs, weights and targets with two decimals. Every number in the tables was computed by the "
            "generated code (", *code, "); equations ", Ref(first), "–", Ref(last),
            f" give the same values at the same numbers ({step.checked} numbers compared, relative error at most "
            "$10^{-9}$)."))
    section.items.append(table(w["example inputs"], [(name(t), _numbers(v)) for t, v in step.inputs.items()]))
    section.items.append(table(w["example weights"], [(name(t), _numbers(v)) for t, v in step.params.items()]))
    section.items.append(table(w["example forward"], [(name(t) if t != sp.Symbol("E") else "$E$", _numbers(v))
                                                      for t, v in step.forward.items()]))
    section.items.append(table(w["example deltas"], [(name(t), _numbers(v)) for t, v in step.deltas.items()]))
    section.items.append(table(w["example gradients"], [(grad_name[t], _numbers(v)) for t, v in step.grads.items()]))
    after = [(name(t), _numbers(v)) for t, v in step.updated.items()]
    after += [(w["loss before"], _numbers(step.loss)), (w["loss after"], _numbers(step.loss_after))]
    section.items.append(table(w["example after"], after))
    section.items.append(_para(
        f"一步之后，$E$从${_number(step.loss)}$降到${_number(step.loss_after)}$。" if lang == "zh" else
        f"After one step, $E$ falls from ${_number(step.loss)}$ to ${_number(step.loss_after)}$."))
    return section


def chain_document(names, lang: str = "en", sizes=None, title: str | None = None, sample: bool = True,
                   example: bool = False) -> Document:
    """A network: described, drawn, derived forward and backward, with gradients and updates."""
    words(lang)
    names = [n for n in names]
    c = chain(names)
    note = chain_tex.coupling_note(c, lang, sample)
    sample = sample and not c.coupled_by
    w = DOC_WORDS[lang]
    writer = _Writer(lang)
    if title is None:
        title = ("神经网络前向和后向传播推导：" if lang == "zh" else "Forward and backward propagation derived: ") + \
            " → ".join(names)
    intro = [_para(
        "下面的网络由 SymPy 逐层推导：每层的梯度来自该层的前向定义，跨层的链式法则由程序完成，"
        "每个公式都是推导结果的打印。" + ("按单个样本推导（去掉批次下标）。" if sample else "")
        if lang == "zh" else
        "The network below was derived by SymPy layer by layer: each layer's gradient from its forward "
        "definition, the chain rule across layers by the program; every equation is a printed result."
        + (" The derivation is for one sample (no batch index)." if sample else ""))]
    intro += [_para(block.text) for block in note]
    network = Section(w["network"], "network", _network_description(c, lang, chain_tex.form_of(sample)))
    picture = network_figure(c, lang, sizes)
    if picture:
        network.items.append(picture)
    network.items.append(shapes_figure(c, lang))
    sections = [network] + chain_sections(c, writer, lang, sample)
    if example:
        nodes = tuple(sizes) if sizes else (3,) + (2,) * (len(groups(c)) - 1)
        sections.append(example_section(c, writer, lang, nodes, sample))
    return Document(title, lang, intro, sections)


# -- the article ----------------------------------------------------------------------------

def article_document(lang: str = "en", example: bool = False) -> Document:
    """Parts 1 and 2 of the article, re-derived; raises if any of the article's claims fails its check."""
    from codegen.document import article
    words(lang)
    c = chain(article.ARTICLE)
    problems = article.verify(c)
    if problems:
        raise ValueError("article: " + "; ".join(problems))
    w = DOC_WORDS[lang]
    writer = _Writer(lang)
    title = ("神经网络前向和后向传播推导（一）（二）：概览与全连接层，由 SymPy 重新推导" if lang == "zh" else
             "Forward and backward propagation of neural networks, parts 1 and 2: re-derived by SymPy")
    intro = [_para(
        "本文按原文的结构重写第一篇（概览）和第二篇（全连接层）。第二篇的每个公式都由 SymPy 从各层的前向定义推导；"
        "第一篇中，式(1)(2)(3)(5)(6)由程序验证，式(4)(7)(8)是记号的定义。"
        "我们记$\\delta=\\frac{\\partial E}{\\partial net}$，所以更新时减去梯度。"
        if lang == "zh" else
        "The article's first two parts (the overview; the fully connected layer), rewritten in its structure. "
        "Every equation of part 2 was derived by SymPy from the layers' forward definitions; in part 1, "
        "equations (1), (2), (3), (5) and (6) were checked by the program, (4), (7) and (8) define notation. "
        "We write $\\delta=\\frac{\\partial E}{\\partial net}$, so an update subtracts the gradient.")]
    part1 = Section(w["overview"], "overview")
    notes = _part1_notes(lang)
    picture = network_figure(c, lang, article.SIZES)
    network_picture = Figure(picture.name, (
        "三层网络：节点编号、权重与偏移" if lang == "zh" else "The three-layer network: node numbers, weights and biases"),
        picture.picture)
    for key, blocks in article.part1_sections(lang):
        sub = Section(w[key], key.replace(" ", "-"))
        # the bias-folding step is reasoning between (1) and (2), unnumbered so that (1)-(8) are the article's
        fold = {p for p, b in enumerate(blocks) if b.equation and b.equation.lhs == sp.Symbol("wx")}
        sub.items = notes.get(key, []) + writer.items(blocks, unnumbered=fold)
        part1.sections.append(sub)
        if key == "neuron":  # then the two sections of part 1 that have no equation
            net = Section(w["neural network"], "neural-network", _network_notes(lang) + [network_picture])
            forward = Section(w["forward"], "overview-forward", _forward_notes(lang))
            part1.sections += [net, forward]
    part2 = Section(w["fully connected"], "fully-connected")
    network = Section(w["network"], "fc-network")
    network.items.append(_para(
        "我们用", FigRef("network"), "中的三层网络：输入层的节点1、2、3，隐藏层的节点4、5，输出层的节点6、7；"
        "每个节点与前一层的每个节点相连。权重的下标先写后一层的节点：$w_{41}$连接输入节点1和隐藏节点4。"
        "偏移并入权重，记为$w_{b_4}$，它的输入是常数1（图中标为1的偏移节点）。", FigRef("shapes"),
        "是各个张量的形状。") if lang == "zh" else _para(
        "We use the three-layer network of ", FigRef("network"), ": input nodes 1, 2, 3; hidden nodes 4, 5; "
        "output nodes 6, 7; every node is joined to every node of the layer before. A weight names the later "
        "node first: $w_{41}$ joins input node 1 to hidden node 4. Each bias is folded into the weights as "
        "$w_{b_4}$, the weight of a constant input 1 (the bias node marked 1 in the picture). ",
        FigRef("shapes"), " shows the shape of each tensor."))
    network.items.append(shapes_figure(c, lang))
    network.items += writer.items(article.node_blocks(lang, c))
    part2.sections = [network] + chain_sections(c, writer, lang, anchor="fc-")
    example_wanted = example
    example = Section(w["example"], "example")
    blocks = article.example_blocks(lang, c)
    example.items = [_para(blocks[0].text[:-1], "（" if lang == "zh" else " (",
                           *(("由",) + writer.cite(["grad:W_2"]) if lang == "zh" else ("by ",) + writer.cite(["grad:W_2"])),
                           "）：" if lang == "zh" else "):")]
    example.items += writer.items(blocks[1:])
    part2.sections.append(example)
    if example_wanted:
        part2.sections.append(example_section(c, writer, lang, article.SIZES, True, anchor="fc-"))
    references = Section(w["references"], "references", [Bullets(tuple(
        _para(Link(text, url)) for text, url in article.references(lang)))])
    return Document(title, lang, intro, [part1, part2, references])


def _network_notes(lang: str) -> list:
    """Part 1's section on the network, in our words."""
    if lang == "zh":
        return [_para("神经网络由若干层组成，每层由若干神经元组成。", FigRef("network"),
                      "是本文用到的三层网络：最左边的输入层接收样本，最右边的输出层给出网络的输出，中间的是隐藏层；"
                      "隐藏层和输出层都是全连接层，它们的每个节点与前一层的每个节点相连，另有一个输入恒为1的偏移节点。")]
    return [_para("A neural network is made of layers, and each layer of neurons. ", FigRef("network"),
                  " shows the three-layer network we use: the input layer on the left takes the sample, the output "
                  "layer on the right gives the network's output, and the hidden layer lies between them. The hidden "
                  "and output layers are fully connected: each of their nodes is joined to every node of the layer "
                  "before, and to a bias node whose value is always 1.")]


def _forward_notes(lang: str) -> list:
    """Part 1's section on the forward pass, in our words."""
    if lang == "zh":
        return [_para("前向传播从输入层开始：输入层的输出传入隐藏层，算出$\\overrightarrow{y_{\\text{隐藏层}}}$；"
                      "它再作为输出层的输入，算出$\\overrightarrow{y_{\\text{输出层}}}$，即整个网络的输出。"
                      "训练时，后向传播要用到前向传播算出的每层输出；推理时，输出层的输出就是推理的结果。")]
    return [_para("The forward pass starts at the input layer: its output goes into the hidden layer, which computes "
                  "$\\overrightarrow{y_{\\text{hidden layer}}}$; that in turn is the output layer's input, which "
                  "computes $\\overrightarrow{y_{\\text{output layer}}}$, the network's output. In training, the "
                  "backward pass uses every layer's output from the forward pass; in inference, the output layer's "
                  "output is the result.")]


def _part1_notes(lang: str) -> dict:
    """Our own short lead-ins to part 1's sections (the article's prose is not copied)."""
    if lang == "zh":
        return {
            "neuron": [_para("一个神经元有一个偏移$b$和若干权重$w$，接受输入$x$，输出$y$，$f$为激活函数：")],
            "gradient descent": [_para("目标函数度量输出与真实值的误差；沿梯度的反方向更新参数，$\\eta$为学习率：")],
            "backpropagation": [_para("隐藏层的参数同样按梯度下降更新；它的梯度要从输出层反向逐层求出：")],
            "summary": [_para("训练：前向传播、后向传播、更新参数；推理：只做前向传播：")],
        }
    return {
        "neuron": [_para("A neuron has a bias $b$ and weights $w$; it takes inputs $x$ and gives $y$, "
                         "$f$ being the activation:")],
        "gradient descent": [_para("The objective measures the error of the output against the true value; "
                                   "parameters move against the gradient, $\\eta$ being the learning rate:")],
        "backpropagation": [_para("The hidden layer's parameters follow the same rule; their gradient is found "
                                  "backwards, layer by layer, from the output:")],
        "summary": [_para("Training: forward pass, backward pass, update; inference: the forward pass alone:")],
    }


# -- rendering ----------------------------------------------------------------------------

class _Format:
    def __init__(self, doc: Document):
        self.numbers = {n.label: n.number for n in doc.equations}
        self.figure_numbers = {f.name: k for k, f in enumerate(doc.figures, 1)}
        self.lang = doc.lang
        self.table_count = 0

    def figure_word(self) -> str:
        return DOC_WORDS[self.lang]["figure"] + (" " if self.lang == "en" else "")

    def item(self, item) -> dict:
        if isinstance(item, Numbered):
            return {"kind": "equation", "tex": item.equation.tex, "number": item.number}
        if isinstance(item, Display):
            return {"kind": "display", "tex": item.equation.tex}
        if isinstance(item, Para):
            return {"kind": "para", "text": self.para(item), "lead": False}
        if isinstance(item, Bullets):
            return {"kind": "bullets", "entries": [self.para(p) for p in item.items]}
        if isinstance(item, Figure):
            return self.figure(item)
        if isinstance(item, Table):
            self.table_count += 1
            return {"kind": "table", "caption": self.text(item.caption), "number": self.table_count,
                    "header": [self.text(h) for h in item.header],
                    "rows": [[self.text(cell) for cell in row] for row in item.rows]}
        raise TypeError(f"item: unknown {type(item).__name__}")

    def section(self, s: Section, depth: int = 1) -> dict:
        return {"title": self.text(s.title), "anchor": s.anchor, "depth": depth, "last": False,
                "content": self.items(s.items), "sections": [self.section(sub, depth + 1) for sub in s.sections]}

    def items(self, items) -> list[dict]:
        """Each item; a paragraph that leads into an equation is marked to stay on its page."""
        out = [self.item(i) for i in items]
        for here, after in zip(out, out[1:]):
            if here["kind"] == "para" and after["kind"] in ("equation", "display"):
                here["lead"] = True
        return out


FLAVORS = ("jekyll", "cnblogs")
_MARKDOWN_PUNCTUATION = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def protect_inline(tex: str) -> str:
    """Inline maths that a plain Markdown converter gives back unchanged: a backslash before punctuation
    doubled (Markdown would eat it), ``_`` and ``*`` escaped (Markdown would emphasise)."""
    out = []
    for k, ch in enumerate(tex):
        nxt = tex[k + 1] if k + 1 < len(tex) else ""
        if ch == "\\" and nxt in _MARKDOWN_PUNCTUATION:
            out.append("\\\\")
        elif ch in "_*":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


class _Markdown(_Format):
    def __init__(self, doc: Document, stem: str | None, embed: bool = False, protect: bool = False):
        super().__init__(doc)
        self.stem = stem
        self.embed = embed
        self.protect = protect
        self.figure_count = 0

    def text(self, text: str) -> str:
        if not self.protect:
            return text
        pieces = text.split("$")
        return "$".join(protect_inline(p) if k % 2 else p for k, p in enumerate(pieces))

    def para(self, p: Para) -> str:
        out = ""
        for part in p.parts:
            if isinstance(part, Ref):
                out += f"({self.numbers[part.label]})"
            elif isinstance(part, FigRef):
                out += f"{self.figure_word()}{self.figure_numbers[part.name]}"
            elif isinstance(part, Link):
                out += f"[{part.text}]({part.url})"
            elif isinstance(part, Code):
                out += f"`{part.text}`"
            else:
                out += self.text(part.replace("``", "`"))
        return out

    def figure(self, f: Figure) -> dict:
        self.figure_count += 1
        if self.embed:
            data = base64.b64encode(f.picture.svg().encode("utf-8")).decode("ascii")
            src = f"data:image/svg+xml;base64,{data}"
        elif self.stem:
            src = f"{self.stem}-{f.name}.svg"
        else:
            return {"kind": "none"}
        return {"kind": "figure", "src": src, "caption": self.text(f.caption), "number": self.figure_count}


#: An aligned derivation with this many lines or more is set as an ``align``, which may break across pages.
TALL = 5


class _Latex(_Format):
    def item(self, item) -> dict:
        out = super().item(item)
        if out["kind"] == "equation":
            tex, start, end = item.equation.tex, "\\begin{aligned}\n", "\n\\end{aligned}"
            rows = tex[len(start):-len(end)].split(" \\\\\n") if tex.startswith(start) else []
            # a page may break between the steps of a derivation, not inside a step broken across lines
            out["rows"] = [(row, rows[k + 1].startswith("&\\quad") if k + 1 < len(rows) else False)
                           for k, row in enumerate(rows)] if len(rows) >= TALL else []
        return out

    def text(self, text: str) -> str:
        """Escape plain text, keep ``$maths$`` as it is."""
        pieces = text.split("$")
        return "$".join(tex_escape(p) if k % 2 == 0 else p for k, p in enumerate(pieces))

    def para(self, p: Para) -> str:
        out = ""
        for part in p.parts:
            if isinstance(part, Ref):
                out += rf"\eqref{{eq:{self.numbers[part.label]}}}"
            elif isinstance(part, FigRef):
                out += self.figure_word().replace(" ", "~") + rf"\ref{{fig:{part.name}}}"
            elif isinstance(part, Link):
                out += self.text(part.text) + rf"\\ \url{{{part.url}}}"  # the address on a line of its own
            elif isinstance(part, Code):  # a long name may break after / and _
                code = tex_escape(part.text).replace("/", r"/\allowbreak{}").replace(r"\_", r"\_\allowbreak{}")
                out += rf"\texttt{{{code}}}"
            else:
                out += self.text(part.replace("``", ""))
        return out

    def figure(self, f: Figure) -> dict:
        return {"kind": "figure", "tikz": f.picture.tikz(), "caption": self.text(f.caption), "name": f.name}


def _render(template: str, doc: Document, fmt: _Format, **extra) -> str:
    sections = [fmt.section(s) for s in doc.sections]
    last = sections[-1] if sections else None
    while last and last["sections"]:
        last = last["sections"][-1]
    if last:
        last["last"] = True  # the section the document ends in
    return environment().get_template(template).render(
        title=fmt.text(doc.title), lang=doc.lang, words=DOC_WORDS[doc.lang],
        intro=fmt.items(doc.intro), sections=sections, **extra)


# -- notebooks -----------------------------------------------------------------------------

class Shown:
    """A derivation that displays itself in Jupyter as rendered equations (Markdown with maths)."""

    def __init__(self, doc: Document):
        self.document = doc

    def _repr_markdown_(self) -> str:
        fmt = _Markdown(self.document, None, embed=True)
        return environment().get_template("doc.md.j2").render(
            title=self.document.title, lang=self.document.lang, words=DOC_WORDS[self.document.lang],
            intro=fmt.items(self.document.intro),
            sections=[fmt.section(s) for s in self.document.sections], front_matter=False, protect=False)

    def _repr_latex_(self) -> str:
        """Equations only, each numbered as in the document: for front ends that render text/latex."""
        return "\n".join(rf"$$\begin{{equation}}{n.equation.tex}\tag{{{n.number}}}\end{{equation}}$$"
                         for n in self.document.equations)

    def __repr__(self) -> str:
        return f"<derivation: {self.document.title} ({len(self.document.equations)} equations)>"


def show(*names, chain: bool = False, lang: str = "en") -> Shown:
    """``show("linear")``, ``show("linear", "sigmoid", "half_sse", chain=True)`` or ``show("article")``."""
    if not names:
        raise ValueError("names: give an op, several ops, or 'article'")
    if names == ("article",):
        return Shown(article_document(lang))
    if chain:
        return Shown(chain_document(names, lang))
    return Shown(ops_document(names, lang))
