"""Read a formula a person typed: the article's LaTeX, or a plain-text syntax, into a small syntax tree.

The grammars are our own (lark, LALR): user text is never handed to
``eval``, ``sympify`` or ``parse_latex`` (../shared/SYMPY-NOTES.md), and
``w_{kj}`` stays the element (k, j) of ``w``, distinct from ``w_{jk}``.
The tree says only what was written; what each name means (which tensor,
which index range) is ``derive.verifier.meaning``'s job. Input is refused before
parsing when it is too long or nested too deeply, so that hostile text
costs no time.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import lark
from lark import Lark, Token, Transformer, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

MAX_CHARS = 2000
MAX_NESTING = 24
MAX_SIGNS = 100  # + and -: each nests the tree one level deeper


class FormulaError(ValueError):
    """The text is not a formula we can read; ``column`` (1-based) points at the trouble."""

    def __init__(self, message: str, column: int | None = None, text: str = ""):
        self.column, self.message = column, message
        where = f" at column {column}" if column else ""
        context = ""
        if column and text:
            start = max(0, column - 16)
            snippet = text[start:column + 8].replace("\n", " ")
            context = f' (near "{snippet}")'
        super().__init__(f"formula: {message}{where}{context}")


# -- the syntax tree -------------------------------------------------------

@dataclass(frozen=True)
class Node:
    pos: int  # 1-based column of the node's first character (0 when unknown)


@dataclass(frozen=True)
class Num(Node):
    value: Fraction


@dataclass(frozen=True)
class Name(Node):
    """A symbol as written: ``w_{kj}`` is ``Name("w", ("k", "j"))``; ``W_2`` has ``layer=2``.

    An index is a letter (``"k"``, ``"k'"``) or an ``IndexExpr`` (``x_{n, c, i s + p}``).
    Accents are part of the word (``\\hat{x}``), as is a layer tag ``y^{(3)}``
    (word ``y^(3)``), so that the symbol table decides what each means.
    """

    word: str
    indices: tuple | None = None
    decorated: bool = False  # \vec, \mathbf, \boldsymbol: an array
    layer: int | None = None
    arrow: bool = False  # \vec or \overrightarrow: a vector


@dataclass(frozen=True)
class IndexExpr(Node):
    """An index that is not a plain letter: ``i s + p`` in ``x_{n, c, i s + p}``."""

    expr: Node


@dataclass(frozen=True)
class Ones(Node):
    """``\\mathbf{1}``: a vector of ones whose length the product around it decides."""


@dataclass(frozen=True)
class Product(Node):
    """Factors with the operators between them: ``juxt``, ``cdot``, ``times`` (products), ``odot``,
    ``emul`` (elementwise), ``matmul``, ``div``, ``oslash``, ``mod`` (``\\bmod``, in index arithmetic)."""

    factors: tuple
    ops: tuple


@dataclass(frozen=True)
class Add(Node):
    left: Node
    right: Node
    minus: bool


@dataclass(frozen=True)
class Neg(Node):
    arg: Node


@dataclass(frozen=True)
class Pow(Node):
    base: Node
    exp: Node
    elementwise: bool = False


@dataclass(frozen=True)
class Transpose(Node):
    arg: Node


@dataclass(frozen=True)
class Sum(Node):
    """``\\sum_{k}`` (full range), ``\\sum_{k=1}^{K}`` or ``sum(body, k)``."""

    indices: tuple
    body: Node
    lower: Node | None = None
    upper: Node | None = None


@dataclass(frozen=True)
class AxisSum(Node):
    """Plain syntax ``sum(A, axis=0)``: the sum over one axis of an array."""

    arg: Node
    axis: int


@dataclass(frozen=True)
class Call(Node):
    """A function applied to an argument: ``exp``, ``log``, ``tanh``, ``sqrt``, ``sigma``..."""

    func: str
    arg: Node
    power: Node | None = None  # \tanh^{2}(x)


@dataclass(frozen=True)
class Frac(Node):
    num: Node
    den: Node


@dataclass(frozen=True)
class Partial(Node):
    """``\\partial E`` inside a fraction; ``arg`` is None for the operator ``\\frac{\\partial}{\\partial x}``."""

    arg: Node | None


@dataclass(frozen=True)
class Compare(Node):
    op: str  # > < >= <= = !=
    left: Node
    right: Node


@dataclass(frozen=True)
class All(Node):
    """A chained comparison ``0 \\le a \\le K - 1``: every one of ``parts`` (each a ``Compare``) holds."""

    parts: tuple


@dataclass(frozen=True)
class Iverson(Node):
    """``[x_i > 0]``: 1 where the condition (a ``Compare`` or ``All``) holds, else 0."""

    condition: Node


@dataclass(frozen=True)
class Cases(Node):
    """``\\begin{cases} a & c \\\\ b & \\text{otherwise} \\end{cases}``; a condition None is "otherwise"."""

    rows: tuple


@dataclass(frozen=True)
class Equation(Node):
    """``a = b = c``: one or more parts."""

    parts: tuple


# -- grammars ----------------------------------------------------------------

LATEX_GRAMMAR = r"""
start: part (EQ part)*
?part: expr

