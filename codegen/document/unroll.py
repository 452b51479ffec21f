"""A document for a recurrent cell unrolled over T steps: the cell over time with a picture, the forward
pass at step t, backpropagation through time (index form) and the same as matrices."""
from __future__ import annotations

import sympy as sp

from codegen.document.document import DOC_WORDS, Code, Document, Figure, Section, _para, _Writer
from codegen.document.figures import Arrow, Box, Label, Picture, Text
from codegen.latex import unroll as unroll_tex
from codegen.latex.notation import name_tex
from derive.engine.unroll import STEPS, Unrolled

INTRO = {
    "en": "The recurrent cell {cell} unrolled over ${T}$ steps, and backpropagation through time derived from the "
          "cell's own derivation by the chain rule on the unrolled graph (nothing is differentiated afresh); every "
          "equation is a printed result, checked before it was printed: {certificate}.",
    "zh": "循环单元 {cell} 按时间展开 ${T}$ 步；随时间反向传播由单元自身的推导、在展开的计算图上用链式法则求得（不重新求导）；"
          "每个公式都是推导结果的打印，打印前已经验证：{certificate}。",
}
CAPTION = {"en": "The cell over time: each step reads its input and the states before it, and passes its states "
                 "on; the gradient g comes back from the step after (dashed)",
           "zh": "按时间展开的单元：每一步读入本步输入和上一步的状态，再把状态传给下一步；梯度 g 从下一步传回（虚线）"}
UNROLLED = {"en": "The cell over time", "zh": "按时间展开"}


def unrolled_document(u: Unrolled, lang: str = "en", steps: sp.Expr = STEPS, title: str | None = None) -> Document:
    """The whole write-up of a cell's backpropagation through time."""
    w = DOC_WORDS[lang]
    writer = _Writer(lang)
    big_t = unroll_tex.ArticleLatex(unroll_tex.unroll_notation(u), lang).doprint(steps)
    if title is None:
        title = (f"随时间反向传播的推导：{u.op.name}" if lang == "zh" else
                 f"Backpropagation through time derived: {u.op.name}")
    before, after = INTRO[lang].format(cell="\0", T=big_t, certificate=u.certificate).split("\0")
    intro = [_para(before, Code(u.op.name), after)]
    blocks = unroll_tex.unroll_blocks(u, lang, steps, "index")
    texts = [k for k, b in enumerate(blocks) if not b.equation]
    unrolled = Section(UNROLLED[lang], "unrolled", writer.items(blocks[:1]))
    unrolled.items.append(Figure("unrolled", CAPTION[lang], unrolled_picture(u)))
    forward = Section(w["forward"], "forward", writer.items(blocks[texts[1]:texts[2]]))
    backward = Section(w["backward"], "backward", writer.items(blocks[texts[2]:]))
    matrix_blocks = unroll_tex.unroll_blocks(u, lang, steps, "matrix")
    matrix = Section(w["matrix"], "matrix", writer.items(matrix_blocks[2:]))
    return Document(title, lang, intro, [unrolled, forward, backward, matrix])


def unrolled_picture(u: Unrolled) -> Picture:
    """Four steps left to right (1, t, t + 1, T, with dots between): each cell box reads x from below, the
    states from the box before, sends its states to the next and up to the loss; g comes back dashed."""
    states = [s.input for s in u.states]
    box_w, box_h, gap, x0, y0 = 90.0, 46.0, 70.0, 30.0, 60.0
    steps = [("1", "0"), ("t", "t-1"), ("t+1", "t"), ("T", "T-1")]
    shapes = []
    for k, (step, _) in enumerate(steps):
        x = x0 + k * (box_w + gap)
        shapes.append(Box(x, y0, box_w, box_h, "#fde8d7"))
        shapes.append(Text(x + box_w / 2, y0 + box_h / 2, Label(u.op.name), size=12, plain=True))
        shapes.append(Arrow(x + box_w / 2, y0 + box_h + 34, x + box_w / 2, y0 + box_h))
        shapes.append(Text(x + box_w / 2, y0 + box_h + 44, Label("x", step, tex=f"x_{{{step}}}"), size=13))
        shapes.append(Arrow(x + box_w / 2, y0, x + box_w / 2, y0 - 26))
        top = ", ".join(f"{name_tex(s)}_{{{step}}}" for s in states)
        shapes.append(Text(x + box_w / 2, y0 - 36, Label(", ".join(f"{s}{step}" for s in states), tex=top), size=12))
        if k == 0:  # the first states come in from the left
            shapes.append(Arrow(x - 26, y0 + box_h / 3, x, y0 + box_h / 3))
        right = x + box_w
        if k + 1 < len(steps):
            between = steps[k + 1][1]
            dots = k in (0, 2)  # 1 ... t and t + 1 ... T
            shapes.append(Arrow(right, y0 + box_h / 3, right + gap, y0 + box_h / 3))
            shapes.append(Arrow(right + gap, y0 + 2 * box_h / 3, right, y0 + 2 * box_h / 3, dashed=True))
            label = "⋯" if dots else ", ".join(f"{name_tex(s)}_{{{between}}}" for s in states)
            shapes.append(Text(right + gap / 2, y0 + box_h / 3 - 10, Label(label, tex=r"\cdots" if dots else label),
                               size=11, halo=True))
            g = "g_{t}" if k == 1 else ""
            if g:
                shapes.append(Text(right + gap / 2, y0 + 2 * box_h / 3 + 11, Label("g", "t", tex=g), size=11, halo=True))
    width = x0 + len(steps) * (box_w + gap) - gap + 30
    return Picture(width, y0 + box_h + 64, tuple(shapes))
