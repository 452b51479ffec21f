"""The LaTeX of one op's derivation: forward, the steps of each gradient, index and matrix form."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import sympy as sp

from derive.define.functions import used
from derive.engine.backprop import adjoint_tensor, upstream_of
from derive.engine.derivation import Derivation
from derive.define.op import Op
from derive.engine.rewrite import normalize
from derive.define.symbols import IntermediateElement

from codegen.ir import Leaf, Lowering, subtrees, without_axis
from codegen.latex.arrays import Statement, check_points, convention, whole_array
from codegen.latex.breaking import fit
from codegen.latex.explain import full_convolution
from codegen.latex.notation import ArticleLatex, MatrixForm, Notation, VectorLatex, name_tex, words


@dataclass(frozen=True)
class Equation:
    """One displayed equation: its TeX and the SymPy expressions it shows (lhs, each rhs)."""

    tex: str
    lhs: sp.Expr
    rhs: tuple
    whole_array: bool = False  # printed with codegen.latex.arrays' operations (pad, crop, ⋆), which verify does not read

    def __post_init__(self):
        object.__setattr__(self, "tex", fit(self.tex))  # nothing runs off the page

    @property
    def lines(self) -> tuple:
        return tuple(self.rhs)


@dataclass(frozen=True)
class Block:
    """Prose or an equation, in document order."""

    text: str = ""
    equation: Equation | None = None


def notation(op: Op) -> Notation:
    """The op's printing names: ``w`` for ``W``, the upstream gradient as ``g`` or ``\\delta``, the
    gradient arriving at an intermediate ``u`` (``d<u>``, ``derive.engine.backprop``) as ``\\delta^{u}``."""
    elements = {i.name: i.element for i in op.inputs if i.element}
    up = op.upstream_label
    elements[up] = op.upstream if up == "g" else r"\bar{g}"  # a tensor of the op's own is called g
    for y in op.also_outputs:  # the gradient arriving at another output u: g^{u}
        elements[upstream_of(op, y).name] = rf"{elements[up]}^{{{name_tex(y.name)}}}"
    matrices = {i.name: i.matrix for i in op.inputs if i.matrix}
    if op.upstream == r"\delta":
        matrices[up] = r"\boldsymbol{\delta}"
    elif up != "g":
        matrices[up] = r"\bar{G}"
    for node in op.intermediates:
        label = adjoint_tensor(node).name
        elements.setdefault(label, rf"\delta^{{{name_tex(node.name)}}}")
        matrices.setdefault(label, rf"\boldsymbol{{\delta}}^{{{_matrix_name(node.name, len(node.index))}}}")
    return Notation(elements, matrices, frozenset({up}), _index_letters(op, elements), op.objective)


def _matrix_name(name: str, rank: int) -> str:
    tex = name_tex(name)
    return name.upper() if rank >= 2 and len(name) == 1 and name.isalpha() else tex


def _index_letters(op: Op, elements: dict) -> dict:
    """Index letters that a tensor's elements are also called by (conv2d's column ``w`` beside its
    kernel ``w``), each printed as the first letter free in the op."""
    tensors = {elements.get(i.name, i.name) for i in op.inputs} | {n.name for n in op.intermediates}
    labels = {i.tensor.label for i in op.inputs}  # an integer tensor's name (an embedding's idx) is no index
    letters = {s.name for node in op.intermediates for s in node.definition.free_symbols | set(node.index)
               if isinstance(s, sp.Symbol) and s.is_integer and s not in labels}
    letters |= {v.name for node in op.intermediates for e in sp.preorder_traversal(node.definition)
                if isinstance(e, sp.Sum) for v, *_ in e.limits}
    taken = tensors | letters
    renamed = {}
    for letter in sorted(letters & tensors):
        free = next(c for c in "vuzrlm" if c not in taken)
        renamed[letter] = free
        taken.add(free)
    return renamed


def blocks_latex(blocks) -> str:
    """Blocks as LaTeX: prose lines, and each equation in an ``equation`` environment."""
    return "".join(f"\\begin{{equation}}\n{b.equation.tex}\n\\end{{equation}}\n" if b.equation else f"{b.text}\n\n"
                   for b in blocks)


def display(d: Derivation, expr: sp.Expr) -> sp.Expr:
    """What the reader sees: a loss's upstream gradient is 1 (E is the objective), and
    shorthand intermediates written out (batch norm's ``1/sqrt(var + eps)``), but never the output,
    which the op names (an RNN cell's ``h' = tanh(a)``)."""
    if d.op.is_loss:
        expr = expr.xreplace({d.upstream: sp.S.One})
    return inline_shorthand(expr, [n for n in d.op.intermediates if n is not d.op.output])


def shorthand(node) -> bool:
    """An intermediate that only names a formula of one other (``rstd = 1/sqrt(var + eps)``)."""
    arrays = {e for e in sp.preorder_traversal(node.definition) if isinstance(e, sp.Indexed)}
    return bool(node.index) and not node.definition.has(sp.Sum, sp.Piecewise) and len(arrays) == 1 \
        and isinstance(next(iter(arrays)), IntermediateElement) \
        and not isinstance(node.definition, sp.Function)  # (a ReLU's output, a gate σ(a^{r}) keep their names)


def inline_shorthand(expr: sp.Expr, intermediates) -> sp.Expr:
    names = {n for n in intermediates if shorthand(n)}
    return expr.replace(lambda e: isinstance(e, IntermediateElement) and e.base in names,
                        lambda e: e.base.at(*e.indices))


def op_blocks(d: Derivation, lang: str = "en", form: str = "index") -> list[Block]:
    """The blocks of an op's derivation, in index form or in matrix form."""
    if form not in ("index", "matrix"):
        raise ValueError(f"form: expected 'index' or 'matrix', got {form!r}")
    w = words(lang)
    colon = "：" if lang == "zh" else ":"
    return ([Block(text=f"{w['forward']}{colon}")] + forward_blocks(d, lang, form)
            + [Block(text=f"{w['backward']}{colon}")] + backward_blocks(d, lang, form))


def forward_blocks(d: Derivation, lang: str = "en", form: str = "index") -> list[Block]:
    """The forward definitions; in matrix form, preceded by the layout convention."""
    nt = notation(d.op)
    printer = ArticleLatex(nt, lang)
    if form == "index":
        return [_eq(printer, node[node.index] if node.index else sp.Symbol(node.name),
                    (normalize(node.definition, split=False),)) for node in d.op.intermediates] \
            + known_function_blocks(d, lang)
    if vector_indices(d.op):
        return _vector_blocks(d, nt, lang, words(lang), forward=True)
    blocks = _matrix_blocks(d, nt, printer, words(lang), forward=True)
    stated = image_convention(blocks + backward_blocks(d, lang, "matrix"), lang)  # once, for both passes
    return [Block(text=words(lang)["layout"])] + stated + blocks


def known_function_blocks(d: Derivation, lang: str) -> list[Block]:
    """One line defining the known functions the derivation uses (σ, softplus, Φ, φ)."""
    found = used(*(node.definition for node in d.op.intermediates), *(g.expr for g in d.gradients))
    if not found:
        return []
    where = {"en": "where", "zh": "其中"}[lang]
    parts = ", ".join(f"${f.tex}(a) = {f.definition_tex}$" for f in found)
    return [Block(text=f"{where} {parts}.")]


def backward_blocks(d: Derivation, lang: str = "en", form: str = "index") -> list[Block]:
    """What the upstream gradient is called, then each gradient (its steps, or its matrix form)."""
    printer = ArticleLatex(notation(d.op), lang)
    blocks = [] if d.op.is_loss else [Block(text=upstream_sentence(d, printer, lang))]
    if form == "index":
        blocks += [gradient_block(d, printer, grad) for grad in d.gradients] if d.written_out \
            else [Block(text=words(lang)["through only"])]
        return blocks + full_convolution_blocks(d, lang) + adjoint_blocks(d, lang)  # (documents: own section)
    if vector_indices(d.op):
        return blocks + _vector_blocks(d, notation(d.op), lang, words(lang), forward=False)
    compact, through = _matrix_blocks(d, notation(d.op), printer, words(lang), forward=False), \
        adjoint_matrix_blocks(d, lang)
    if through:  # each gradient has a matrix form through the intermediates: no line saying it has none
        compact = [b for b in compact if not (b.text and b.text.endswith(words(lang)["no matrix form"]))]
    return blocks + compact + through


ADJOINT_WORDS = {
    "en": "Through the intermediates: the gradient arriving at each intermediate $u$, "
          r"$\delta^{u} = \frac{\partial E}{\partial u}$, from the gradients of what reads it, last first; "
          "then each input's gradient from them:",
    "zh": "经过中间量：每个中间量 $u$ 收到的梯度 $\\delta^{u} = \\frac{\\partial E}{\\partial u}$ 由读取它的量的梯度求得，"
          "从后往前；再由它们求各输入的梯度：",
}


def adjoint_blocks(d: Derivation, lang: str) -> list[Block]:
    """The backward pass through the intermediates (``d.adjoints``), in index form."""
    if not d.adjoints:
        return []
    printer = ArticleLatex(notation(d.op), lang)
    blocks = [Block(text=ADJOINT_WORDS[lang])]
    for a in d.adjoints:
        element = a.tensor[a.index] if a.index else a.tensor
        blocks.append(_eq(printer, element, (_partial(a.node[a.index] if a.index else sp.Symbol(a.node.name)),
                                             display(d, a.expr))))
    blocks += [_eq(printer, _partial(g.element), (display(d, g.expr),)) for g in d.backprop]
    return blocks


def adjoint_matrix_blocks(d: Derivation, lang: str) -> list[Block]:
    """The same pass as matrix algebra, where each statement has one (per sample when every array
    carries the batch axis first, as attention's do)."""
    if not d.adjoints:
        return []
    nt = notation(d.op)
    printer = ArticleLatex(nt, lang)
    statements = [(nt.matrix(a.tensor.name, len(a.index)), display(d, a.expr), a.index, a.node.shape)
                  for a in d.adjoints]
    statements += [(rf"\frac{{\partial {nt.objective}}}{{\partial {nt.matrix(g.input.name, g.input.tensor.rank)}}}",
                    display(d, g.expr), g.index, g.input.shape) for g in d.backprop]
    rows = [(lhs, _matrix_text(d, nt, printer, expr, index, shape)) for lhs, expr, index, shape in statements]
    if not all(text for _, (text, _) in rows):
        return []
    per_sample = any(batch for _, (_, batch) in rows)
    note = {"en": " (for each sample: every array's first axis is the batch)",
            "zh": "（对每个样本：各数组的第一维是批次）"}[lang] if per_sample else ""
    head = {"en": "The same, as matrices", "zh": "同样的过程，写成矩阵"}[lang]
    return [Block(text=f"{head}{note}{'：' if lang == 'zh' else ':'}")] + \
        [Block(equation=Equation(f"{lhs} = {text}", sp.Symbol(lhs), ())) for lhs, (text, _) in rows]


def _matrix_text(d: Derivation, nt: Notation, printer: ArticleLatex, expr, index, shape, images: bool = True):
    """(matrix form, whether the batch axis was set aside) of one statement, or (None, False); ``images``:
    an image statement that has no matrix form as its whole-array form."""
    def fallback(*statement):
        return image_text(*statement) if images else None
    op = d.op
    names = {i.tensor: i.name for i in op.inputs}
    names.update({n: n.name for n in op.intermediates})
    names.update({a.tensor: a.tensor.name for a in d.adjoints})
    if not op.is_loss:
        names.update({upstream_of(op, y): upstream_of(op, y).name for y in op.outputs})
    ranks = {name: len(t.shape) if hasattr(t, "shape") and t.shape is not None else 0 for t, name in names.items()}
    try:
        tree = Lowering(names).statement(expr, tuple(index), tuple(shape))
    except NotImplementedError:  # no matrix form (a crop of the padded input): perhaps an image operation
        return fallback(d, printer, expr, index, shape), False
    text = MatrixForm(nt, ranks, printer).print(tree, tuple(index))
    if text is not None:
        return text, False
    batch = index[0] if index else None
    if batch is None or not all(n.axes and n.axes[0] == batch for n in subtrees(tree) if isinstance(n, Leaf)):
        return fallback(d, printer, expr, index, shape), False
    tree = without_axis(tree, batch)
    ranks = {name: rank - 1 for name, rank in ranks.items()}
    text = MatrixForm(nt, ranks, printer).print(tree, tuple(index[1:]))
    return (text, True) if text is not None else (fallback(d, printer, expr, index, shape), False)



def image_form(op: Op, expr, index, shape):
    """The whole-array form of an image statement (``codegen.latex.arrays``), checked at the op's sizes;
    None where there is none."""
    return _image_form(op, Statement(expr, tuple(index), tuple(shape)))


@lru_cache(maxsize=None)
def _image_form(op: Op, statement: Statement):
    return whole_array(statement, check_points(op))  # (each check evaluates the statement at several sizes)


#: Each whole-array form printed, by its TeX: the convention names the operations of those it finds.
_PRINTED: dict = {}


def image_text(d: Derivation, printer: ArticleLatex, expr, index, shape) -> str | None:
    form = image_form(d.op, expr, index, shape)
    if form is None:
        return None
    text = form.tex(printer)
    _PRINTED[text] = form
    return text


def image_convention(blocks, lang: str) -> list[Block]:
    """The sentence defining the whole-array operations these blocks print with."""
    shown = [b.equation.tex for b in blocks if b.equation]
    forms = [form for tex, form in _PRINTED.items() if any(tex in eq for eq in shown)]
    text = convention(forms, lang)
    return [Block(text=text)] if text else []


def full_convolution_blocks(d: Derivation, lang: str) -> list[Block]:
    """For a convolution: the input gradient at stride 1 as a full convolution with the flipped kernel."""
    grads = [g for g in d.gradients if g.input == d.op.inputs[0]]
    form = full_convolution(d, grads[0]) if grads else None
    if form is None:
        return []
    nt = notation(d.op)
    upstream = nt.element(d.op.upstream_label)
    nt = Notation({**nt.elements, "flipped": r"\tilde{" + nt.element(form.flipped[1].base.name) + "}",
                   "padded": r"\bar{" + upstream + "}"}, nt.matrices, nt.upstream, nt.indices)
    printer = ArticleLatex(nt, lang)
    (flip, kernel), (pad, shifted) = form.flipped, form.padded
    dilated = any(h.name == "dilation" for h in d.op.hyper)
    text = {"en": f"For stride 1{' and dilation 1' if dilated else ''} the same gradient reads as a full convolution: "
                  "the upstream gradient, padded with zeros, correlated with the kernel flipped in both directions:",
            "zh": f"当步长为1{'且膨胀为1' if dilated else ''}时，同一个梯度可以看作一次“完全卷积”：把补零后的上游梯度与上下左右翻转后的卷积核做互相关："}[lang]
    outside = {"en": "zero where the index falls outside", "zh": "下标越界处为0"}[lang]
    grad = grads[0]
    return [Block(text=text),
            _eq(printer, _partial(grad.element), (form.gradient,)),
            _eq(printer, flip, (kernel,)),
            Block(equation=Equation(f"{printer.doprint(pad)} = {printer.doprint(shifted)}"
                                    rf"\quad\text{{({outside})}}", pad, (shifted,)))]


def upstream_sentence(d: Derivation, printer: ArticleLatex, lang: str) -> str:
    """``where g_{nk} = dE/dy_{nk}``: the gradient arriving at the output."""
    w, objective = words(lang), printer.notation.objective
    each = [rf"{printer.doprint(upstream_of(d.op, y)[y.index])} = \frac{{\partial {objective}}}"
            rf"{{\partial {printer.doprint(y[y.index])}}}" for y in d.op.outputs]
    what = w["upstream"] if len(each) == 1 else w["upstreams"]
    return f"{w['where']} ${', '.join(each)}$" + (f" ({what})" if lang == "en" else f"（{what}）")


def gradient_block(d: Derivation, printer: ArticleLatex, grad) -> Block:
    """``dE/d element`` = each recorded step of the engine, repeated rows dropped."""
    steps = tuple(display(d, s.expr) for s in grad.steps)
    return _eq(printer, _partial(grad.element), _dedupe(steps))


def vector_indices(op: Op) -> set:
    """For per-row and per-channel ops, the indices a vector runs along (the others are fixed); none for
    a row op with a matrix input that is not one row of a batch (an embedding's table, a linear layer's
    weights: its rows change width, and its matrix form is the batch's)."""
    if op.shape_kind == "leading":
        lead = op.inputs[0].shape[0]
        if any(i.tensor.rank > 1 and i.shape[0] != lead for i in op.inputs) \
                or op.output.shape[-1] != op.inputs[0].shape[-1]:
            return set()
        return {op.output.index[-1]}
    if op.shape_kind == "channels" and len(op.output.index) == op.inputs[0].tensor.rank:
        return {op.output.index[0], op.output.index[-1]}
    return set()


def _vector_blocks(d: Derivation, nt: Notation, lang: str, w, forward: bool) -> list[Block]:
    """The forward pass or the gradients for one row or one channel, as vectors."""
    op = d.op
    vector = vector_indices(op)
    printer = VectorLatex(nt, lang, vector, {i: size for i, size in zip(op.output.index, op.output.shape)
                                             if i in vector})
    blocks = [Block(text=w["vector layout"])] if forward else []
    for node in op.intermediates if forward else ():
        lhs = node[node.index]
        blocks.append(_eq(printer, lhs, (normalize(node.definition, split=False),)))
    for grad in d.gradients if d.written_out and not forward else ():
        expr = display(d, grad.expr)
        blocks.append(_eq(printer, _partial(grad.element), (expr,)))
    return blocks



def _partial(element) -> sp.Expr:
    return sp.Derivative(sp.Symbol("E"), element, evaluate=False)


def _dedupe(steps) -> tuple:
    out = []
    for s in steps:
        if not out or s != out[-1]:
            out.append(s)
    return tuple(out)


def _eq(printer: ArticleLatex, lhs, rhs: tuple) -> Block:
    lhs_tex = printer.doprint(lhs)
    if len(rhs) == 1:
        tex = f"{lhs_tex} = {printer.doprint(rhs[0])}"
    else:
        rows = [f"{lhs_tex} &= {printer.doprint(rhs[0])}"] + [f"&= {printer.doprint(r)}" for r in rhs[1:]]
        tex = "\\begin{aligned}\n" + " \\\\\n".join(rows) + "\n\\end{aligned}"
    return Block(equation=Equation(tex, lhs, tuple(rhs)))


def _matrix_blocks(d: Derivation, nt: Notation, printer: ArticleLatex, w, forward: bool) -> list[Block]:
    """The forward pass or each gradient as matrix algebra, printed from the same IR as the NumPy code."""
    op = d.op
    names = {i.tensor: i.name for i in op.inputs}
    names.update({n: n.name for n in op.intermediates})
    if not op.is_loss:
        names.update({upstream_of(op, y): upstream_of(op, y).name for y in op.outputs})
    ranks = {i.name: i.tensor.rank for i in op.inputs}
    ranks.update({n.name: len(n.index) for n in op.intermediates})
    lowering = Lowering(names)
    matrix = MatrixForm(nt, ranks, printer)
    blocks = []
    for node in op.intermediates if forward else ():
        if not node.index:
            blocks.append(_eq(printer, sp.Symbol(node.name), (node.definition,)))
            continue
        tex = matrix.print(lowering.statement(node.definition, tuple(node.index), tuple(node.shape)),
                           tuple(node.index))
        image = tex is None and image_text(d, printer, node.definition, node.index, node.shape)
        if tex or image:
            lhs = nt.matrix(node.name, len(node.index))
            blocks.append(Block(equation=Equation(f"{lhs} = {tex or image}", sp.Symbol(node.name),
                                                  (node.definition,), whole_array=bool(image))))
    for grad in d.gradients if d.written_out and not forward else ():
        expr = display(d, grad.expr)
        try:
            tex = matrix.print(lowering.statement(expr, tuple(grad.index), tuple(grad.input.shape)),
                               tuple(grad.index))
        except NotImplementedError:  # an index the vector IR has no operation for: no matrix form
            tex = None
        image = tex is None and image_text(d, printer, expr, grad.index, grad.input.shape)
        wrt = nt.matrix(grad.input.name, grad.input.tensor.rank)
        lhs = rf"\frac{{\partial {nt.objective}}}{{\partial {wrt}}}"
        if not (tex or image):
            blocks.append(Block(text=f"${lhs}$: {w['no matrix form']}"))
        else:
            blocks.append(Block(equation=Equation(f"{lhs} = {tex or image}", _partial(grad.element), (expr,),
                                                  whole_array=bool(image))))
    return blocks