?expr: signed
     | expr PLUS product   -> add
     | expr MINUS product  -> sub
?signed: product
       | MINUS signed      -> neg
       | PLUS signed       -> pos
?product: factors
        | sum_op
factors: factor (MULOP? factor)* (MULOP? sum_op)?
sum_op: SUM sum_limits signed
sum_limits: SUB_ONE                         -> limits_one
          | SUB_OPEN index_list "}"         -> limits_list
          | SUB_OPEN index_list EQ expr "}" sup_limit -> limits_range
sup_limit: SUP_ONE | SUP_OPEN expr "}"

?factor: atom
       | atom SUP_ONE subscript?            -> sup_one
       | atom SUP_OPEN expr "}" subscript?  -> sup_expr
       | atom SUP_OPEN CIRC expr "}" -> sup_circ
       | atom SUP_TOP            -> sup_top
       | atom SUP_TAG subscript? -> tagged
?atom: NUMBER                    -> number
     | name
     | LPAR expr RPAR            -> group
     | LBRACE expr "}"           -> group
     | LBRACK expr RBRACK        -> group
     | LBRACK expr (rel expr)+ RBRACK -> iverson
     | FRAC LBRACE expr "}" LBRACE expr "}" -> frac
     | SQRT LBRACE expr "}"      -> sqrt
     | ABS_OPEN expr ABS_CLOSE   -> abs
     | FUNC func_arg             -> call
     | FUNC SUP_OPEN expr "}" func_arg -> call_power
     | FUNC SUP_ONE func_arg     -> call_power
     | FUNC subscript            -> plain_name
     | FUNC SUP_OPEN expr "}" subscript? -> function_name_power
     | FUNC SUP_ONE subscript?   -> function_name_power
     | PARTIAL factor            -> partial
     | PARTIAL                   -> partial_op
     | BEGIN_CASES case_row (ROWSEP case_row)* ROWSEP? END_CASES -> cases
?func_arg: atom
case_row: expr AMP condition
?condition: expr (rel expr)+ -> compare
          | TEXT               -> otherwise
?name: word
     | TOP                        -> top
?word: NAME subscript?            -> plain_name
     | GREEK subscript?           -> plain_name
     | TEXT subscript?            -> text_name
     | DECOR LBRACE inner "}" subscript? -> decorated
     | ACCENT LBRACE inner "}" subscript? -> accented
?inner: word
      | FUNC subscript?           -> plain_name
      | NUMBER                    -> number
subscript: SUB_ONE               -> sub_one
         | SUB_OPEN sub_item (COMMA sub_item)* "}" -> sub_list
?sub_item: expr
index_list: (NAME | NUMBER | COMMA)+
?rel: REL | EQ

EQ: "=" | "&=" | "& ="
PLUS: "+"
MINUS: "-"
MULOP: /\\(cdot|times|odot|circ|oslash|bmod)(?![A-Za-z])/ | "*" | "/"
REL: /\\(geq|ge|leq|le|neq|ne)(?![A-Za-z])/ | ">=" | "<=" | ">" | "<"
AMP: "&"
ROWSEP: "\\\\"
COMMA: ","
CIRC: /\\circ(?![A-Za-z])/
SUM: /\\sum(\s*\\limits)?/
FRAC: /\\[dt]?frac(?![A-Za-z])/
SQRT: /\\sqrt(?![A-Za-z])/
FUNC.1: /\\(exp|log|ln|tanh|sigma|erf|Phi|varphi|phi)(?![A-Za-z])/
      | /\\(operatorname|mathrm|text|rm)\s*\{\s*(erf|softplus|sign|sgn|sigmoid)\s*\}/
