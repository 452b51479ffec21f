"""The article's own example, re-derived: part 1's equations and part 2's 3-2-2 network.

Part 2 numbers the nodes 1..7 (inputs 1-3, hidden 4-5, outputs 6-7), names
weights later node first (``w_{41}``) and folds each bias into the weights
as ``w_{b_4}`` with a constant input 1. Every node equation here is the
chain's forward definition at explicit indices, renamed to node numbers,
never typed in; the tests evaluate them against the generated code.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from derive.engine.chain import BATCH, ChainDerivation, chain, sample_form
from derive.engine.check import expand_sums

from codegen.latex.chain import chain_blocks
from codegen.latex.notation import math_text, words
from codegen.render import environment
from codegen.latex.blocks import Block, Equation

ARTICLE = ("linear", "sigmoid", "linear", "sigmoid", "half_sse")
SIZES = (3, 2, 2)  # input, hidden, output nodes
f = sp.Function("f")


@dataclass(frozen=True)
class NodeNetwork:
    """Node numbers and symbols of the article's network."""

    inputs: tuple
    hidden: tuple
    outputs: tuple

    @staticmethod
    def of(sizes=SIZES) -> "NodeNetwork":
        i, j, k = sizes
        return NodeNetwork(tuple(range(1, i + 1)), tuple(range(i + 1, i + j + 1)),
                           tuple(range(i + j + 1, i + j + k + 1)))


def x(node):
    return sp.Symbol(f"x_{node}")


def y(node):
    return sp.Symbol(f"y_{node}")


def w(to, frm):
    return sp.Symbol(f"w_{{{to}{frm}}}")


def w_bias(to):
    return sp.Symbol(f"w_{{b_{to}}}")


def node_forward(c: ChainDerivation, net: NodeNetwork) -> list[tuple]:
    """``(y_node, f(sum of weighted inputs))`` for every hidden and output node, from the chain."""
    rows = []
    for layer, sources, targets, source_symbol in ((c.layers[0], net.inputs, net.hidden, x),
                                                   (c.layers[2], net.hidden, net.outputs, y)):
        definition = next(rhs for lhs, rhs in c.forward if lhs.base == layer.output)
        W, b, source = layer.tensors["W"], layer.tensors["b"], layer.tensors["x"]
        widths = dict(zip(W.shape, (sp.Integer(len(targets)), sp.Integer(len(sources)))))
        for row, node in enumerate(targets):
            at = expand_sums(definition.xreplace({BATCH: 0, layer.index[1]: row, **widths}))
            rename = {W[row, col]: w(node, s) for col, s in enumerate(sources)}
            rename.update({source[0, col]: source_symbol(s) for col, s in enumerate(sources)})
            rename[b[row]] = w_bias(node)
            rows.append((y(node), f(at.xreplace(rename))))
    return rows


def weight_matrix(targets, sources) -> sp.Matrix:
    """A layer's weights with the bias folded in as the first column (``w_{b_4}``)."""
    return sp.Matrix([[w_bias(t)] + [w(t, s) for s in sources] for t in targets])


def example_gradient(c: ChainDerivation, net: NodeNetwork) -> tuple:
    """dE/dw_{64} from the chain's output-layer weight gradient at k = 6, j = 4."""
    layer = c.layers[2]
    q = next(q for q in c.parameters if q.layer is layer and q.lhs.variables[0].base == layer.tensors["W"])
    expr = sample_form(q.expr)
    k, j = layer.index[1], c.layers[1].index[1]
    at = expr.xreplace({k: 0, j: 0})
    rename = {e: sp.Symbol(rf"\delta_{net.outputs[0]}") for e in at.atoms(sp.Indexed) if "delta" in str(e.base)}
    rename.update({e: y(net.hidden[0]) for e in at.atoms(sp.Indexed) if str(e.base).startswith("y")})
    return w(net.outputs[0], net.hidden[0]), at.xreplace(rename)


def part1(lang: str) -> list[Block]:
    """Part 1's equations 1-8, with equation 2 shown equal to equation 1 under bias folding."""
    return [b for _, blocks in part1_sections(lang) for b in blocks]


