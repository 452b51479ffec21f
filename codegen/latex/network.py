"""LaTeX for a network composed into one op: its layers, the forward pass, the gradient named at every
node (each from the nodes that read it: a sum over them where a node has several), the parameters'
gradients through them, in index form and, where every statement has one, in matrix form."""
from __future__ import annotations

import sympy as sp

from derive.define.network import Add, Concat
from derive.engine.network import Composed
from codegen.latex.blocks import Block, _eq, _matrix_text, _partial, blocks_latex, display, forward_blocks, \
    image_convention, notation
from codegen.latex.notation import ArticleLatex, Notation, name_tex, words

WORDS = {
    "en": {"network": "The network, layer by layer", "sizes": "Sizes computed from others",
           "errors": "The error term of every node, $\\delta^{u} = \\frac{\\partial E}{\\partial u}$, from the "
                     "error terms of the nodes that read it (their sum, where several do), last node first",
           "gradients": "The gradient of the input and of each parameter, through the error terms of the nodes that read it",
           "matrix": "The same, as matrices (rows index the batch; a gradient has its parameter's shape)",
           "no matrix": "(no whole-array form: index form only)", "add": "the sum of", "concat": "joined along the last axis",
           "of": "of", "shared": "shared:", "given": "given:"},
    "zh": {"network": "网络结构（逐层）", "sizes": "由其他尺寸算出的尺寸",
           "errors": "每个节点的误差项 $\\delta^{u} = \\frac{\\partial E}{\\partial u}$ 由读取它的节点的误差项求得"
                     "（有多个读取者时为它们之和），从最后一个节点往前",
           "gradients": "输入和各参数的梯度，经由读取它的节点的误差项",
           "matrix": "同样的过程，写成矩阵（行对应批次；梯度与其参数同形）",
           "no matrix": "（没有整体的矩阵形式：只有下标形式）", "add": "相加：", "concat": "沿最后一维拼接：",
           "of": "作用于", "shared": "共享：", "given": "已知："},
}


def network_blocks(composed: Composed, d, lang: str = "en", form: str = "index") -> list[Block]:
    """The network's derivation: its layers, forward, error terms and gradients (``form``: index or
    matrix, where there is one)."""
    w, colon = WORDS[lang], "：" if lang == "zh" else ":"
    nt = notation(composed.op)  # the op's own names, which derive verify reads back (δ^{y^{(1)}})
    printer = ArticleLatex(nt, lang)
    blocks = [Block(text=f"{w['network']}{colon}")] + [Block(text=line) for line in layer_lines(composed, printer, lang)]
    if composed.relations:
        sizes = ", ".join(f"${printer.doprint(s)} = {printer.doprint(v)}$" for s, v in composed.relations.items())
        blocks.append(Block(text=f"{w['sizes']}{colon} {sizes}."))
    blocks.append(Block(text=f"{words(lang)['forward']}{colon}"))
    blocks += forward_blocks(d, lang, "index")
    blocks.append(Block(text=f"{words(lang)['backward']}{colon}"))
    statements = error_terms(d) + gradients(d)
    if form == "matrix":
        matrix = forward_matrix_blocks(d, nt, printer)
        for (lhs, text), (element, rhs) in zip(matrix_rows(d, nt, printer), statements):
            matrix.append(Block(equation=_matrix_equation(lhs, text)) if text else
                          _eq(printer, element, (rhs,)))
        return blocks + [Block(text=f"{w['matrix']}{colon}")] + image_convention(matrix, lang) + matrix
    blocks.append(Block(text=f"{w['errors']}{colon}"))
    blocks += [_eq(printer, lhs, (_partial(of), rhs)) for lhs, of, rhs in error_rows(d)]
    blocks.append(Block(text=f"{w['gradients']}{colon}"))
    blocks += [_eq(printer, lhs, (rhs,)) for lhs, rhs in gradients(d)]
    return blocks


def matrix_rows(d, nt: Notation, printer: ArticleLatex) -> list:
    """(left-hand side, its matrix form or None) for every error term and gradient."""
    return [(lhs, _matrix_text(d, nt, printer, expr, index, shape)[0])
            for lhs, expr, index, shape in matrix_statements(d, nt)]