ABS_OPEN: /\\left\s*\|/ | /\\lvert(?![A-Za-z])/ | /\\[bB]igg?l\s*\|/ | /\uE000/
ABS_CLOSE: /\\right\s*\|/ | /\\rvert(?![A-Za-z])/ | /\\[bB]igg?r\s*\|/ | /\uE001/
PARTIAL: /\\partial(?![A-Za-z])/
BEGIN_CASES: /\\begin\s*\{\s*cases\s*\}/
END_CASES: /\\end\s*\{\s*cases\s*\}/
TEXT: /\\(text|mathrm|operatorname|textrm|rm|mathit)\s*\{([^{}\\]|\\.)*\}/
DECOR: /\\(vec|mathbf|boldsymbol|bm|overrightarrow|mathbold)(?![A-Za-z])/
ACCENT: /\\(hat|widehat|tilde|widetilde|bar|overline)(?![A-Za-z])/
TOP: /\\(top|intercal)(?![A-Za-z])/
GREEK.-1: /\\(?!(sum|frac|dfrac|tfrac|sqrt|partial|begin|end|left|right|cdot|times|odot|circ|oslash|bmod|geq|ge|leq|le|neq|ne)(?![A-Za-z]))[A-Za-z]+/
NAME: /[A-Za-z]+'*/
NUMBER: /\d+(\.\d+)?/
SUB_ONE: /_\s*[A-Za-z0-9]'*/
SUB_OPEN: /_\s*\{/
SUP_ONE: /\^\s*[A-Za-z0-9]/
SUP_OPEN: /\^\s*\{/
SUP_TOP: /\^\s*\\(top|intercal)/
SUP_TAG.2: /\^\s*\{\s*\(\s*\d+\s*\)\s*\}/
LPAR: "(" | /\\left\s*\(/ | /\\[bB]igg?l?\s*\(/
RPAR: ")" | /\\right\s*\)/ | /\\[bB]igg?r?\s*\)/
LBRACK: "[" | /\\left\s*\[/ | /\\[bB]igg?l?\s*\[/
RBRACK: "]" | /\\right\s*\]/ | /\\[bB]igg?r?\s*\]/
LBRACE: "{"
SPACING: /\\(,|;|!|:| |quad|qquad|displaystyle|textstyle|left\.|right\.)/ | "~"
%ignore SPACING
%ignore /\s+/
"""

#: One name in the plain syntax: a network's tensors by their code names too (``W_5``, ``dy_4``, ``W_h``).
PLAIN_NAME = r"[A-Za-z][A-Za-z0-9']*(_[A-Za-z0-9]+)*"

PLAIN_GRAMMAR = r"""
start: expr (EQ expr)*

?expr: term
     | expr PLUS term      -> add
     | expr MINUS term     -> sub
?term: factor
     | term STAR factor    -> emul
     | term SLASH factor   -> div
     | term AT factor      -> matmul
?factor: power
       | MINUS factor      -> neg
       | PLUS factor       -> pos
?power: postfix
      | postfix POW factor -> power
?postfix: atom
        | postfix LBRACK index_list RBRACK -> index
        | postfix DOT_T                    -> transpose
?atom: NUMBER                        -> number
     | NAME                          -> name
     | NAME LPAR args RPAR           -> call
     | LPAR expr RPAR                -> group
     | LPAR expr (REL expr)+ RPAR    -> iverson
args: arg (COMMA arg)*
?arg: expr
    | NAME EQ expr                   -> keyword
index_list: expr (COMMA expr)*

EQ: "="
PLUS: "+"
MINUS: "-"
STAR: "*"
SLASH: "/"
AT: "@"
POW: "**" | "^"
DOT_T: ".T"
REL: ">=" | "<=" | "==" | "!=" | ">" | "<"
COMMA: ","
LPAR: "("
RPAR: ")"
LBRACK: "["
RBRACK: "]"
NAME: /""" + PLAIN_NAME + r"""/
NUMBER: /\d+(\.\d+)?/
%ignore /\s+/
"""


@lru_cache(maxsize=None)
def _parser(syntax: str) -> Lark:
    grammar = LATEX_GRAMMAR if syntax == "latex" else PLAIN_GRAMMAR
    options = dict(parser="lalr", propagate_positions=True, maybe_placeholders=False)
    path = _stored_parser(grammar, options)
    if path is not None:
        try:
            with open(path, "rb") as f:
                return Lark.load(f)
        except Exception:  # absent or damaged: built again and written over
            pass
    parser = Lark(grammar, **options)
    if path is not None:
        _store_parser(parser, path)
    return parser


def _stored_parser(grammar: str, options: dict):
    """Where the grammar's parse tables are kept (building them takes 0.2 s, a new process's whole budget
    for refusing a malformed formula): beside the derivations, in the cache a command turned on, under
    its rule (a directory of this user's that nobody else may write to); else nowhere."""
    from derive.engine.cache import active
    store = active()
    if store is None:
        return None
    store.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not store._trusted():
        return None
    key = hashlib.sha256(f"lark {lark.__version__} python {sys.version_info[:2]} {sorted(options.items())}\n"
                         f"{grammar}".encode()).hexdigest()
    return store.directory / f"parser-{key}.pickle"


def _store_parser(parser: Lark, path) -> None:
    """Written to a temporary file and renamed into place, so that a reader never sees half of it."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            parser.save(f)
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


# -- tree -> syntax tree ---------------------------------------------------------

FUNCTIONS = {"exp": "exp", "log": "log", "ln": "log", "tanh": "tanh", "sigma": "sigma", "sqrt": "sqrt",
             "sigmoid": "sigma", "erf": "erf", "Phi": "Phi", "phi": "phi", "varphi": "phi", "softplus": "softplus",
             "sign": "sign", "sgn": "sign", "abs": "abs"}
REL_OPS = {">": ">", "<": "<", r"\geq": ">=", r"\ge": ">=", r"\leq": "<=", r"\le": "<=", ">=": ">=",
           "<=": "<=", "=": "=", "==": "=", r"\neq": "!=", r"\ne": "!=", "!=": "!="}
OTHERWISE = {"otherwise", "else", "其他", "否则", "sonst"}
MUL_OPS = {r"\cdot": "cdot", r"\times": "times", "*": "cdot", r"\odot": "odot", r"\circ": "odot",
           r"\oslash": "oslash", "/": "div", r"\bmod": "mod"}
GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu",
         "nu", "xi", "pi", "rho", "sigma", "tau", "upsilon", "phi", "chi", "psi", "omega", "Gamma", "Delta",
         "Theta", "Lambda", "Xi", "Pi", "Sigma", "Upsilon", "Phi", "Psi", "Omega"}
#: Accents that make another name (``\bar{x}`` is not ``x``), by the word they are read as.
ACCENTS = {"hat": "hat", "widehat": "hat", "tilde": "tilde", "widetilde": "tilde", "bar": "bar", "overline": "bar"}
ARROWS = {"vec", "overrightarrow"}


def name_text(word: str) -> str:
    """A word as TeX: ``mu`` is ``\\mu``, ``sigma^2`` is ``\\sigma^{2}``, ``y^(3)`` is ``y^{(3)}``."""
    if "^(" in word:
        base, tag = word.split("^(", 1)
        return f"{name_text(base)}^{{({tag.rstrip(')')})}}"
    if "^" in word:
        base, power = word.split("^", 1)
        return f"{name_text(base)}^{{{power}}}"
    return "\\" + word if word in GREEK else word


def index_text(index) -> str:
    """One index as written: a letter, or an index expression (``i s + p``)."""
    if isinstance(index, str):
        return index
    return _unparse(index.expr)


def _unparse(node: Node) -> str:
    if isinstance(node, Num):
        return str(node.value)
    if isinstance(node, Name):
        return name_text(node.word)
    if isinstance(node, Neg):
        return "-" + _unparse(node.arg)
    if isinstance(node, Add):
        return f"{_unparse(node.left)} {'-' if node.minus else '+'} {_unparse(node.right)}"
    if isinstance(node, Product):
        return " ".join(_unparse(f) for f in node.factors)
    return "?"


def _col(item) -> int:
    if isinstance(item, Token):
        return item.column or 0
    if isinstance(item, Node):
        return item.pos
    if isinstance(item, Tree) and not item.meta.empty:
        return item.meta.column
    return 0


def _number(token: Token) -> Num:
    text = str(token)
    if len(text.replace(".", "")) > 12:
        raise FormulaError("number too long (12 digits at most)", token.column)
    return Num(token.column, Fraction(text))


def _indices(items) -> tuple:
    """``kj`` -> (k, j); ``k'j`` -> (k', j); ``k,j`` -> (k, j); ``12`` -> (1, 2)."""
    out: list[str] = []
    for item in items:
        if item.type == "COMMA":
            continue
        split_letters(str(item), out)
    return tuple(out)


def split_letters(text: str, out: list) -> None:
    """``k'j`` -> k', j appended to ``out``."""
    for char in text:
        if char == "'":
            out[-1] += "'"
        else:
            out.append(char)


def _index_items(items) -> tuple:
    """A subscript's items: runs of letters (``kj``, ``n'c``) give one index per letter; anything
    else (``i s + p``) is one ``IndexExpr``."""
    out: list = []
    for item in items:
        if isinstance(item, Token):  # a comma
            continue
        letters = _letters(item)
        if letters is None:
            out.append(IndexExpr(item.pos, item))
        else:
            split_letters(letters, out)
    return tuple(out)


def _letters(node) -> str | None:
    """The letters a subscript item spells, or None if it is an expression."""
    if isinstance(node, Num) and node.value.denominator == 1 and node.value >= 0:
        return str(node.value)
    if isinstance(node, Name) and node.indices is None and node.layer is None and not node.decorated \
            and node.word.replace("'", "").isalpha() and node.word not in GREEK and node.word[0] != "'":
        return node.word
    if isinstance(node, Product) and all(op == "juxt" for op in node.ops):
        parts = [_letters(f) for f in node.factors]
        if all(p is not None and not p.isdigit() for p in parts):
            return "".join(parts)
    return None


def _function_word(token: Token) -> str:
    """``\\tanh`` is tanh, ``\\operatorname{erf}`` is erf."""
    text = str(token).lstrip("\\")
    return text.split("{", 1)[1].rstrip("}").strip() if "{" in text else text


def _sub_one(token: Token) -> tuple:
    return (str(token).lstrip("_").strip(),)


def _with_subscript(name: Node, indices, column: int) -> Node:
    """``name`` with a subscript written after it (``\\hat{x}_{ncs}``, ``\\sigma^{2}_{c}``)."""
    if indices is None:
        return name
    if isinstance(name, Pow) and not name.elementwise:
        return dataclasses.replace(name, base=_with_subscript(name.base, indices, column))
    if not isinstance(name, Name) or name.indices is not None or name.layer is not None:
        raise FormulaError("a subscript must follow a name", column)
    return _name(name.pos, name.word, indices, name.decorated, name.arrow)


def _conditions(items) -> Node:
    """``a < b`` or a chain ``0 \\le a \\le b`` (items: expr, rel, expr, rel, expr...)."""
    parts = []
    for at in range(1, len(items), 2):
        left, rel, right = items[at - 1], items[at], items[at + 1]
        parts.append(Compare(_col(left), REL_OPS[_rel(rel)], left, right))
    return parts[0] if len(parts) == 1 else All(parts[0].pos, tuple(parts))


class _Latex(Transformer):
    """Lark's parse tree of the LaTeX grammar -> our syntax tree."""

    def start(self, items):
        parts = [i for i in items if not (isinstance(i, Token) and i.type == "EQ")]
        return Equation(_col(parts[0]), tuple(parts))

    def add(self, items):
        return Add(_col(items[0]), items[0], items[2], minus=False)

    def sub(self, items):
        return Add(_col(items[0]), items[0], items[2], minus=True)

    def neg(self, items):
        return Neg(_col(items[0]), items[1])

    def pos(self, items):
        return items[1]

    def factors(self, items):
        factors, ops = [items[0]], []
        pending = "juxt"
        for item in items[1:]:
            if isinstance(item, Token) and item.type == "MULOP":
                pending = MUL_OPS[str(item)]
                continue
            factors.append(item)
            ops.append(pending)
            pending = "juxt"
        if len(factors) == 1:
            return factors[0]
        return Product(_col(factors[0]), tuple(factors), tuple(ops))

    def sum_op(self, items):
        token, (indices, lower, upper), body = items
        return Sum(token.column, indices, body, lower, upper)

    def limits_one(self, items):
        return _sub_one(items[0]), None, None

    def limits_list(self, items):
        return _indices(items[1].children), None, None

    def limits_range(self, items):
        indices = _indices(items[1].children)
        return indices, items[3], items[4]

    def sup_limit(self, items):
        item = items[-1] if len(items) > 1 else items[0]
        if isinstance(item, Token) and item.type == "SUP_ONE":
            return _sup_one(item)
        return item

    def sup_one(self, items):
        base, token, *sub = items
        return _with_subscript(_superscript(base, _sup_one(token)), sub[0] if sub else None, token.column)

    def sup_expr(self, items):
        base, token, exp, *sub = items
        return _with_subscript(_superscript(base, exp), sub[0] if sub else None, token.column)

    def sup_circ(self, items):
        base, token, _, exp = items
        return Pow(_col(base), base, exp, elementwise=True)

    def sup_top(self, items):
        return Transpose(_col(items[0]), items[0])

    def tagged(self, items):
        """``y^{(3)}``: a name told apart by a tag (the chain's layer number), not a power."""
        base, token, *sub = items
        if not isinstance(base, Name) or base.layer is not None:
            raise FormulaError("a tag ^{(3)} must follow a name", token.column)
        tag = "".join(c for c in str(token) if c.isdigit())
        tagged = Name(base.pos, f"{base.word}^({tag})", base.indices, base.decorated, None, base.arrow)
        return _with_subscript(tagged, sub[0] if sub else None, token.column)

    def number(self, items):
        return _number(items[0])

    def group(self, items):
        return items[1]

    def iverson(self, items):
        return Iverson(_col(items[0]), _conditions(items[1:-1]))

    def frac(self, items):
        return Frac(items[0].column, items[2], items[4])

    def sqrt(self, items):
        return Call(items[0].column, "sqrt", items[2])

    def call(self, items):
        token, arg = items
        return Call(token.column, FUNCTIONS[_function_word(token)], arg)

    def call_power(self, items):
        token, sup, *rest = items
        power = _sup_one(sup) if isinstance(sup, Token) and sup.type == "SUP_ONE" else rest[0]
        arg = rest[-1]
        return Call(token.column, FUNCTIONS[_function_word(token)], arg, power)

    def abs(self, items):
        return Call(_col(items[0]), "abs", items[1])

    def function_name_power(self, items):
        """``\\sigma^{2}_{c}``: not the sigmoid but a name (the variance), squared or so named."""
        token, sup, *rest = items
        exp = _sup_one(sup) if sup.type == "SUP_ONE" else rest.pop(0)
        base = Name(token.column, _function_word(token))
        return _with_subscript(Pow(token.column, base, exp), rest[0] if rest else None, sup.column)

    def partial(self, items):
        return Partial(items[0].column, items[1])

    def partial_op(self, items):
        return Partial(items[0].column, None)

    def cases(self, items):
        rows = tuple(i for i in items if isinstance(i, tuple))
        return Cases(items[0].column, rows)

    def case_row(self, items):
        return (items[0], items[2])

    def compare(self, items):
        return _conditions(items)

    def otherwise(self, items):
        word = _text_word(items[0])
        if word.strip().lower() not in OTHERWISE:
            raise FormulaError(f"a condition must compare two values or say \\text{{otherwise}}, not {word!r}",
                               items[0].column)
        return None

    def plain_name(self, items):
        token = items[0]
        word = _function_word(token)
        if token.type in ("GREEK", "FUNC"):
            word = {"varepsilon": "epsilon", "varrho": "rho", "vartheta": "theta", "varphi": "phi"}.get(word, word)
        indices = items[1] if len(items) > 1 else None
        return _name(token.column, word, indices, decorated=False)

    def text_name(self, items):
        token = items[0]
        indices = items[1] if len(items) > 1 else None
        return _name(token.column, _text_word(token), indices, decorated=False)

    def decorated(self, items):
        """``\\vec{y}_1``, ``\\boldsymbol{\\delta}``, ``\\vec{\\hat{x}}``, ``\\mathbf{1}``."""
        token, _, inner, *sub = items
        if isinstance(inner, Num):
            if inner.value != 1 or sub:
                raise FormulaError("only \\mathbf{1} (a vector of ones) may be a bold number", token.column)
            return Ones(token.column)
        arrow = str(token).lstrip("\\") in ARROWS or inner.arrow
        named = Name(token.column, inner.word, inner.indices, True, inner.layer, arrow)
        return _with_subscript(named, sub[0] if sub else None, token.column)

    def accented(self, items):
        """``\\hat{x}``, ``\\bar{\\mu}``, ``\\hat{\\vec{x}}``: the accent makes another name."""
        token, _, inner, *sub = items
        if isinstance(inner, Num):
            raise FormulaError("an accent needs a name", token.column)
        word = f"\\{ACCENTS[str(token).lstrip(chr(92))]}{{{name_text(inner.word)}}}"
        named = Name(token.column, word, inner.indices, inner.decorated, inner.layer, inner.arrow)
        return _with_subscript(named, sub[0] if sub else None, token.column)

    def top(self, items):
        return Name(items[0].column, "T")

    def sub_one(self, items):
        return _sub_one(items[0])

    def sub_list(self, items):
        return _index_items(items[1:])