def part1_sections(lang: str) -> list[tuple[str, list[Block]]]:
    """Part 1 by the article's sections: the neuron, gradient descent, backpropagation, summary."""
    wd = words(lang)
    out, true, sample = (math_text(wd[key]) for key in ("output layer", "true", "sample"))
    hidden = math_text(wd["hidden layer"])
    w1, w2, x1, x2, b, wb = sp.symbols("w_1 w_2 x_1 x_2 b w_b")
    folded = sp.Matrix([wb, w1, w2]).dot(sp.Matrix([1, x1, x2]))
    plain = w1 * x1 + w2 * x2 + b
    neuron = [
        _eq(r"y=f(\vec{w}\vec{x}+b)", "y", f(plain)),
        Block(text=_where(lang, r"\vec{w}=[w_1,w_2],\ \vec{x}=[x_1,x_2]")),
        _eq(r"\vec{y}=f(\vec{w}\vec{x})", "y", f(folded)),
        Block(text=_where(lang, r"\vec{w}=[w_b,w_1,w_2],\ \vec{x}=[1,x_1,x_2],\ \vec{y}=[y]")),
        Block(text=("由于" if lang == "zh" else "Since ") + r"$w_b=b$" + ("：" if lang == "zh" else ":")),
        _eq(r"\vec{w}\vec{x}=w_b\cdot 1+w_1x_1+w_2x_2=w_1x_1+w_2x_2+b", "wx", folded.subs(wb, b)),
    ]
    # 输出层new as the article has it; in English a comma, or the words run together (output layernew)
    then = "" if lang == "zh" else ",\\,"
    descent = [
        _eq(rf"e=E(\overrightarrow{{y_{{{out}}}}},\overrightarrow{{y_{{{true}}}}})", "e", sp.Symbol("E")),
        _eq(r"x_{new}=x_{old}-\eta\frac{df(x)}{dx}", "x_new", sp.Symbol("x_old")),
        _eq(rf"\overrightarrow{{w_{{{out}{then}new}}}}=\overrightarrow{{w_{{{out}{then}old}}}}"
            rf"-\eta\frac{{dE(w_{{{out}}})}}{{dw_{{{out}}}}}", "w_out", sp.Symbol("w_out")),
    ]
    backprop = [
        _eq(rf"\overrightarrow{{w_{{{hidden}{then}new}}}}=\overrightarrow{{w_{{{hidden}{then}old}}}}"
            rf"-\eta\frac{{dE(w_{{{hidden}}})}}{{dw_{{{hidden}}}}}", "w_hidden", sp.Symbol("w_hidden")),
    ]
    summary = [
        _eq(rf"W={math_text(wd['train'])}(\sum\overrightarrow{{{sample}_i}})", "W", sp.Symbol("W")),
        _eq(rf"\overrightarrow{{y_{{{out}}}}}={math_text(wd['infer'])}(\overrightarrow{{{sample}_i}},W)", "y_out",
            sp.Symbol("y")),
    ]
    return [("neuron", neuron), ("gradient descent", descent), ("backpropagation", backprop),
            ("summary", summary)]


def _where(lang, tex) -> str:
    return f"其中${tex}$" if lang == "zh" else f"where ${tex}$"


def _eq(tex, lhs, rhs) -> Block:
    return Block(equation=Equation(tex, sp.Symbol(lhs), (rhs,)))


def part2(lang: str, c: ChainDerivation | None = None) -> list[Block]:
    """Part 2: the 3-2-2 network by node number, as matrices, then the derivation."""
    c = c or chain(ARTICLE)
    return node_blocks(lang, c) + chain_blocks(c, lang, sample=True) + example_blocks(lang, c)


