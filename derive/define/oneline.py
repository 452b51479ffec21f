"""An op from definitions typed on the command line: ``--def 'y_i = x_i \\tanh(\\ln(1 + e^{x_i}))'``.

Each definition is read by ``derive verify``'s grammar (LaTeX or plain
text, never ``eval``) and turned into the same ``Op`` a Python file would
define: the last definition is the output, earlier ones are intermediates (``--also-output c``
makes one of them an output too, returned after the last);
every other name with indices is an input, in order of first appearance
(the generated ``forward``'s positional arguments); an index letter ``k``
runs over the size ``K``; a name without indices is a hyper-parameter
declared with ``--hyper beta=1.0``, a size (a letter's upper case), or
``\\pi``/``e``. An input read inside another's index (``W_{idx_n, e}``) is
an integer input (token ids). What the sentence does not say, ``symbols``
shows.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from derive.define.functions import Phi, Sigmoid, Softplus
from derive.define.op import Hyper, Input, Op
from derive.define.symbols import Intermediate, Iverson, Tensor
from derive.verifier import formula as F

#: The functions a definition may call, by the grammar's names.
FUNCTIONS = {"exp": sp.exp, "log": sp.log, "tanh": sp.tanh, "sigma": Sigmoid, "sqrt": sp.sqrt, "erf": sp.erf,
             "Phi": Phi, "softplus": Softplus, "abs": sp.Abs}
CONSTANTS = {"pi": sp.pi, "e": sp.E}
MAX_DEFINITIONS = 16


class DefinitionError(ValueError):
    """A definition the tool cannot read as an op, with the reason in one line."""


def op_from_definitions(definitions, name: str, hyper=(), no_grad=(), syntax: str = "auto", outputs=()) -> Op:
    """The op the definitions define (``hyper``: ``"beta=1.0"`` strings; ``no_grad``: input names
    that get no gradient, such as a loss's target; ``outputs``: earlier definitions the op also
    returns, after the last one)."""
    definitions = list(definitions)
    if not definitions:
        raise DefinitionError("--def: give at least one definition")
    if len(definitions) > MAX_DEFINITIONS:
        raise DefinitionError(f"--def: at most {MAX_DEFINITIONS} definitions")
    if not name or not name.isidentifier() or name.startswith("_"):
        raise DefinitionError(f"--name: expected a Python identifier for the op, got {name!r}")
    reader = _Reader(dict(_hyper(h) for h in hyper))
    for text in definitions:
        reader.read(text, syntax)
    return reader.op(name, set(no_grad), definitions, tuple(dict.fromkeys(outputs)))


def symbols(op: Op) -> str:
    """What the tool inferred from the definitions: inputs with shapes, sizes, indices, hyper-parameters."""
    lines = [f"{op.name}: inputs in order (forward's arguments):"]
    for inp in op.inputs:
        shape = ", ".join(str(s) for s in inp.shape)
        grad = "no gradient" if not inp.differentiable else "gradient"
        lines.append(f"  {inp.name}[{shape}]  ({inp.domain}; {grad})")
    for node in op.intermediates:
        where = "output" if node is op.output else "intermediate"
        lines.append(f"  {where}: {node.name}[{', '.join(map(str, node.index))}]")
    lines.append("  sizes: " + ", ".join(str(s) for s in op.sizes))
    letters = sorted({str(i) for node in op.intermediates for i in node.index})
    lines.append("  indices: " + ", ".join(f"{i} < {i.upper()}" for i in letters))
    if op.hyper:
        lines.append("  hyper-parameters: " + ", ".join(f"{h.name}={h.default}" for h in op.hyper))
    return "\n".join(lines)


def _hyper(text: str):
    name, eq, value = text.partition("=")
    name = name.strip()
    if not eq or not name.isidentifier():
        raise DefinitionError(f"--hyper: expected NAME=VALUE (beta=1.0), got {text!r}")
    try:
        number = int(value) if value.strip().lstrip("-").isdigit() else float(value)
    except ValueError:
        raise DefinitionError(f"--hyper: {name}: expected a number, got {value.strip()!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise DefinitionError(f"--hyper: {name}: expected a finite number, got {value.strip()!r}")
    return name, number


@dataclass
class _Reader:
    hyper: dict
    tensors: dict = field(default_factory=dict)  # name -> list of index letters per axis, as read
    order: list = field(default_factory=list)  # input names by first appearance
    integer: set = field(default_factory=set)  # inputs read inside another's index
    defined: dict = field(default_factory=dict)  # name -> (index letters, definition with placeholders)
    last: str = ""
    used_hyper: set = field(default_factory=set)
    axes: dict = field(default_factory=dict)  # (name, axis) -> the letters it is read or defined with
    vocabularies: dict = field(default_factory=dict)  # (name, axis) -> size, for axes only gathered from

    def read(self, text: str, syntax: str) -> None:
        tree = F.parse(text, syntax)
        if len(tree.parts) != 2:
            raise DefinitionError(f"--def: expected one '=' (name = definition), got {len(tree.parts) - 1} in {text!r}")
        lhs, rhs = tree.parts
        if not isinstance(lhs, F.Name) or lhs.layer is not None or lhs.decorated:
            raise DefinitionError(f"--def: the left side must be a name with its indices (y_i, E), in {text!r}")
        name = _tensor_name(lhs)
        if name in self.defined or name in self.tensors:
            raise DefinitionError(f"--def: {name} is defined or used twice")
        letters = tuple(_letter(i, lhs) for i in lhs.indices or ())
        if len(set(letters)) != len(letters):
            raise DefinitionError(f"--def: {name}'s indices must be distinct letters, got {letters}")
        self.defined[name] = (letters, self.convert(rhs, set(letters)))
        for axis, letter in enumerate(letters):
            self.axes.setdefault((name, axis), set()).add(letter)
        self.last = name

    # -- syntax tree -> SymPy, tensors as placeholders until their shapes are known ------

    def convert(self, node, scope: set):
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise DefinitionError(f"--def: a definition cannot contain {type(node).__name__.lower()} "
                                  f"(column {node.pos})")
        return method(node, scope)

    def _Num(self, node, scope):
        return sp.Rational(node.value.numerator, node.value.denominator)

    def _Name(self, node, scope):
        if node.decorated or node.layer is not None:
            raise DefinitionError(f"--def: write arrays by their elements (x_i, W_{{kj}}), not as a whole "
                                  f"(column {node.pos})")
        name = _tensor_name(node)
        if node.indices is None:
            if name in scope:  # an index letter used as a number: a causal mask's s <= l
                return _Letter(name)
            if name in self.hyper:
                self.used_hyper.add(name)
                return _Scalar(name)
            if name in CONSTANTS:
                return CONSTANTS[name]
            if name in self.defined and not self.defined[name][0]:
                return _Element(name, ())
            if len(name) == 1 and name.isupper():
                return _Size(name)
            raise DefinitionError(f"--def: unknown name {name!r} (column {node.pos}); declare a hyper-parameter "
                                  f"with --hyper {name}=VALUE, or give it indices")
        indices = tuple(self._index(i, node, scope) for i in node.indices)
        if name not in self.defined:
            self.tensors.setdefault(name, [set() for _ in indices])
            if len(self.tensors[name]) != len(indices):
                raise DefinitionError(f"--def: {name} is written with {len(self.tensors[name])} and with "
                                      f"{len(indices)} indices")
            if name not in self.order:
                self.order.append(name)
        elif len(self.defined[name][0]) != len(indices):
            raise DefinitionError(f"--def: {name} has {len(self.defined[name][0])} indices, written with "
                                  f"{len(indices)}")
        for axis, index in enumerate(indices):
            if isinstance(index, _Element):
                self.integer.add(index.name)
            else:
                self.axes.setdefault((name, axis), set()).add(index.letter)
        return _Element(name, indices)

    def _index(self, item, node, scope):
        if isinstance(item, str):
            return _Letter(_letter(item, node))
        inner = item.expr
        if isinstance(inner, F.Name) and inner.indices is not None:  # a gather: W_{idx_n, e}
            element = self._Name(inner, scope)
            return element
        raise DefinitionError(f"--def: an index is a letter or an integer input's element (idx_n) "
                              f"(column {item.pos})")

    def _Add(self, node, scope):
        left, right = self.convert(node.left, scope), self.convert(node.right, scope)
        return left - right if node.minus else left + right

    def _Neg(self, node, scope):
        return -self.convert(node.arg, scope)

    def _Product(self, node, scope):
        value = self.convert(node.factors[0], scope)
        for op, factor in zip(node.ops, node.factors[1:]):
            other = self.convert(factor, scope)
            if op in ("juxt", "cdot", "times", "odot", "emul"):
                value = value * other
            elif op in ("div", "oslash"):
                value = value / other
            else:
                raise DefinitionError(f"--def: write products by their elements, not with @ (column {factor.pos})")
        return value

    def _Frac(self, node, scope):
        if isinstance(node.num, F.Partial):
            raise DefinitionError("--def: a definition gives the forward pass; derivatives are what the tool derives")
        return self.convert(node.num, scope) / self.convert(node.den, scope)

    def _Pow(self, node, scope):
        base, exp = self.convert(node.base, scope), self.convert(node.exp, scope)
        return sp.exp(exp) if base == sp.E else base ** exp

    def _Call(self, node, scope):
        if node.func not in FUNCTIONS:
            raise DefinitionError(f"--def: unknown function {node.func} (column {node.pos}); known: "
                                  f"{', '.join(sorted(FUNCTIONS))}")
        value = FUNCTIONS[node.func](self.convert(node.arg, scope))
        return value ** self.convert(node.power, scope) if node.power is not None else value

    def _Sum(self, node, scope):
        if node.lower is not None or node.upper is not None:
            raise DefinitionError(f"--def: write a sum over a whole index without limits (\\sum_k); it runs over "
                                  f"k < K (column {node.pos})")
        letters = [_letter(i, node) for i in node.indices]
        body = self.convert(node.body, scope | set(letters))
        for letter in reversed(letters):
            body = _Summed(letter, body)
        return body

    def _Iverson(self, node, scope):
        return Iverson(self._condition(node.condition, scope))

    def _Cases(self, node, scope):
        rows = []
        for value, condition in node.rows:
            rows.append((self.convert(value, scope), sp.true if condition is None else self._condition(condition, scope)))
        if rows[-1][1] is not sp.true:
            raise DefinitionError(f"--def: the last case must be 'otherwise' (column {node.pos})")
        return sp.Piecewise(*rows)

    def _condition(self, node, scope):
        if isinstance(node, F.All):
            return sp.And(*(self._condition(p, scope) for p in node.parts))
        if not isinstance(node, F.Compare) or node.op in ("=", "!="):
            raise DefinitionError(f"--def: a condition compares with <, <=, > or >= (column {node.pos})")
        left, right = self.convert(node.left, scope), self.convert(node.right, scope)
        return {"<": sp.StrictLessThan, "<=": sp.LessThan, ">": sp.StrictGreaterThan,
                ">=": sp.GreaterThan}[node.op](left, right)

    # -- the op ------------------------------------------------------------------

    def op(self, name: str, no_grad: set, texts, outputs=()) -> Op:
        unused = set(self.hyper) - self.used_hyper
        if unused:
            raise DefinitionError(f"--hyper: {', '.join(sorted(unused))} is not used by the definitions")
        unknown = no_grad - set(self.order)
        if unknown:
            raise DefinitionError(f"--no-grad: {', '.join(sorted(unknown))} is not an input of the definitions")
        sizes = self._sizes()
        index = {letter: sp.Symbol(letter, integer=True) for letter in sizes}
        tensors = {}
        for tensor in self.order:
            shape = tuple(self._axis_size(tensor, axis, sizes) for axis in range(len(self.tensors[tensor])))
            tensors[tensor] = Tensor(tensor, *shape, integer=tensor in self.integer)
        hyper = {h: sp.Symbol(h, real=True) for h in self.hyper}
        nodes: dict = {}
        for node_name, (letters, definition) in self.defined.items():
            expr = self._build(definition, tensors, nodes, index, sizes, hyper)
            nodes[node_name] = Intermediate(node_name, tuple(index[c] for c in letters),
                                            tuple(sizes[c] for c in letters), expr)
        for also in outputs:
            if also not in nodes or also == self.last:
                raise DefinitionError(f"--also-output: {also!r} is not a definition before the last "
                                      f"(they are {', '.join(k for k in nodes if k != self.last) or 'none'})")
        output, also_outputs = nodes[self.last], tuple(nodes[k] for k in outputs)
        extra = tuple(n for k, n in nodes.items() if k != self.last and k not in outputs and n not in _uses(output))
        inputs = tuple(Input(tensors[t], differentiable=t not in no_grad and t not in self.integer,
                             domain="index" if t in self.integer else "real") for t in self.order)
        elementwise = _elementwise(nodes.values(), tensors.values())
        return Op(name=name, doc="An op defined on the command line (--def).", inputs=inputs, output=output,
                  also_outputs=also_outputs, extra=extra,
                  hyper=tuple(Hyper(hyper[h], v) for h, v in self.hyper.items()),
                  shape_kind="flat" if elementwise else "fixed",
                  origin=" ".join([*(f"--def {_quoted(t)}" for t in texts), f"--name {name}",
                                   *(f"--hyper {h}={v}" for h, v in self.hyper.items()),
                                   *(f"--no-grad {t}" for t in sorted(no_grad)),
                                   *(f"--also-output {k}" for k in outputs)]))

    def _sizes(self) -> dict:
        """Each index letter's size symbol. Letters that read the same axis run over the same size,
        named by the output's letter among them (else the first), in upper case; a taken name is primed."""
        parent = {}

        def find(c):
            while parent.setdefault(c, c) != c:
                c = parent[c]
            return c

        letters = set()
        for group in self.axes.values():
            first, *rest = sorted(group)
            letters |= group
            for c in rest:
                parent[find(c)] = find(first)
        for _, definition in self.defined.values():
            letters |= _summed_letters(definition)
        output = self.defined[self.last][0]
        classes: dict = {}
        for c in sorted(letters):
            classes.setdefault(find(c), []).append(c)
        taken = set(self.tensors) | set(self.defined) | set(self.hyper)
        sizes = {}
        for members in classes.values():
            head = next((c for c in output if c in members), members[0])
            upper = head.upper()
            while upper in taken:
                upper += "'"
            taken.add(upper)
            symbol = sp.Symbol(upper, integer=True, positive=True)
            sizes.update({c: symbol for c in members})
        return sizes

    def _axis_size(self, tensor: str, axis: int, sizes: dict):
        """The size of a tensor's axis: its letters' size, or for an axis only ever selected from by an
        integer input (an embedding's vocabulary, ``W_{idx_n, e}``) a size of its own, ``V``."""
        letters = self.axes.get((tensor, axis))
        if letters:
            return sizes[min(letters)]
        key = (tensor, axis)
        if key not in self.vocabularies:
            taken = {s.name for s in sizes.values()} | {v.name for v in self.vocabularies.values()} \
                | set(self.tensors) | set(self.defined) | set(self.hyper)
            name = "V"
            while name in taken:
                name += "'"
            self.vocabularies[key] = sp.Symbol(name, integer=True, positive=True)
        return self.vocabularies[key]

    def _build(self, expr, tensors, nodes, index, sizes, hyper):
        def visit(e):
            if isinstance(e, _Summed):
                return sp.Sum(visit(e.body), (index[e.letter], 0, sizes[e.letter] - 1))
            if isinstance(e, _Element):
                idx = tuple(visit(i) for i in e.indices)
                if e.name in nodes:
                    return nodes[e.name][idx] if idx else nodes[e.name]
                if e.name in self.defined:
                    raise DefinitionError(f"--def: {e.name} is used before its definition")
                return tensors[e.name][idx]
            if isinstance(e, _Letter):
                return index[e.letter]
            if isinstance(e, _Scalar):
                return hyper[e.name]
            if isinstance(e, _Size):
                found = [s for s in sizes.values() if s.name == e.name]
                if not found:
                    raise DefinitionError(f"--def: {e.name} is not the size of an index letter used "
                                          f"({', '.join(sorted(sizes))})")
                return found[0]
            if not isinstance(e, sp.Basic) or not e.args:
                return e
            return e.func(*(visit(a) for a in e.args))
        return visit(expr)