def _rel(token) -> str:
    return " ".join(str(token).split())


def _sup_one(token: Token) -> Node:
    char = str(token).lstrip("^").strip()
    if char.isdigit():
        return Num(token.column, Fraction(char))
    return Name(token.column, char)


def _superscript(base: Node, exp: Node) -> Node:
    if isinstance(exp, Name) and exp.word == "T" and exp.indices is None:
        return Transpose(_col(base), base)
    return Pow(_col(base), base, exp)


def _text_word(token: Token) -> str:
    text = str(token)
    return text[text.index("{") + 1:-1].replace("\\_", "_").strip()


def _name(column: int, word: str, indices, decorated: bool, arrow: bool = False) -> Node:
    """A name; a subscript of digits alone is a layer number (``W_2``), else it lists indices."""
    if indices and all(isinstance(i, str) and i.isdigit() for i in indices):
        return Name(column, word, None, decorated, layer=int("".join(indices)), arrow=arrow)
    return Name(column, word, tuple(indices) if indices else None, decorated, arrow=arrow)


class _Plain(Transformer):
    """Lark's parse tree of the plain grammar -> our syntax tree."""

    def start(self, items):
        parts = [i for i in items if not (isinstance(i, Token) and i.type == "EQ")]
        return Equation(_col(parts[0]), tuple(parts))

    def add(self, items):
        return Add(_col(items[0]), items[0], items[2], minus=False)

    def sub(self, items):
        return Add(_col(items[0]), items[0], items[2], minus=True)

    def _binary(self, items, op):
        left, right = items[0], items[2]
        if isinstance(left, Product) and left.ops and not isinstance(left, _Grouped):
            return Product(left.pos, left.factors + (right,), left.ops + (op,))
        return Product(_col(left), (left, right), (op,))

    def emul(self, items):
        return self._binary(items, "emul")

    def div(self, items):
        return self._binary(items, "div")

    def matmul(self, items):
        return self._binary(items, "matmul")

    def neg(self, items):
        return Neg(_col(items[0]), items[1])

    def pos(self, items):
        return items[1]

    def power(self, items):
        return Pow(_col(items[0]), items[0], items[2])

    def index(self, items):
        base = items[0]
        if not isinstance(base, Name) or base.indices is not None:
            raise FormulaError("only a name can be indexed", _col(items[1]))
        return Name(base.pos, base.word, _index_items(items[2].children), base.decorated, base.layer)

    def transpose(self, items):
        return Transpose(_col(items[0]), items[0])

    def number(self, items):
        return _number(items[0])

    def name(self, items):
        token = items[0]
        word, _, layer = str(token).rpartition("_")
        if word and layer.isdigit():
            return Name(token.column, word, None, layer=int(layer))
        return Name(token.column, str(token))

    def group(self, items):
        inner = items[1]
        return _Grouped(inner.pos, inner.factors, inner.ops) if isinstance(inner, Product) else inner

    def iverson(self, items):
        return Iverson(_col(items[1]), _conditions(items[1:-1]))

    def call(self, items):
        token, _, args, _ = items
        word = str(token)
        positional = [a for a in args if not isinstance(a, tuple)]
        keywords = dict(a for a in args if isinstance(a, tuple))
        if word == "sum":
            return _plain_sum(token, positional, keywords)
        if word == "ones":
            if positional or keywords:
                raise FormulaError("ones takes no arguments: its length follows from the product", token.column)
            return Ones(token.column)
        if word == "transpose" and len(positional) == 1 and not keywords:
            return Transpose(token.column, positional[0])
        if word not in FUNCTIONS:
            raise FormulaError(f"unknown function {word!r} (known: sum, ones, transpose, "
                               f"{', '.join(sorted(FUNCTIONS))})", token.column)
        if len(positional) != 1 or keywords:
            raise FormulaError(f"{word} takes one argument", token.column)
        return Call(token.column, FUNCTIONS[word], positional[0])

    def args(self, items):
        return [i for i in items if not (isinstance(i, Token) and i.type == "COMMA")]

    def keyword(self, items):
        return (str(items[0]), items[2])