def node_blocks(lang: str, c: ChainDerivation) -> list[Block]:
    """Each node's equation by node number, each layer as a matrix, then what f and E are."""
    wd = words(lang)
    net = NodeNetwork.of()
    hidden, out = math_text(wd["hidden layer"]), math_text(wd["output layer"])
    blocks = []
    y_hidden = rf"\overrightarrow{{y_{{{hidden}}}}}"
    # the constant input 1 that carries the folded bias, in front of the hidden layer's outputs
    with_one = {"x": r"\vec{x}", "y": rf"\begin{{bmatrix}}1\\ {y_hidden}\end{{bmatrix}}"}
    for lhs, rhs in node_forward(c, net):
        node = int(str(lhs).split("_")[1])
        sources = net.inputs if node in net.hidden else net.hidden
        src = "x" if node in net.hidden else "y"
        vec_w = ",".join([rf"w_{{b_{node}}}"] + [rf"w_{{{node}{s}}}" for s in sources])
        sum_tex = "+".join([rf"w_{{b_{node}}}"] + [rf"w_{{{node}{s}}}{src}_{s}" for s in sources])
        tex = rf"y_{node}=f(\vec{{w_{node}}}^T\cdot {with_one[src]})=f({sum_tex})"
        blocks.append(Block(equation=Equation(tex, lhs, (rhs,))))
        vectors = (rf"\vec{{x}}=[1,{','.join(f'x_{s}' for s in sources)}]^T" if src == "x" else
                   rf"{y_hidden}=[{','.join(f'y_{s}' for s in sources)}]^T")
        blocks.append(Block(text=_where(lang, rf"\vec{{w_{node}}}=[{vec_w}]^T,\ {vectors}")))
    for layer_name, targets, sources, src in ((hidden, net.hidden, net.inputs, "x"),
                                              (out, net.outputs, net.hidden, "y")):
        W = weight_matrix(targets, sources)
        column = sp.Matrix([1] + [(x if src == "x" else y)(s) for s in sources])
        rows = r" \\ ".join(" & ".join(sp.latex(e) for e in W.row(r)) for r in range(W.rows))
        tex = (rf"\overrightarrow{{y_{{{layer_name}}}}}=f(W_{{{layer_name}}}\cdot {with_one[src]}),\quad "
               rf"W_{{{layer_name}}}=\begin{{bmatrix}} {rows} \end{{bmatrix}}")
        value = (W * column).applyfunc(f)
        blocks.append(Block(equation=Equation(tex, sp.Matrix([y(t) for t in targets]), (value,))))
    blocks.append(Block(text=(
        r"其中$f$为sigmoid函数，$E=\frac{1}{2}\sum_k(t_k-y_k)^2$。下面按单个样本推导，并把并入权重的偏移单独写出："
        r"$b_j$即隐藏节点$j$的$w_{b_j}$（如$b_4=w_{b_4}$），$b_k$即输出节点$k$的$w_{b_k}$；"
        r"于是$net_k=\sum_j w_{kj}y_j+b_k$，求和只取前一层的节点，不含常数输入1。"
        if lang == "zh" else
        r"with $f$ the sigmoid and $E=\frac{1}{2}\sum_k(t_k-y_k)^2$. The derivation below is for one sample "
        r"and writes each folded bias on its own: $b_j$ is hidden node $j$'s $w_{b_j}$ (so $b_4=w_{b_4}$) and "
        r"$b_k$ is output node $k$'s $w_{b_k}$, so that $net_k=\sum_j w_{kj}y_j+b_k$, the sum running over the "
        r"nodes of the layer before, without the constant input 1.")))
    return blocks


def example_blocks(lang: str, c: ChainDerivation) -> list[Block]:
    """The gradient and update of one weight by node numbers: ``w_{64}``."""
    net = NodeNetwork.of()
    blocks = [Block(text=("例如，对于节点6和节点4之间的权重：" if lang == "zh"
                          else "For example, the weight between nodes 6 and 4:"))]
    weight, grad = example_gradient(c, net)
    eta = sp.Symbol("eta")
    tex = (rf"\frac{{\partial E}}{{\partial {sp.latex(weight)}}}={sp.latex(grad)},\quad "
           rf"{sp.latex(weight)}\leftarrow {sp.latex(weight)}-\eta {sp.latex(grad)}")
    blocks.append(Block(equation=Equation(tex, weight, (grad, weight - eta * grad))))
    return blocks


def article_files() -> dict[str, str]:
    """``latex/<lang>/article.tex`` for each language."""
    c = chain(ARTICLE)
    files = {}
    for lang in ("en", "zh"):
        files[f"latex/{lang}/article.tex"] = environment().get_template("article.tex.j2").render(
            part1=part1(lang), part2=part2(lang, c), lang=lang)
    return files


#: Where the article was published: its author's blog (the series' posts are listed there).
ORIGINAL = "https://www.cnblogs.com/chaogex/"


def references(lang: str) -> list[tuple[str, str]]:
    """The original article, then the references its part 1 gives: (text, address)."""
    return [("原文：神经网络前向和后向传播推导（作者的博客园博客）" if lang == "zh" else "The original series (in Chinese), on its author's blog", ORIGINAL),
            ("零基础入门深度学习 | 第二章：线性单元和梯度下降" if lang == "zh" else
             "Deep learning from scratch, chapter 2: linear units and gradient descent (in Chinese)",
             "https://cloud.tencent.com/developer/article/1056098"),
            ("零基础入门深度学习 | 第三章：神经网络和反向传播算法" if lang == "zh" else
             "Deep learning from scratch, chapter 3: neural networks and backpropagation (in Chinese)",
             "https://cloud.tencent.com/developer/article/1056167")]


