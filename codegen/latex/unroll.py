"""LaTeX for a recurrent cell unrolled over T steps: the forward pass at step t, backpropagation through
time as the recursion on the gradient arriving at each step, the cell's error terms at step t, and the
gradients, the weights' summed over the steps (``derive.engine.unroll``)."""
from __future__ import annotations

import dataclasses

import sympy as sp

from codegen.latex.blocks import (Block, Equation, _eq, _matrix_blocks, _matrix_name, _matrix_text, _partial,
                                  blocks_latex, notation)
from codegen.latex.breaking import _split_top
from codegen.latex.notation import ArticleLatex, Notation, name_tex, words
from derive.engine.unroll import STEP, STEPS, Unrolled, cell_steps

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
    elements = dict(nt.elements) | state_names(u.states)
    timed = {str(e.base.label) for e in _elements(u)} - cell_steps(u).weights  # all but the weights have a step
    return dataclasses.replace(nt, elements=elements, upstream=nt.upstream | {s.upstream for s in u.states},
                               timed=frozenset(timed))


def state_names(states) -> dict:
    """Each state's arriving gradient ``g^{h}``, direct one ``G^{h}`` and error term ``\\delta^{c}``, by the
    names the unrolled derivation gives them (``g``, ``G_h``, ``dc``)."""
    names = {}
    for s in states:
        names[s.upstream] = f"g^{{{name_tex(s.input)}}}"
        names[s.direct] = f"G^{{{name_tex(s.input)}}}"
        names[f"d{s.input}"] = rf"\delta^{{{name_tex(s.input)}}}"
    return names


def _elements(u: Unrolled) -> set:
    exprs = [x for row in u.forward for x in row[:2]] + [x for row in u.arriving for x in row] \
        + [x for row in u.errors for x in row[:3]] + [x for row in u.gradients for x in row[:2]]
    return {e for x in exprs for e in sp.preorder_traversal(x) if isinstance(e, sp.Indexed)}


def unroll_blocks(u: Unrolled, lang: str = "en", steps: sp.Expr = STEPS, form: str = "index") -> list[Block]:
    """The blocks of the unrolled derivation; ``steps`` is how the number of steps is written (T, or a number);
    ``form``: index, or matrix (each statement that has one; the others in index form)."""
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
    if form == "matrix":
        return blocks + matrix_blocks(u, lang, steps)
    blocks += [_eq(printer, element, (definition,)) for element, definition, _ in u.forward]
    blocks.append(Block(text=w["arriving"].format(T=big_t) + colon))
    blocks += [_eq(printer, element, (direct + later,)) for element, direct, later in u.arriving]
    blocks.append(Block(text=w["errors"] + colon))
    blocks += [_eq(printer, element, (_partial(node), rhs)) for element, node, rhs, _ in u.errors]
    blocks.append(Block(text=w["gradients"] + colon))
    blocks += [_eq(printer, _partial(element), (rhs.xreplace(at),)) for element, rhs, _, _ in u.gradients]
    return blocks


def step_notation(u: Unrolled, step: sp.Expr) -> Notation:
    """The cell's matrix names at one step: each per-step array subscripted with the step (``H_{t}``), the
    states it reads with the step before (``H_{t-1}``), the weights as they are."""
    nt = notation(u.op)
    printer = ArticleLatex(nt)
    at, before = printer._index(step), printer._index(step - 1)
    moved = cell_steps(u)
    matrices = dict(nt.matrices)
    for inp in u.op.inputs:
        if inp.name not in moved.weights:
            matrices[inp.name] = f"{nt.matrix(inp.name, inp.tensor.rank)}_{{{before if inp.name in moved.previous else at}}}"
    for node in u.op.intermediates:
        state = moved.renamed.get(node.name)
        rank = len(node.index)
        matrices[node.name] = f"{nt.matrix(state or node.name, rank)}_{{{at}}}"
        label = f"d{node.name}"
        delta = rf"\boldsymbol{{\delta}}^{{{_matrix_name(state, rank)}}}" if state else nt.matrix(label, rank)
        matrices[label] = f"{delta}_{{{at}}}"
    for s in u.states:
        matrices[s.upstream] = rf"\mathbf{{g}}^{{{name_tex(s.input)}}}_{{{at}}}"
    return dataclasses.replace(nt, matrices=matrices)


def matrix_blocks(u: Unrolled, lang: str, steps: sp.Expr) -> list[Block]:
    """The forward pass, the recursion and the gradients as matrices (rows index the batch), each statement
    printed from the cell's own at its step; a statement with no matrix form in index form."""
    w, colon = WORDS[lang], "：" if lang == "zh" else ":"
    d, t = u.cell, STEP
    timed = ArticleLatex(unroll_notation(u), lang)

    def text(expr, index, shape, step):
        nt = step_notation(u, step)
        return _matrix_text(d, nt, ArticleLatex(nt, lang), expr, index, shape)[0]

    now = step_notation(u, t)
    blocks = [Block(text=words(lang)["layout"])] + _matrix_blocks(d, now, ArticleLatex(now, lang), words(lang), True)
    blocks.append(Block(text=w["arriving"].format(T=timed.doprint(steps)) + colon))
    through = {g.input.name: g for g in d.backprop}
    for (element, direct, later), s in zip(u.arriving, u.states):
        g = through[s.input]
        tex = text(g.expr, g.index, g.input.shape, t + 1)
        lhs = now.matrices[s.upstream]
        blocks.append(Block(equation=Equation(f"{lhs} = \\mathbf{{G}}^{{{name_tex(s.input)}}}_{{t}} + {tex}", element,
                                              (direct + later,))) if tex else _eq(timed, element, (direct + later,)))
    blocks.append(Block(text=w["errors"] + colon))
    for (element, node, rhs, _), a in zip(u.errors, d.adjoints):
        tex = text(a.expr, a.index, a.node.shape, t)
        blocks.append(Block(equation=Equation(f"{now.matrices[a.tensor.name]} = {tex}", element, (rhs,))) if tex
                      else _eq(timed, element, (_partial(node), rhs)))
    blocks.append(Block(text=w["gradients"] + colon))
    for (element, rhs, inp, kind), g in zip(u.gradients, d.backprop):
        step = {"step": t, "first": sp.S.One, "weight": t}[kind]
        tex = text(g.expr, g.index, g.input.shape, step)
        wrt = step_notation(u, step).matrices.get(inp.name) or now.matrix(inp.name, inp.tensor.rank)
        if tex and kind == "weight":
            several = len(_split_top(tex, "+")) > 1 or len(_split_top(tex, "-")) > 1  # a sum: in parentheses
            body = f"\\left({tex}\\right)" if several else tex
            tex = f"\\sum_{{t = 1}}^{{{timed.doprint(steps)}}} {body}"
        lhs = rf"\frac{{\partial {now.objective}}}{{\partial {wrt}}}"
        blocks.append(Block(equation=Equation(f"{lhs} = {tex}", _partial(element), (rhs,))) if tex
                      else _eq(timed, _partial(element), (rhs.xreplace({STEPS: steps}),)))
    return blocks


def unroll_latex(u: Unrolled, lang: str = "en", steps: sp.Expr = STEPS, form: str = "index") -> str:
    """The blocks as LaTeX: prose lines and numbered equations."""
    return blocks_latex(unroll_blocks(u, lang, steps, form))