class _Grouped(Product):
    """A parenthesised product: ``(a*b)*c`` keeps its own factor list."""


def _plain_sum(token, positional, keywords) -> Node:
    if "axis" in keywords:
        axis = keywords.pop("axis")
        if keywords or len(positional) != 1 or not isinstance(axis, Num) or axis.value not in (0, 1):
            raise FormulaError("write sum(A, axis=0) or sum(A, axis=1)", token.column)
        return AxisSum(token.column, positional[0], int(axis.value))
    if keywords or len(positional) < 2:
        raise FormulaError("write sum(expression, k) to sum over the index k", token.column)
    body, *over = positional
    names = []
    for item in over:
        if not (isinstance(item, Name) and item.indices is None and item.layer is None):
            raise FormulaError("sum(expression, k): k must be an index letter", _col(item))
        names.append(item.word)
    return Sum(token.column, tuple(names), body)


# -- entry point ---------------------------------------------------------------

def check_size(text: str) -> None:
    """Refuse, before parsing, what is too long, nested too deep, too long a chain of terms or unbalanced."""
    if not isinstance(text, str):
        raise FormulaError(f"expected text, got {type(text).__name__}")
    if len(text) > MAX_CHARS:
        raise FormulaError(f"too long ({len(text)} characters, at most {MAX_CHARS})")
    if not text.strip():
        raise FormulaError("empty")
    if any(ord(c) < 32 and c not in "\t\n\r" for c in text):
        column = next(i for i, c in enumerate(text) if ord(c) < 32 and c not in "\t\n\r") + 1
        raise FormulaError("control character", column)
    signs = sum(text.count(c) for c in "+-")
    if signs > MAX_SIGNS:
        raise FormulaError(f"too many + and - signs ({signs}, at most {MAX_SIGNS})")
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[tuple[str, int]] = []
    at = 0
    while at < len(text):
        char, column = text[at], at + 1
        at += 1
        if char == "\\":  # \{ \} \\ \, : the character after a backslash is no bracket
            at += 1
            continue
        if char in "([{":
            stack.append((char, column))
            if len(stack) > MAX_NESTING:
                raise FormulaError(f"nested too deeply (at most {MAX_NESTING} levels)", column, text)
        elif char in ")]}":
            if not stack or stack[-1][0] != pairs[char]:
                raise FormulaError(f"unbalanced '{char}'", column, text)
            stack.pop()
    if stack:
        char, column = stack[-1]
        raise FormulaError(f"unbalanced '{char}' (never closed)", column, text)


