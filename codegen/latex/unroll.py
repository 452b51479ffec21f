"""LaTeX for a recurrent cell unrolled over T steps: the forward pass at step t, backpropagation through
time as the recursion on the gradient arriving at each step, the cell's error terms at step t, and the
gradients, the weights' summed over the steps (``derive.engine.unroll``)."""
from __future__ import annotations

import dataclasses

import sympy as sp

from codegen.latex.blocks import Block, _eq, _partial, notation
from codegen.latex.notation import ArticleLatex, name_tex
from derive.engine.unroll import STEPS, Unrolled

WORDS = {
    "en": {"steps": "The cell unrolled over ${T}$ steps: step $t$ reads $x_{{t}}$ and {previous} and computes {next}, "
                    "with the same weights at every step. The loss may read the states of every step: {direct} "
                    "{is_} the gradient it sends them directly ($0$ where it does not read them)",
           "forward": "Forward, at each step $t = 1, \\dots, {T}$",
           "arriving": "Backpropagation through time, from $t = {T}$ down to $t = 1$. The gradient arriving at step "
                       "$t$'s outputs, from the loss and from step $t + 1$ (at $t = {T}$ the first term alone)",
           "errors": "The cell's error terms at step $t$, from the gradients arriving there",
           "gradients": "The gradients: of each step's input, of the first state, and of the weights, summed over "
                        "the steps"},
    "zh": {"steps": "将单元按时间展开 ${T}$ 步：第 $t$ 步读入 $x_{{t}}$ 和 {previous}，算出 {next}，每一步用同一组权重。"
                    "损失可以读取每一步的状态：{direct} 是它直接传给这些状态的梯度（不读取时为 $0$）",
           "forward": "前向传播，每一步 $t = 1, \\dots, {T}$",
           "arriving": "随时间反向传播，从 $t = {T}$ 到 $t = 1$。到达第 $t$ 步输出的梯度来自损失和第 $t + 1$ 步"
                       "（$t = {T}$ 时只有第一项）",
           "errors": "第 $t$ 步单元内的误差项，由到达这一步的梯度求得",
           "gradients": "梯度：每一步的输入、初始状态，以及权重（对各步求和）"},
}


def unroll_notation(u: Unrolled):
    """The cell's names, with every per-step array timed (``h_{t-1,nk}``); each state's arriving gradient
    ``g^{h}``, its direct one ``G^{h}``, its error term ``\\delta^{c}`` (the cell's ``\\delta^{c'}``)."""
    nt = notation(u.op)
    elements = dict(nt.elements)
    for s in u.states:
        elements[s.upstream] = f"g^{{{name_tex(s.input)}}}"
        elements[s.direct] = f"G^{{{name_tex(s.input)}}}"
        elements[f"d{s.input}"] = rf"\delta^{{{name_tex(s.input)}}}"
    timed = {str(e.base.label) for e in _elements(u) if len(e.indices) and e.indices[0].has(sp.Symbol("t", integer=True))
             or str(e.base.label) in {s.input for s in u.states}}
    return dataclasses.replace(nt, elements=elements, upstream=nt.upstream | {s.upstream for s in u.states},
                               timed=frozenset(timed))


def _elements(u: Unrolled) -> set:
    exprs = [x for row in u.forward for x in row[:2]] + [x for row in u.arriving for x in row] \
        + [x for row in u.errors for x in row[:3]] + [x for row in u.gradients for x in row[:2]]
    return {e for x in exprs for e in sp.preorder_traversal(x) if isinstance(e, sp.Indexed)}


def unroll_blocks(u: Unrolled, lang: str = "en", steps: sp.Expr = STEPS) -> list[Block]:
    """The blocks of the unrolled derivation; ``steps`` is how the number of steps is written (T, or a number)."""
    w, colon = WORDS[lang], "：" if lang == "zh" else ":"
    printer = ArticleLatex(unroll_notation(u), lang)
    at = {STEPS: steps}
    big_t = printer.doprint(steps)
    states = [name_tex(s.input) for s in u.states]
    sep = "、" if lang == "zh" else ", "
    lead = w["steps"].format(T=big_t, previous=sep.join(f"${s}_{{t-1}}$" for s in states),
                             next=sep.join(f"${s}_{{t}}$" for s in states),
                             direct=sep.join(f"$G^{{{s}}}_{{t}}$" for s in states),
                             is_="is" if len(states) == 1 else "are")
    blocks = [Block(text=f"{lead}.")] if lang == "en" else [Block(text=f"{lead}。")]
    blocks.append(Block(text=w["forward"].format(T=big_t) + colon))
    blocks += [_eq(printer, element, (definition,)) for element, definition, _ in u.forward]
    blocks.append(Block(text=w["arriving"].format(T=big_t) + colon))
    blocks += [_eq(printer, element, (direct + later,)) for element, direct, later in u.arriving]
    blocks.append(Block(text=w["errors"] + colon))
    blocks += [_eq(printer, element, (_partial(node), rhs)) for element, node, rhs, _ in u.errors]
    blocks.append(Block(text=w["gradients"] + colon))
    blocks += [_eq(printer, _partial(element), (rhs.xreplace(at),)) for element, rhs, _, _ in u.gradients]
    return blocks


def unroll_latex(u: Unrolled, lang: str = "en", steps: sp.Expr = STEPS) -> str:
    """The blocks as LaTeX: prose lines and numbered equations."""
    out = []
    for b in unroll_blocks(u, lang, steps):
        out.append(f"\\begin{{equation}}\n{b.equation.tex}\n\\end{{equation}}" if b.equation else f"{b.text}\n")
    return "\n".join(out) + "\n"