def forward_matrix_blocks(d, nt: Notation, printer: ArticleLatex) -> list[Block]:
    """The forward pass in matrix form: each node's whole-array form, or its index form where it has none."""
    blocks = []
    for node in d.op.intermediates:
        if not node.index:
            blocks.append(_eq(printer, sp.Symbol(node.name), (node.definition,)))
            continue
        text, _ = _matrix_text(d, nt, printer, node.definition, node.index, node.shape)
        blocks.append(Block(equation=_matrix_equation(nt.matrix(node.name, len(node.index)), text)) if text
                      else _eq(printer, node[node.index], (node.definition,)))
    return blocks


def _matrix_equation(lhs, text):
    from codegen.latex.blocks import Equation
    return Equation(f"{lhs} = {text}", sp.Symbol(lhs), ())


def layer_lines(composed: Composed, printer: ArticleLatex, lang: str) -> list[str]:
    """One line per layer: the node it computes, the op, what it reads, its parameters and hyper-parameters."""
    w = WORDS[lang]
    lines = []
    params = {}
    for name, (owner, tensor) in composed.parameters.items():
        params.setdefault(owner, []).append(tensor)
    for name, (layer, op, node) in composed.nodes.items():
        shape = ", ".join(printer.doprint(s) for s in node.shape) if node.shape else ""
        target = f"${printer.doprint(sp.Symbol(node.name)) if not node.index else name_tex(node.name)}$"
        reads = ", ".join(f"${name_tex(r)}$" for r in layer.reads)
        if isinstance(layer, Add):
            lines.append(f"{target} $({shape})$: {w['add']} {reads}")
            continue
        if isinstance(layer, Concat):
            lines.append(f"{target} $({shape})$: {w['concat']} {reads}")
            continue
        mine = params.get(layer.name, [])
        owned = ", ".join(f"${printer.notation.matrix(t.name, t.rank)}$" for t in mine
                          if composed.op.input(t.name).differentiable)
        given = ", ".join(f"${printer.doprint(t[tuple(sp.Symbol(c, integer=True) for c in 'nk'[:t.rank])])}$"
                          for t in mine if not composed.op.input(t.name).differentiable)
        shared = ", ".join(f"${printer.notation.matrix(f'{k}_{v}', 2)}$" for k, v in layer.share.items())
        hyper = ", ".join(f"{k} = {v}" for k, v in layer.hyper.items())
        extra = "; ".join(p for p in (owned, shared and f"{w['shared']} {shared}", given and f"{w['given']} {given}",
                                      hyper) if p)
        lines.append(f"{target}" + (f" $({shape})$" if shape else "") + f": `{op.name}` {w['of']} {reads}"
                     + (f"; {extra}" if extra else ""))
    return lines


def error_rows(d):
    """(δ^{u}, u, its formula) for every node, last first."""
    rows = []
    for a in d.adjoints:
        element = a.tensor[a.index] if a.index else a.tensor
        node = a.node[a.index] if a.index else sp.Symbol(a.node.name)
        rows.append((element, node, display(d, a.expr)))
    return rows


def error_terms(d):
    return [(element, rhs) for element, _, rhs in error_rows(d)]


def gradients(d):
    return [(_partial(g.element), display(d, g.expr)) for g in d.gradients]


def matrix_statements(d, nt: Notation):
    out = [(nt.matrix(a.tensor.name, len(a.index)), display(d, a.expr), a.index, a.node.shape) for a in d.adjoints]
    out += [(rf"\frac{{\partial {nt.objective}}}{{\partial {nt.matrix(g.input.name, g.input.tensor.rank)}}}",
             display(d, g.expr), g.index, g.input.shape) for g in d.gradients]
    return out


def network_latex(composed: Composed, d, lang: str = "en", form: str = "index") -> str:
    """The blocks as LaTeX: prose lines and numbered equations."""
    return blocks_latex(network_blocks(composed, d, lang, form))