class _Placeholder(sp.Expr):
    """Stands for a name until the shapes are known."""

    def __new__(cls, *args):
        return sp.Expr.__new__(cls, *[sp.Symbol(a) if isinstance(a, str) else a for a in args])


class _Letter(_Placeholder):
    @property
    def letter(self):
        return self.args[0].name


class _Scalar(_Placeholder):
    @property
    def name(self):
        return self.args[0].name


class _Size(_Placeholder):
    @property
    def name(self):
        return self.args[0].name


def _symbol(name):
    return sp.Symbol(name) if isinstance(name, str) else name


class _Element(_Placeholder):
    def __new__(cls, name, indices):
        return sp.Expr.__new__(cls, _symbol(name), sp.Tuple(*indices))

    @property
    def name(self):
        return self.args[0].name

    @property
    def indices(self):
        return tuple(self.args[1])


class _Summed(_Placeholder):
    def __new__(cls, letter, body):
        return sp.Expr.__new__(cls, _symbol(letter), body)

    @property
    def letter(self):
        return self.args[0].name

    @property
    def body(self):
        return self.args[1]


def _quoted(text: str) -> str:
    """A definition as a shell would take it back: in single quotes, on one line."""
    one_line = " ".join(text.split())
    return "'" + one_line.replace("'", "'\\''") + "'"