def detect_syntax(text: str) -> str:
    """LaTeX if the text has a backslash, a brace or an underscore (but not where an array is indexed the
    plain way, ``running_var[c]``, ``xp[n, c, i*s_H + p, ...]``); else plain."""
    if any(c in text for c in "\\{"):
        return "latex"
    if "_" in text and not re.search(r"[A-Za-z0-9]\[", text):
        return "latex"
    return "plain"


def parse(text: str, syntax: str = "auto") -> Equation:
    """The syntax tree of ``text`` (``syntax``: ``latex``, ``plain`` or ``auto``)."""
    if syntax not in ("auto", "latex", "plain"):
        raise ValueError(f"syntax: expected 'auto', 'latex' or 'plain', got {syntax!r}")
    check_size(text)
    text = _strip_math_delimiters(text)
    if syntax != "auto":
        return _parse(text, syntax)
    first = detect_syntax(text)
    try:
        return _parse(text, first)
    except FormulaError as error:
        other = "plain" if first == "latex" else "latex"
        try:
            tree = _parse(text, other)
        except FormulaError:
            raise error from None
        if other == "plain" and not re.search(r"@|\*\*|\.T\b", text) and \
                re.search(r"[A-Za-z]_[a-z](?![A-Za-z0-9])", text):
            raise error  # y_j is LaTeX's subscript, wrongly written, unless the rest is plain (W_h @ X)
        return tree


