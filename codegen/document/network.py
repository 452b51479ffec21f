"""A document for a network composed into one op (a CNN chain, a network file): the layers with a
picture of the graph, the forward pass, the error term of every node and each gradient, index and
matrix form."""
from __future__ import annotations

from codegen.document import figures
from codegen.document.document import DOC_WORDS, Document, Figure, Para, Section, _para, _Writer
from codegen.document.figures import Arrow, Box, Label, Picture, Text
from codegen.latex import network as network_tex
from codegen.latex.notation import name_tex
from derive.define.network import Add
from derive.engine.network import Composed

INTRO = {
    "en": "The network below was composed into one op, each layer's definition written in the network's names, "
          "and derived by SymPy: the error term of every node from the error terms of the nodes that read it, "
          "then each parameter's gradient; every equation is a printed result, and the derivation was checked "
          "before it was printed: {certificate}.",
    "zh": "下面的网络被组合成一个算子（每层的定义用网络中的名字写出），由 SymPy 推导：每个节点的误差项由读取它的节点的误差项求得，"
          "再求各参数的梯度；每个公式都是推导结果的打印，打印前已经验证：{certificate}。",
}
CAPTION = {"en": "The network: each node, the op that computes it (and its parameters), and the nodes it reads",
           "zh": "网络：每个节点、计算它的算子（及其参数），以及它读取的节点"}


def network_document(composed: Composed, d, lang: str = "en", title: str | None = None) -> Document:
    """The whole write-up of a network's derivation."""
    w = DOC_WORDS[lang]
    writer = _Writer(lang)
    nt = network_tex.notation(composed.op)
    printer = network_tex.ArticleLatex(nt, lang)
    if title is None:
        title = ("网络的前向和后向传播推导：" if lang == "zh" else "Forward and backward propagation derived: ") \
            + composed.op.name.replace(",", " → ")
    intro = [_para(INTRO[lang].format(certificate=d.certificate))]
    blocks = network_tex.network_blocks(composed, d, lang, "index")
    forward_at = next(k for k, b in enumerate(blocks) if b.text.startswith(network_tex.words(lang)["forward"]))
    backward_at = next(k for k, b in enumerate(blocks) if b.text.startswith(network_tex.words(lang)["backward"]))
    network = Section(w["network"], "network",
                      [Para((line,)) for line in network_tex.layer_lines(composed, printer, lang)])
    if composed.relations:
        network.items += writer.items([b for b in blocks[:forward_at] if b.text.startswith(
            network_tex.WORDS[lang]["sizes"])])
    network.items.append(graph_figure(composed, lang))
    forward = Section(w["forward"], "forward", writer.items(blocks[forward_at + 1:backward_at]))
    backward = Section(w["backward"], "backward", writer.items(blocks[backward_at + 1:]))
    sections = [network, forward, backward]
    matrix = network_tex.network_blocks(composed, d, lang, "matrix")
    at = next(k for k, b in enumerate(matrix) if b.text.startswith(network_tex.WORDS[lang]["matrix"]))
    if any(text for _, text in network_tex.matrix_rows(d, nt, printer)):  # some statement has a matrix form
        sections.append(Section(w["matrix"], "matrix", writer.items(matrix[at:])))
    return Document(title, lang, intro, sections)


def graph_figure(composed: Composed, lang: str) -> Figure:
    return Figure("network", CAPTION[lang], graph_picture(composed, lang))


def graph_picture(composed: Composed, lang: str) -> Picture:
    """Nodes top to bottom in computing order; a node's op on the arrow from the node above it, its
    parameters beside; a read of an earlier node (a skip connection) drawn down the right-hand side."""
    box_w, box_h, step, x0 = 170.0, 30.0, 66.0, 20.0
    scalar = DOC_WORDS[lang]["scalar"]
    order = [composed.net.input] + list(composed.nodes)
    shapes, row = [], {}
    x = composed.op.inputs[0].tensor

    def shape_text(shape):
        return figures.shape_label([str(s) for s in shape], scalar)

    def box(name, shape, y, fill):
        shapes.append(Box(x0, y, box_w, box_h, fill))
        shapes.append(Text(x0 + 12, y + box_h / 2, _label(name), size=14, anchor="start"))
        text = shape_text(shape)
        shapes.append(Text(x0 + box_w - 10, y + box_h / 2, text, size=12, anchor="end", plain=text.tex == ""))

    y = 20.0
    box(composed.net.input, x.shape, y, "#dbe9f6")
    row[composed.net.input] = y
    params = {}
    for name, (owner, tensor) in composed.parameters.items():
        params.setdefault(owner, []).append(tensor)
    widest, skips = x0 + box_w, 0
    for name, (layer, op, node) in composed.nodes.items():
        previous = order[order.index(name) - 1]
        y += step
        mid = x0 + box_w / 2
        what = op.name if op is not None else ("+" if isinstance(layer, Add) else "concat")
        if previous in layer.reads:
            shapes.append(Arrow(mid, y - step + box_h, mid, y))
        shapes.append(Text(mid + 12, y - (step - box_h) / 2, Label(what), size=12, anchor="start", plain=True))
        px = mid + 20 + 7.5 * len(what) + 14
        for t in params.get(layer.name, []):
            label = Label(*_parts(t.name), tex=f"{name_tex(t.name)}:\\ {shape_text(t.shape).math()}",
                          after=f": {shape_text(t.shape).base}")
            shapes.append(Text(px, y - (step - box_h) / 2, label, size=12, anchor="start"))
            px += 8 * len(t.name + shape_text(t.shape).base) + 34
        widest = max(widest, px)
        for read in layer.reads:
            if read == previous:
                continue
            skips += 1  # down the right-hand side, into the node's right edge
            side = x0 + box_w + 18.0 * skips
            top = row[read] + box_h / 2
            shapes += [Arrow(x0 + box_w, top, side, top, head=False), Arrow(side, top, side, y + box_h / 2, head=False),
                       Arrow(side, y + box_h / 2, x0 + box_w, y + box_h / 2)]
        last = node is composed.op.output
        box(name, node.shape, y, "#e3f1de" if last else "#fde8d7")
        row[name] = y
    widest = max(widest, x0 + box_w + 18.0 * skips)
    return Picture(widest + 20, y + box_h + 20, tuple(shapes))


def _parts(name: str) -> tuple:
    base, _, sub = name.partition("_")
    return base, sub


def _label(name: str) -> Label:
    base, sub = _parts(name)
    return Label(base, sub, tex=name_tex(name))
