"""LaTeX for a chain: the forward pass, the backward pass step by step, the updates."""
from __future__ import annotations

import sympy as sp

from derive.engine.chain import BATCH, OBJECTIVE, ChainDerivation, ChainProduct, display_name, sample_form
from derive.engine.chain import _instantiate as instantiate
from derive.engine.derivation import derive
from derive.engine.rewrite import normalize

from codegen.latex.notation import ArticleLatex, Notation, name_tex, words
from codegen.latex.blocks import Block, Equation

ETA = sp.Symbol("eta")


def chain_notation(c: ChainDerivation) -> Notation:
    """Chain tensors by their article names; two that would print alike (the outputs of a
    batch norm and of the ReLU after it, both ``y_j``) get the layer number as a superscript."""
    tensors = {t for lhs, rhs in c.forward for t in _tensors(lhs) | _tensors(rhs)}
    tensors |= {t for q in c.backward for t in _tensors(q.lhs) | _tensors(q.expr)}
    tensors |= set(c.inputs.values())
    letters = {}
    for layer in c.layers:
        for t in [layer.output, *layer.tensors.values()]:
            if t is not None:
                letters.setdefault(str(t.label), (layer.position, layer.index[-1] if layer.index else None))
    elements, seen = {}, {}
    for t in sorted(tensors, key=lambda t: (letters.get(str(t.label), (-1, None))[0], str(t.label))):
        label = str(t.label)
        base = name_tex(display_name(label))
        key = (base, letters.get(label, (None, None))[1], len(t.shape or ()))
        if key in seen and seen[key] != label and label in letters:
            base = f"{base}^{{({letters[label][0] + 1})}}"
        seen.setdefault(key, label)
        elements[label] = base
    return Notation(elements, {}, frozenset(lab for lab in elements if lab.startswith("delta")))


def _tensors(expr) -> set:
    return {e.base for e in sp.preorder_traversal(expr) if isinstance(e, sp.Indexed)}


def chain_printer(c: ChainDerivation, lang: str = "en") -> ArticleLatex:
    return ArticleLatex(chain_notation(c), lang)


def form_of(sample: bool):
    """The article's one-sample form, or the expressions as they are (batch index kept)."""
    return sample_form if sample else (lambda e: e)


def coupling_note(c: ChainDerivation, lang: str, sample: bool) -> list[Block]:
    """Why the batch index stays when one sample was asked for and the network couples its samples."""
    if not sample or not c.coupled_by:
        return []
    return [Block(text=words(lang)["coupled"].format(ops=", ".join(n.replace("_", " ") for n in c.coupled_by)))]


def chain_blocks(c: ChainDerivation, lang: str = "en", sample: bool = True) -> list[Block]:
    """The network's derivation; ``sample`` drops the batch index, as the article does, where
    the network treats each sample on its own (not through a batch norm)."""
    w = words(lang)
    colon = "：" if lang == "zh" else ":"
    printer = chain_printer(c, lang)
    form = form_of(sample and not c.coupled_by)
    blocks = coupling_note(c, lang, sample) + [Block(text=f"{w['forward']}{colon}")]
    blocks += forward_blocks(c, printer, form)
    blocks.append(Block(text=f"{w['backward']}{colon}"))
    for q in c.backward:
        if q.kind == "delta":
            blocks.append(Block(text=_delta_sentence(printer, form, q, lang)))
        blocks.append(quantity_block(printer, form, q, c))
    blocks.append(Block(text=f"{w['update']}{colon}"))
    blocks += [update_block(printer, form, q) for q in c.parameters]
    return blocks


def forward_blocks(c: ChainDerivation, printer: ArticleLatex, form) -> list[Block]:
    """One equation per forward definition, in the chain's order."""
    return [_equation(printer, lhs, tuple(objective_rows(c, form))) if lhs == OBJECTIVE else
            _equation(printer, form(lhs), (normalize(form(rhs), split=False),)) for lhs, rhs in c.forward]


def quantity_block(printer: ArticleLatex, form, q, c: ChainDerivation | None = None) -> Block:
    """A backward quantity: the chain rule, the factors' values (or the loss's own steps), the result."""
    rows = [form(q.chain)]
    steps = loss_steps(c, form, q) if c is not None else []
    if steps:
        rows += steps
    elif len(q.factors) > 1:
        factors = [form(f) for f in q.factors]
        rows.append(ChainProduct(*factors))
        # The result in reading order: the local factors, then the sums (the article's form).
        rows.append(ChainProduct(*sorted(factors, key=lambda f: isinstance(f, sp.Sum))))
    else:
        rows.append(form(q.expr))
    lhs = form(q.lhs)
    if q.kind == "delta":
        lhs = _Named(form(q.lhs), _partial_of(q, form))
    return _equation(printer, lhs, tuple(_dedupe(rows)))


def loss_steps(c: ChainDerivation, form, q) -> list:
    """Where a loss reads a layer's output directly (softmax + cross-entropy on ``net_k``), the error
    term by the loss's own derivation steps, in the chain's names; empty elsewhere."""
    loss = c.layers[-1]
    if not loss.op.is_loss or q.kind != "delta" or q.layer.output is None \
            or loss.tensors[loss.op.inputs[0].name] != q.layer.output:
        return []
    grad = derive(loss.op).gradient(loss.op.inputs[0].name)
    rows = [in_chain(c, form, s.expr) for s in grad.steps if s.name not in ("chain rule", "textbook form")]
    if not rows or sp.simplify(rows[-1] - form(q.expr)) != 0:
        return []
    return rows[:-1] + [form(q.expr)]