def verify(c: ChainDerivation) -> list[str]:
    """Part 1's claims that a program can check, checked against the ops and the chain; the failures.

    (1) is one node of the fully connected layer; (2) is (1) with the bias
    folded in; (3)'s objective reads only the output and the true values;
    (5) and (6), gradient descent on each layer's weights, lower E by
    eta |dE/dw|^2 to first order with the chain's gradients; (8)'s output
    is a function of the sample and the weights. (4) and (7) define notation.
    """
    from derive.define.registry import get
    problems = []
    eq1, eq2, fold, *_ = [b.equation for b in part1("en") if b.equation]
    w1, w2, x1, x2, b, wb = sp.symbols("w_1 w_2 x_1 x_2 b w_b")
    linear = get("linear")
    xs, W, bias = (i.tensor for i in linear.inputs)
    n, k = linear.output.index
    one_node = expand_sums(linear.output.definition.xreplace({n: 0, k: 0, xs.shape[1]: 2}))
    one_node = one_node.xreplace({W[0, 0]: w1, W[0, 1]: w2, xs[0, 0]: x1, xs[0, 1]: x2, bias[0]: b})
    if eq1.rhs[0] != f(one_node):
        problems.append(f"(1) is not one node of the linear op: {one_node}")
    if eq2.rhs[0].xreplace({wb: b}) != eq1.rhs[0]:
        problems.append("(2) is not (1) with w_b = b")
    if sp.expand(fold.rhs[0] - (w1 * x1 + w2 * x2 + b)) != 0:
        problems.append("the folded product is not w_1 x_1 + w_2 x_2 + b")
    objective = next(rhs for lhs, rhs in c.forward if lhs == sp.Symbol("E"))
    output, truth = c.layers[-2].output, c.inputs["t"]
    if {e.base for e in objective.atoms(sp.Indexed)} != {output, truth}:
        problems.append("(3) the objective reads more than the output and the true values")
    problems += _descent(c)
    return problems


def _descent(c: ChainDerivation) -> list[str]:
    """One small gradient step on each layer's parameters, at sizes 3-2-2 and one sample."""
    import numpy as np

    from derive.engine.chain import BATCH_SIZE
    x = c.inputs["x"]
    sizes = {BATCH_SIZE: 1, x.shape[1]: SIZES[0], c.layers[0].output.shape[1]: SIZES[1],
             c.layers[2].output.shape[1]: SIZES[2]}
    sizes = {s: sp.Integer(v) for s, v in sizes.items()}
    rng = np.random.default_rng(0)

    def elements(tensor):
        shape = [int(sp.sympify(s).xreplace(sizes)) for s in tensor.shape]
        return [tensor[idx] for idx in np.ndindex(*shape)]

    tensors = list(c.inputs.values()) + [q.lhs.variables[0].base for q in c.parameters]
    point = {e: sp.Float(rng.uniform(0.1, 0.9) if t == c.inputs["t"] else rng.uniform(-1, 1))
             for t in tensors for e in elements(t)}

    def forward(at):
        values = dict(at)
        for lhs, rhs in c.forward:
            if isinstance(lhs, sp.Indexed):
                for e in elements(lhs.base):
                    local = rhs.xreplace(dict(zip(lhs.indices, e.indices))).xreplace(sizes)
                    values[e] = sp.Float(expand_sums(local).xreplace(values))
            else:
                values[lhs] = sp.Float(expand_sums(rhs.xreplace(sizes)).xreplace(values))
        return values

    before = forward(point)
    problems = []
    for layer, name in ((c.layers[2], "(5) output"), (c.layers[0], "(6) hidden")):
        grads = {}
        for q in c.parameters:
            if q.layer is layer:
                element = q.lhs.variables[0]
                for e in elements(element.base):
                    at = q.expanded.xreplace(dict(zip(element.indices, e.indices))).xreplace(sizes)
                    grads[e] = sp.Float(expand_sums(at).xreplace(before))
        eta = sp.Float(1e-5)
        after = forward({**point, **{e: point[e] - eta * g for e, g in grads.items()}})
        drop = before[sp.Symbol("E")] - after[sp.Symbol("E")]
        expected = eta * sum(g ** 2 for g in grads.values())
        if not abs(drop / expected - 1) < 1e-2:
            problems.append(f"{name} layer: a gradient step lowered E by {drop}, not by eta |g|^2 = {expected}")
    return problems