def _strip_math_delimiters(text: str) -> str:
    """``$...$``, ``\\[...\\]`` and a trailing full stop or comma are not part of the formula."""
    stripped = text.strip()
    for left, right in (("$$", "$$"), ("$", "$"), (r"\[", r"\]"), (r"\(", r"\)")):
        if stripped.startswith(left) and stripped.endswith(right) and len(stripped) > len(left) + len(right):
            pad = text.index(left)
            inner = stripped[len(left):-len(right)]
            return " " * (pad + len(left)) + inner
    return text.rstrip().rstrip(".,;") if stripped.endswith((".", ",", ";")) else text


#: What a bare ``|`` becomes, by whether it opens or closes an absolute value (one character each, so that
#: columns stay the user's): LALR cannot tell ``|a| b`` from ``|a |b||`` by the bar alone.
BAR_OPEN, BAR_CLOSE = "\uE000", "\uE001"
_BEFORE_OPERAND = set("([{+-=<>&,*/^_") | {BAR_OPEN}
_OPERATOR_COMMANDS = {"cdot", "times", "odot", "circ", "oslash", "bmod", "le", "leq", "ge", "geq", "ne", "neq", "frac",
                      "sqrt", "left", "sum", "limits", "quad", "qquad"}


def mark_bars(text: str) -> str:
    """Each bare ``|`` as an opening or a closing bar: opening at depth 0 or where an operand is due
    (after an operator, a bracket, another opening bar), closing elsewhere. ``\\left|``, ``\\|`` and the
    like are left as they are."""
    out, depth, previous = [], 0, ""  # previous: the last significant character, or the last command
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            match = re.match(r"\\([A-Za-z]+|.)", text[i:])
            command = match.group(1)
            out.append(match.group(0))
            i += len(match.group(0))
            if command == "|" or command in ("left", "right") or re.fullmatch(r"[bB]igg?[lr]?", command):
                while i < len(text) and text[i].isspace():
                    out.append(text[i])
                    i += 1
                if i < len(text) and text[i] == "|" and command != "|":
                    out.append("|")
                    i += 1
            previous = "(" if command in _OPERATOR_COMMANDS else "a"
            continue
        if char == "|":
            opens = depth == 0 or previous in _BEFORE_OPERAND
            out.append(BAR_OPEN if opens else BAR_CLOSE)
            depth += 1 if opens else -1
            previous = BAR_OPEN if opens else "a"
        else:
            out.append(char)
            if not char.isspace():
                previous = char
        i += 1
    return "".join(out)