def _summed_letters(expr) -> set:
    return {e.letter for e in sp.preorder_traversal(expr) if isinstance(e, _Summed)}


def _tensor_name(node: F.Name) -> str:
    """The array's name in code: ``W^{(2)}`` is ``W2``, ``\\hat{x}`` is ``xhat``, ``\\mu`` is ``mu``."""
    word = node.word
    if "^(" in word:
        base, tag = word.split("^(", 1)
        return base + tag.rstrip(")")
    for accent in ("hat", "tilde", "bar"):
        if word.startswith(f"\\{accent}{{"):
            return word[len(accent) + 2:-1] + accent
    return word


def _letter(item, node) -> str:
    if not isinstance(item, str) or not (item.isalpha() and len(item) == 1):
        raise DefinitionError(f"--def: an index is a single letter, got {F.index_text(item)!r} "
                              f"(column {node.pos})")
    return item


def _uses(node: Intermediate) -> set:
    found = set()
    for sub in sp.preorder_traversal(node.definition):
        if isinstance(sub, sp.Indexed) and isinstance(sub.base, Intermediate):
            found.add(sub.base)
            found |= _uses(sub.base)
    return found


def _elementwise(nodes, tensors) -> bool:
    """Every array read and defined with the same single index, nothing summed: any shape will do."""
    indices = set()
    for node in nodes:
        if node.definition.has(sp.Sum):
            return False
        indices.add(tuple(node.index))
        for sub in sp.preorder_traversal(node.definition):
            if isinstance(sub, sp.Indexed):
                indices.add(tuple(sub.indices))
    return len(indices) == 1 and len(next(iter(indices))) == 1 and all(t.rank == 1 for t in tensors)