def in_chain(c: ChainDerivation, form, expr: sp.Expr) -> sp.Expr:
    """An expression of the chain's loss op in the chain's names; its brackets ``[a = b]`` too."""
    loss = c.layers[-1]
    marker = sp.IndexedBase("kronecker")
    expr = expr.replace(lambda e: isinstance(e, sp.KroneckerDelta), lambda e: marker[e.args[0], e.args[1]])
    expr = instantiate(expr, loss)
    def bracket(e):  # an op index may stand for several chain indices (a flat op's one for n and k)
        half = len(e.indices) // 2
        return sp.Mul(*(sp.KroneckerDelta(a, b) for a, b in zip(e.indices[:half], e.indices[half:])))

    expr = expr.replace(lambda e: isinstance(e, sp.Indexed) and e.base == marker, bracket)
    return form(expr)


def identity_sentence(c: ChainDerivation, form, printer: ArticleLatex, lang: str) -> str:
    """``\\sum_k t_k = 1``, where the loss's derivation used that its targets are probabilities."""
    loss = c.layers[-1]
    if not loss.op.is_loss or not derive(loss.op).identities or "t" not in loss.tensors:
        return ""
    t = loss.tensors["t"]
    index = c.layers[-2].index if len(c.layers) > 1 else (BATCH, sp.Symbol("k", integer=True))
    total = printer.doprint(form(sp.Sum(t[index], (index[-1], 0, t.shape[-1] - 1))))
    return (f"目标值是概率，${total} = 1$" if lang == "zh" else
            f"the targets are probabilities, ${total} = 1$")


def objective_rows(c: ChainDerivation, form) -> list:
    """The objective as the reader knows it, then as derived: ``-sum t log y`` beside
    ``-sum t (net - log sum e^net)`` where the loss keeps the probabilities ``y`` it computed."""
    rhs = normalize(form(next(r for lhs, r in c.forward if lhs == OBJECTIVE)), split=False)
    outputs = {layer.output for layer in c.layers}
    for lhs, definition in c.forward:
        if not isinstance(lhs, sp.Indexed) or lhs.base in outputs:
            continue
        lhs, definition = form(lhs), form(definition)
        log_form = sp.expand_log(sp.log(definition), force=True)
        for node in sp.preorder_traversal(rhs):
            if isinstance(node, sp.Add) and sp.simplify(node - log_form) == 0:
                return [rhs.xreplace({node: sp.log(lhs)}), rhs]
    return [rhs]


def update_block(printer: ArticleLatex, form, q) -> Block:
    """Gradient descent on one parameter: ``w <- w - eta dE/dw``."""
    element = form(q.lhs).variables[0]
    update = element - ETA * form(q.expr)
    return Block(equation=Equation(
        rf"{printer.doprint(element)} \leftarrow {printer.doprint(element)} - \eta {printer.doprint(form(q.lhs))}"
        rf" = {printer.doprint(update)}", element, (update,)))


class _Named(sp.Basic):
    """``delta_k = dE/dnet_k``: a named quantity and its definition."""


def _partial_of(q, form):
    out = q.layer.output
    return sp.Derivative(sp.Symbol("E"), form(out[q.layer.index]), evaluate=False)


def _dedupe(rows):
    out = []
    for r in rows:
        if not out or r != out[-1]:
            out.append(r)
    return out


def _delta_sentence(printer, form, q, lang) -> str:
    name = printer.doprint(form(q.lhs))
    role = words(lang)[q.layer.role + " layer"] if q.layer.role in ("hidden", "output") else ""
    if lang == "zh":
        return f"${name}$为{role}节点的{words(lang)['error term']}："
    return f"${name}$, the {words(lang)['error term']} of an {role} node:" if role.startswith("o") else \
        f"${name}$, the {words(lang)['error term']} of a {role} node:"


def equation_block(printer: ArticleLatex, lhs, rows) -> Block:
    """``lhs = row_1 = row_2 ...``, aligned when there are several rows."""
    return _equation(printer, lhs, rows)


def _equation(printer: ArticleLatex, lhs, rows) -> Block:
    def tex(e):
        if isinstance(e, _Named):
            return f"{printer.doprint(e.args[0])} = {printer.doprint(e.args[1])}"
        return printer.doprint(e)

    exprs = tuple(sp.Mul(*r.args) if isinstance(r, ChainProduct) else r for r in rows)
    rows = _dedupe([tex(r) for r in rows])
    if isinstance(lhs, _Named):  # "delta = dE/dnet = dE/dnet": say it once
        rows = [r for r in rows if r != tex(lhs.args[1])] or rows
    left = tex(lhs)
    if len(rows) == 1:
        body = f"{left} = {rows[0]}"
    else:
        body = "\\begin{aligned}\n" + f"{left} &= {rows[0]}" + "".join(
            f" \\\\\n&= {r}" for r in rows[1:]) + "\n\\end{aligned}"
    plain = lhs.args[0] if isinstance(lhs, _Named) else lhs
    return Block(equation=Equation(body, plain, exprs))