def _parse(text: str, syntax: str) -> Equation:
    try:
        tree = _parser(syntax).parse(mark_bars(text) if syntax == "latex" else text)
        return (_Latex() if syntax == "latex" else _Plain()).transform(tree)
    except VisitError as error:
        if isinstance(error.orig_exc, FormulaError):
            raise FormulaError(*_split(error.orig_exc), text=text) from None
        raise
    except UnexpectedEOF:
        raise FormulaError("the formula ends too early", len(text.rstrip()) + 1, text) from None
    except UnexpectedCharacters as error:
        raise FormulaError(_unexpected_character(text, error), error.column, text) from None
    except UnexpectedToken as error:
        token = error.token
        if token.type == "$END":
            raise FormulaError("the formula ends too early", len(text.rstrip()) + 1, text) from None
        raise FormulaError(f"unexpected {str(token)!r}", token.column, text) from None
    except UnexpectedInput as error:  # pragma: no cover - the three kinds above are all lark raises
        raise FormulaError("cannot read this", getattr(error, "column", None), text) from None


def _split(error: FormulaError):
    message = str(error).removeprefix("formula: ")
    if error.column:
        message = message.split(" at column ")[0]
    return message, error.column


def _unexpected_character(text: str, error: UnexpectedCharacters) -> str:
    at = error.pos_in_stream
    if text[at] == "\\":
        word = "\\" + "".join(c for c in text[at + 1:at + 20] if c.isalpha()).split(" ")[0]
        return f"unknown command {word}"
    return f"unexpected character {text[at]!r}"
