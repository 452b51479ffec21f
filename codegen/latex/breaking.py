"""Long displayed equations broken across aligned lines, so that nothing runs off the page.

An equation wider than the text is broken at its top-level ``+`` and ``-``
first, then at those inside its brackets (the brackets that a break crosses
become fixed-size ``\\biggl( ... \\biggr)``, since ``\\left ... \\right`` cannot
span lines), and only then between factors. Widths are estimated from the
TeX (em units, glyph widths of Computer Modern at display size); the
estimate errs on the wide side, and the tests compile every op's document
and find no overfull box. An equation that fits is returned unchanged.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

#: The widest a displayed line may be, in em: the text width of an 11pt article (360 pt, about
#: 32.7 em) less room for the equation number.
WIDTH = 28.0

_TOKEN = re.compile(r"\\[A-Za-z]+\*?|\\\\|\\.|[{}_^&]|\s+|.", re.S)

# widths in em of what is not a plain letter
_FIXED = {
    r"\sum": 1.45, r"\prod": 1.3, r"\partial": 0.6, r"\cdot": 0.8, r"\odot": 1.3, r"\oslash": 1.3, r"\times": 1.3,
    r"\leq": 1.35, r"\geq": 1.35, r"\neq": 1.35, r"\leftarrow": 1.55, r"\rightarrow": 1.55, r"\quad": 1.0,
    r"\qquad": 2.0, r"\,": 0.17, r"\;": 0.28, r"\ ": 0.33, r"\!": -0.17, r"\log": 1.45, r"\max": 1.75,
    r"\min": 1.6, r"\infty": 1.0, r"\ldots": 1.2, r"\cdots": 1.2, r"\mathbf": 0.0, r"\in": 1.2,
    r"\{": 0.5, r"\}": 0.5, r"\|": 0.5, r"\approx": 1.35, r"\equiv": 1.35, r"\tanh": 2.0, r"\exp": 1.6,
    r"\Bigl": 0.0, r"\Bigr": 0.0, r"\biggl": 0.0, r"\biggr": 0.0, r"\left": 0.0, r"\right": 0.0,
}
_ONE_ARG = {r"\vec", r"\hat", r"\tilde", r"\bar", r"\overrightarrow", r"\mathbf", r"\boldsymbol", r"\mathrm",
            r"\operatorname", r"\operatorname*", r"\mathit", r"\textbf", r"\overline", r"\underline", r"\mathbb"}
_RELATIONS = ("=", r"\leftarrow")


def _tokens(tex: str) -> list[str]:
    return _TOKEN.findall(tex)


@dataclass
class _Group:
    """``\\left( ... \\right)``: may be broken inside, its delimiters then fixed in size."""

    open: str  # "(" or "[" or "."
    close: str
    items: list = field(default_factory=list)
    spanning: bool = False


def _parse(tokens: list[str], start: int = 0, until: str | None = None):
    """Tokens to a list whose elements are token strings, lists (brace groups, ``{`` and ``}`` kept
    out) and ``_Group``; environments are kept whole as one string."""
    out, k = [], start
    while k < len(tokens):
        t = tokens[k]
        if t == "}" and until == "}":
            return out, k + 1
        if t == r"\right" and until == r"\right":
            return out, k
        if t == "{":
            inner, k = _parse(tokens, k + 1, "}")
            out.append(inner)
            continue
        if t == r"\begin":
            depth, j = 0, k
            while j < len(tokens):
                depth += tokens[j] == r"\begin"
                depth -= tokens[j] == r"\end"
                j += 1
                if depth == 0:
                    break
            j += 3  # \end { name }
            out.append("".join(tokens[k:j]))
            k = j
            continue
        if t == r"\left":
            opener = tokens[k + 1]
            inner, k = _parse(tokens, k + 2, r"\right")
            out.append(_Group(opener, tokens[k + 1], inner))
            k += 2
            continue
        out.append(t)
        k += 1
    return out, k


def _text(items) -> str:
    out = []
    for it in items:
        if isinstance(it, list):
            out.append("{" + _text(it) + "}")
        elif isinstance(it, _Group):
            left, right = (r"\left", r"\right") if not it.spanning else _sizes(it)
            out.append(f"{left}{it.open}{_text(it.items)}{right}{it.close}")
        else:
            out.append(it)
    return "".join(out)


def _sizes(group: _Group) -> tuple[str, str]:
    nested = any(isinstance(i, _Group) and i.spanning for i in _walk(group.items))
    return (r"\Biggl", r"\Biggr") if nested else (r"\biggl", r"\biggr")


def _walk(items):
    for it in items:
        if isinstance(it, _Group):
            yield it
            yield from _walk(it.items)


def width(tex: str) -> float:
    """The estimated width of displayed maths, in em."""
    return _width(_parse(_tokens(tex))[0])


def _width(items, scale: float = 1.0) -> float:
    total, k = 0.0, 0
    while k < len(items):
        it = items[k]
        k += 1
        if isinstance(it, list):
            total += _width(it, scale)
        elif isinstance(it, _Group):
            total += _width(it.items, scale) + 0.9 * scale
        elif it in ("_", "^"):
            script = items[k] if k < len(items) else ""
            k += 1
            w = _width(script if isinstance(script, list) else [script], scale * 0.72)
            if k < len(items) and items[k] in ("_", "^") and items[k] != it:  # x_{a}^{b}: the wider
                other = items[k + 1] if k + 1 < len(items) else ""
                w = max(w, _width(other if isinstance(other, list) else [other], scale * 0.72))
                k += 2
            total += w
        elif it.startswith(r"\begin"):
            total += _environment_width(it) * scale
        elif it == r"\frac":
            num, den = (items[k:k + 2] + [[], []])[:2]
            k += 2
            inner = scale * 0.9 if scale == 1.0 else scale * 0.72  # text style inside: smaller operators
            total += max(_width(num if isinstance(num, list) else [num], inner),
                         _width(den if isinstance(den, list) else [den], inner)) + 0.25 * scale
        elif it == r"\sqrt":
            arg = items[k] if k < len(items) else []
            k += 1
            total += _width(arg if isinstance(arg, list) else [arg], scale) + 0.9 * scale
        elif it in (r"\text", r"\mbox", r"\textrm"):
            arg = items[k] if k < len(items) else []
            k += 1
            total += _text_width(_text(arg) if isinstance(arg, list) else arg) * scale
        elif it in _ONE_ARG:
            arg = items[k] if k < len(items) else []
            k += 1
            total += _width(arg if isinstance(arg, list) else [arg], scale)
        elif it in _FIXED:
            total += _FIXED[it] * scale
        elif it.isspace() or it in ("&", "\\\\"):
            continue
        elif it.startswith("\\"):
            total += 0.65 * scale
        elif it in "+-=<>":
            total += (1.3 if scale == 1.0 else 0.8) * scale
        elif it in ",;":
            total += 0.45 * scale
        elif it in "()[]|":
            total += 0.4 * scale
        elif re.match(r"[\u2e80-\u9fff\uff00-\uffef]", it):
            total += 1.0 * scale
        else:
            total += 0.58 * scale
    return total


def _text_width(text: str) -> float:
    return sum(1.0 if re.match(r"[\u2e80-\u9fff\uff00-\uffef]", ch) else 0.5 for ch in text)


def _environment_width(env: str) -> float:
    """A matrix or cases: its widest row, plus delimiters."""
    body = re.sub(r"^\\begin\{\w+\*?\}|\\end\{\w+\*?\}$", "", env)
    rows = body.split("\\\\")
    return max((sum(width(cell) + 1.0 for cell in row.split("&")) for row in rows), default=0.0) + 1.0


# -- breaking ----------------------------------------------------------------------------

@dataclass
class _Atom:
    text: str
    width: float
    groups: tuple = ()  # the groups this atom sits inside, outermost first
    opportunity: int | None = None  # a break may come before this atom: its priority (lower is better)
    lead: str = ""  # what a line that starts here begins with (the operator, or \cdot)
    delimiter: int = 0  # 1: opens the innermost of ``groups``, 2: closes it


def _atoms(items, groups=(), depth=0) -> list[_Atom]:
    """The row as atoms: runs without spaces, group delimiters; breaks allowed before ``+``/``-``
    terms (priority 2 per bracket depth) and between factors (after the terms one bracket deeper)."""
    out: list[_Atom] = []
    run: list = []

    def flush():
        if run:
            out.append(_Atom(_text(run), _width(run), groups))
            run.clear()

    previous = ""  # the last significant token at this depth
    plain = 0  # inside plain brackets (an Iverson bracket's [ ... ]): no breaks
    k = 0
    while k < len(items):
        it = items[k]
        if isinstance(it, str) and it in ("[", "("):
            plain += 1
        elif isinstance(it, str) and it in ("]", ")"):
            plain -= 1
        if isinstance(it, _Group) and it.open != "(":  # a bracket [0 <= i <= K - 1] is one condition: unbroken
            run.append(it)
            previous = ")"
            k += 1
            continue
        if isinstance(it, _Group):
            flush()
            out.append(_Atom(r"\left" + it.open, 0.45, groups + (it,), delimiter=1))
            out += _atoms(it.items, groups + (it,), depth + 1)
            out.append(_Atom(r"\right" + it.close, 0.45, groups + (it,), delimiter=2))
            previous = ")"
            k += 1
            continue
        if isinstance(it, str) and it.isspace() and plain > 0:
            run.append(it)
            k += 1
            continue
        if isinstance(it, str) and it.isspace():
            flush()
            nxt = next((n for n in items[k + 1:] if not (isinstance(n, str) and n.isspace())), None)
            if nxt in ("+", "-") and previous not in ("", "=", "(", "+", "-", r"\leftarrow", "&"):
                out.append(_Atom(" ", 0.0, groups, 2 * depth))
            elif nxt in (r"\star", r"\odot", r"\oslash") and previous not in ("", "=", "(", r"\leftarrow", "&"):
                out.append(_Atom(" ", 0.0, groups, 2 * depth + 3))  # as between factors, with no \cdot
            elif previous == r"\quad," or nxt == r"\quad":
                out.append(_Atom(" ", 0.0, groups, -1))
            elif (previous and nxt is not None and previous not in ("+", "-", "=", r"\leftarrow", "&", "big")
                  and nxt not in ("+", "-", "=", r"\leftarrow", "&", ",", r"\quad")
                  and not (isinstance(nxt, str) and nxt.startswith("^"))):
                out.append(_Atom(" ", 0.0, groups, 2 * depth + 3, lead=r"\cdot "))
            else:
                out.append(_Atom(it, 0.0, groups))
            k += 1
            continue
        run.append(it)
        if isinstance(it, str) and it in (r"\sum", r"\prod", r"\max", r"\log", r"\operatorname*", r"\frac"):
            previous = "big"  # an operator and its scripts: never break before its operand
        elif isinstance(it, str) and it in ("_", "^") and previous == "big":
            pass
        elif isinstance(it, list) and previous == "big":
            pass
        elif isinstance(it, str) and it == ",":
            previous = r"\quad," if k + 2 < len(items) and items[k + 1:k + 2] == [r"\quad"] else ","
        else:
            previous = it if isinstance(it, str) else "x"
        k += 1
    flush()
    return out


def _lines(atoms: list[_Atom], first: float, rest: float, allowed: int) -> list[list[_Atom]]:
    """Greedy: fill each line; past its width, end it at the best opportunity it holds."""
    lines, line, used = [], [], 0.0
    k = 0
    while k < len(atoms):
        a = atoms[k]
        limit = first if not lines else rest
        if used + a.width > limit and line:
            chances = [p for p, b in enumerate(line) if p and b.opportunity is not None and b.opportunity <= allowed]
            if chances:
                best = min(line[p].opportunity for p in chances)
                cut = max(p for p in chances if line[p].opportunity == best)
                lines.append(line[:cut])
                line = line[cut:]
                used = sum(b.width for b in line) + _lead_width(line[0])
                continue
        line.append(a)
        used += a.width
        k += 1
    lines.append(line)
    return lines


def _lead_width(atom: _Atom) -> float:
    return 1.0 + (0.8 if atom.lead else 0.0)


def _break_row(prefix: str, body: str, column: float) -> list[str]:
    """``prefix`` (``lhs &=``) then ``body``, as lines of an ``aligned``; one line if it fits."""
    items = _parse(_tokens(body))[0]
    atoms = _atoms(items)
    first, rest = WIDTH - column - 1.5, WIDTH - column
    if sum(a.width for a in atoms) <= first:
        return [prefix + body]
    worst = max((a.opportunity for a in atoms if a.opportunity is not None), default=None)
    if worst is None:
        return [prefix + body]
    for allowed in range(-1, worst + 1):
        lines = _lines(atoms, first, rest, allowed)
        if all(sum(a.width for a in ln) <= (first if p == 0 else rest) for p, ln in enumerate(lines)):
            break
    for ln in lines[1:]:  # the groups a break crosses get fixed-size delimiters
        for g in ln[0].groups:
            g.spanning = True
    out = []
    for p, ln in enumerate(lines):
        text = "".join(_delimiter(a) for a in ln).strip()
        if p == 0:
            out.append(prefix + text)
        else:
            lead = ln[0].lead
            out.append(r"&\quad " + lead + text)
    return out


def _delimiter(atom: _Atom) -> str:
    """An atom's text, with a spanning group's ``\\left``/``\\right`` made fixed-size."""
    if atom.delimiter and atom.groups[-1].spanning:
        return _sizes(atom.groups[-1])[atom.delimiter - 1] + atom.text[len(r"\left" if atom.delimiter == 1 else r"\right"):]
    return atom.text


def _split_top(tex: str, separator: str) -> list[str]:
    """``tex`` at each top-level ``separator``, which is dropped."""
    tokens = _tokens(tex)
    depth, pieces, start = 0, [], 0
    for k, t in enumerate(tokens):
        depth += t in ("{", r"\left", r"\begin", "(", "[")
        depth -= t in ("}", r"\right", r"\end", ")", "]")
        if depth == 0 and t == separator:
            pieces.append("".join(tokens[start:k]))
            start = k + 1
    return pieces + ["".join(tokens[start:])]


def _split_relations(row: str) -> list[str]:
    """A row at its top-level relations: ``a = b = c`` to ``a``, ``= b``, ``= c``."""
    tokens = _tokens(row)
    depth, pieces, start = 0, [], 0
    for k, t in enumerate(tokens):
        if t in ("{", r"\left", r"\begin", "(", "["):
            depth += 1
        elif t in ("}", r"\right", r"\end", ")", "]"):
            depth -= 1
        elif depth == 0 and t in _RELATIONS:
            pieces.append("".join(tokens[start:k]))
            start = k
    pieces.append("".join(tokens[start:]))
    return pieces


def fit(tex: str) -> str:
    """``tex`` (one line, or an ``aligned`` of rows) with every row that is too wide broken into lines."""
    aligned = tex.startswith("\\begin{aligned}\n") and tex.endswith("\n\\end{aligned}")
    if not aligned and width(tex) <= WIDTH:
        return tex
    if aligned:
        rows = tex[len("\\begin{aligned}\n"):-len("\n\\end{aligned}")].split(" \\\\\n")
        pairs = [row.split("&", 1) if "&" in row else [row, ""] for row in rows]
    else:
        first, *after = _split_top(tex, r"\quad")  # "a = b,\quad W = M": W's relation is not a's
        pieces = _split_relations(first)
        if len(pieces) < 2:
            return tex
        pairs = [[pieces[0].rstrip() + " ", pieces[1]]] + [["", p] for p in pieces[2:]]
        pairs = [[left, right.lstrip()] for left, right in pairs] + [["", r"\quad " + p.strip()] for p in after]
    column = max(width(left) for left, _ in pairs)
    lines, broken = [], False
    for left, right in pairs:
        relation = next((r for r in _RELATIONS if right.startswith(r)), "")
        body = right[len(relation):].lstrip()
        prefix = f"{left}&{relation} " if relation else f"{left}&"
        rows = _break_row(prefix, body, column + width(relation) + 0.5)
        broken |= len(rows) > 1
        lines += rows
    if aligned and not broken:
        return tex
    return "\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}"


def unbroken(tex: str) -> str:
    """``tex`` with the breaks ``fit`` made taken out again: each row on one line, brackets ``\\left``/``\\right``."""
    tex = tex.replace(" \\\\\n&\\quad \\cdot ", " ").replace(" \\\\\n&\\quad ", " ")
    for size in (r"\Bigg", r"\bigg"):
        tex = tex.replace(size + "l", r"\left").replace(size + "r", r"\right")
    return tex
