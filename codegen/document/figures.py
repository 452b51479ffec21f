"""Pictures for documents: the layered network graph and the tensor shapes through a chain.

Each picture is laid out once (coordinates in points, y growing downwards)
and drawn twice from that layout: as SVG beside Markdown and as TikZ inside
LaTeX, so the two always show the same thing. Output is plain text with
fixed number formatting, deterministic byte for byte.
"""
from __future__ import annotations

from dataclasses import dataclass
import re
from html import escape

LAYER_GAP = 230.0  # horizontal distance between layers
NODE_GAP = 80.0  # vertical distance between nodes of a layer
RADIUS = 20.0
LABEL_AT = 48.0  # how far from the target node's rim a weight label sits: where the edges into it fan out
MAX_NODES = 12  # per layer: beyond this the picture is unreadable
TEXT_WIDTH = 340.0  # points: a LaTeX picture wider than this is scaled down to it


@dataclass(frozen=True)
class Label:
    """A short formula: a base and an optional subscript (``w`` and ``41``); TeX says it in full."""

    base: str
    sub: str = ""
    tex: str = ""
    after: str = ""  # text after the subscript, back on the baseline

    def svg(self) -> str:
        text = escape(self.base)
        if self.sub:
            text += f'<tspan dy="4" font-size="75%">{escape(self.sub)}</tspan>'
        if self.after:
            text += f'<tspan dy="{-4 if self.sub else 0}">{escape(self.after)}</tspan>'
        return text

    def math(self) -> str:
        return self.tex or (f"{self.base}_{{{self.sub}}}" if self.sub else self.base)


@dataclass(frozen=True)
class Text:
    x: float
    y: float
    label: Label
    size: float = 13.0
    anchor: str = "middle"  # middle | start | end
    plain: bool = False  # words, not maths (set upright in TikZ)
    halo: bool = False  # on a white patch, for a label that sits on lines


@dataclass(frozen=True)
class Circle:
    x: float
    y: float
    r: float
    fill: str


@dataclass(frozen=True)
class Box:
    x: float
    y: float
    width: float
    height: float
    fill: str
    square: bool = False  # a grid cell: square corners
    outline: bool = False  # no fill, a thick red rim: what a picture points at (a window, a position)


@dataclass(frozen=True)
class Arrow:
    x1: float
    y1: float
    x2: float
    y2: float
    head: bool = True
    dashed: bool = False  # the bias's edges


@dataclass(frozen=True)
class Picture:
    """Shapes in drawing order, and the size of the canvas."""

    width: float
    height: float
    shapes: tuple

    def svg(self) -> str:
        out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_n(self.width)} {_n(self.height)}" '
               f'width="{_n(self.width)}" height="{_n(self.height)}" font-family="serif">',
               '<defs><marker id="head" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
               'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#333"/></marker></defs>',
               f'<rect width="{_n(self.width)}" height="{_n(self.height)}" fill="white"/>']
        for s in self.shapes:
            if isinstance(s, Arrow):
                head = ' marker-end="url(#head)"' if s.head else ""
                head += ' stroke-dasharray="5,3"' if s.dashed else ""
                out.append(f'<line x1="{_n(s.x1)}" y1="{_n(s.y1)}" x2="{_n(s.x2)}" y2="{_n(s.y2)}" '
                           f'stroke="#333" stroke-width="1.2"{head}/>')
            elif isinstance(s, Circle):
                out.append(f'<circle cx="{_n(s.x)}" cy="{_n(s.y)}" r="{_n(s.r)}" fill="{s.fill}" '
                           'stroke="#333" stroke-width="1.5"/>')
            elif isinstance(s, Box):
                corner = "" if s.square or s.outline else ' rx="4"'
                paint = 'fill="none" stroke="#c0392b" stroke-width="3"' if s.outline else \
                    f'fill="{s.fill}" stroke="#333" stroke-width="1.2"'
                out.append(f'<rect x="{_n(s.x)}" y="{_n(s.y)}" width="{_n(s.width)}" height="{_n(s.height)}"'
                           f'{corner} {paint}/>')
            elif isinstance(s, Text):
                style = "" if s.plain else ' font-style="italic"'
                if s.halo:
                    style += ' stroke="white" stroke-width="3" paint-order="stroke"'
                out.append(f'<text x="{_n(s.x)}" y="{_n(s.y)}" font-size="{_n(s.size)}" '
                           f'text-anchor="{s.anchor}" dominant-baseline="central"{style}>{s.label.svg()}</text>')
        out.append("</svg>")
        return "\n".join(out) + "\n"

    def tikz(self) -> str:
        """A ``tikzpicture``, y flipped, its coordinates scaled to fit the text width; text keeps its size."""
        scale = min(1.0, TEXT_WIDTH / self.width)
        out = [rf"\begin{{tikzpicture}}[x={_n3(scale)}pt,y=-{_n3(scale)}pt,>=stealth]"]
        for s in self.shapes:
            if isinstance(s, Arrow):
                style = ("->, thick" if s.head else "thin") + (", dashed" if s.dashed else "")
                out.append(rf"\draw[{style}] ({_n(s.x1)},{_n(s.y1)}) -- ({_n(s.x2)},{_n(s.y2)});")
            elif isinstance(s, Circle):
                out.append(rf"\draw[fill={_tikz_color(s.fill)}, thick] ({_n(s.x)},{_n(s.y)}) circle ({_n(s.r)});")
            elif isinstance(s, Box):
                style = "draw=red!75!black, line width=1.8pt" if s.outline else \
                    f"fill={_tikz_color(s.fill)}" + ("" if s.square else ", rounded corners=2pt")
                out.append(rf"\draw[{style}] ({_n(s.x)},{_n(s.y)}) rectangle ({_n(s.x + s.width)},{_n(s.y + s.height)});")
            elif isinstance(s, Text):
                anchor = {"middle": "", "start": ", anchor=west", "end": ", anchor=east"}[s.anchor]
                body = rf"\text{{{tex_escape(s.label.math())}}}" if s.plain else s.label.math()
                fill = ", fill=white, inner sep=1pt" if s.halo else ""
                size = s.size * 0.75 * max(scale, 0.8)
                out.append(rf"\node[font=\fontsize{{{_n(size)}}}{{{_n(size * 1.2)}}}\selectfont{anchor}{fill}] "
                           rf"at ({_n(s.x)},{_n(s.y)}) {{${body}$}};")
        out.append(r"\end{tikzpicture}")
        return "\n".join(out)


TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "#": r"\#", "_": r"\_", "{": r"\{",
               "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "$": r"\$"}


def tex_escape(text: str) -> str:
    """Plain words for TeX: the characters TeX would read as commands, escaped in one pass."""
    return re.sub(r"[\\&%#_{}~^$]", lambda m: TEX_SPECIAL[m.group()], text)


def _n3(value: float) -> str:
    return f"{value:.3f}"


def _n(value: float) -> str:
    """A coordinate with at most one decimal, no trailing zeros: stable text for stable files."""
    text = f"{value:.1f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


COLORS = {"#dbe9f6": "blue!12", "#fde8d7": "orange!18", "#e3f1de": "green!12", "#f2f2f2": "black!6",
          "white": "white", "#f5b7b1": "red!25"}


def _tikz_color(svg: str) -> str:
    return COLORS[svg]


# -- the layered network ------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    """One layer of nodes in the graph: its caption (words) and what its nodes apply."""

    caption: str
    nodes: int
    detail: str = ""  # the activation, under the caption


def weight_label(element: str, target: int, source: int) -> Label:
    """``w_{41}``: the later node first, as the article writes it; a comma once numbers reach 10."""
    sub = f"{target}{source}" if max(target, source) < 10 else f"{target},{source}"
    return Label(element, sub)


def bias_label(element: str, target: int) -> Label:
    """``w_{b_4}``: the weight of the constant input 1 into node 4, the bias folded in."""
    return Label(element, f"b{target}", tex=f"{element}_{{b_{{{target}}}}}")


def network_picture(columns: list[Column], element: str = "w") -> Picture:
    """Nodes numbered 1, 2, ... layer by layer, a bias node (+1) above each layer but the last;
    every edge labelled with its weight (``w_{41}``, ``w_{b_4}``)."""
    for c in columns:
        if not 1 <= c.nodes <= MAX_NODES:
            raise ValueError(f"sizes: each layer needs 1 to {MAX_NODES} nodes for the picture, got {c.nodes}")
    tallest = max(c.nodes for c in columns)
    top = 40.0 + NODE_GAP  # the bias nodes' row above the tallest layer
    height = top + (tallest - 1) * NODE_GAP + 2 * RADIUS + 70
    width = 2 * 70 + (len(columns) - 1) * LAYER_GAP
    fills = ["#dbe9f6"] + ["#fde8d7"] * (len(columns) - 2) + ["#e3f1de"]
    positions = []  # per column: [(number, x, y)]
    number = 1
    for p, c in enumerate(columns):
        x = 70 + p * LAYER_GAP
        y0 = top + RADIUS + (tallest - c.nodes) * NODE_GAP / 2
        positions.append([(number + r, x, y0 + r * NODE_GAP) for r in range(c.nodes)])
        number += c.nodes
    shapes = []
    labels = []
    bias_y = top - NODE_GAP + RADIUS
    for left, right in zip(positions, positions[1:]):
        bx = left[0][1]
        shapes.append(Circle(bx, bias_y, RADIUS * 0.8, "#f2f2f2"))
        shapes.append(Text(bx, bias_y, Label("+1"), size=13, plain=True))
        for t, tx, ty in right:
            dx, dy = tx - bx, ty - bias_y
            length = (dx * dx + dy * dy) ** 0.5
            ux, uy = dx / length, dy / length
            shapes.append(Arrow(bx + ux * RADIUS * 0.8, bias_y + uy * RADIUS * 0.8, tx - ux * RADIUS,
                                ty - uy * RADIUS, head=True, dashed=True))
            along = 0.3 * length  # near the bias node, clear of the weight labels by the targets
            labels.append(Text(bx + ux * along, bias_y + uy * along, bias_label(element, t), size=11, halo=True))
        for t, tx, ty in right:
            for s, sx, sy in left:
                dx, dy = tx - sx, ty - sy
                length = (dx * dx + dy * dy) ** 0.5
                ux, uy = dx / length, dy / length
                shapes.append(Arrow(sx + ux * RADIUS, sy + uy * RADIUS, tx - ux * RADIUS, ty - uy * RADIUS))
                along = RADIUS + LABEL_AT
                labels.append(Text(tx - ux * along, ty - uy * along, weight_label(element, t, s), size=11, halo=True))
    shapes += labels
    for p, (c, column) in enumerate(zip(columns, positions)):
        for n, x, y in column:
            shapes.append(Circle(x, y, RADIUS, fills[min(p, len(fills) - 1)] if p < len(columns) - 1 else fills[-1]))
            shapes.append(Text(x, y, Label(str(n)), size=14, plain=True))
        x = column[0][1]
        shapes.append(Text(x, height - 45, Label(c.caption), size=13, plain=True))
        if c.detail:
            shapes.append(Text(x, height - 25, Label(c.detail), size=12, plain=True))
    return Picture(width, height, tuple(shapes))


# -- tensor shapes through a chain ----------------------------------------------------

@dataclass(frozen=True)
class Stage:
    """One op of the chain: its name, its parameters with their shapes, and the tensor it makes."""

    op: str
    params: tuple  # (Label, shape Label)
    output: Label
    shape: Label


def shapes_picture(first: Label, first_shape: Label, stages: list[Stage]) -> Picture:
    """Tensors top to bottom, each op on the arrow between them, its parameters beside it."""
    box_w, box_h, step = 150.0, 30.0, 66.0
    x0 = 20.0
    shapes = []
    y = 20.0

    def tensor(label, shape, y, fill):
        shapes.append(Box(x0, y, box_w, box_h, fill))
        shapes.append(Text(x0 + 12, y + box_h / 2, label, size=14, anchor="start"))
        shapes.append(Text(x0 + box_w - 10, y + box_h / 2, shape, size=12, anchor="end", plain=shape.tex == ""))

    tensor(first, first_shape, y, "#dbe9f6")
    widest = x0 + box_w
    for stage in stages:
        mid = x0 + box_w / 2
        shapes.append(Arrow(mid, y + box_h, mid, y + step))
        shapes.append(Text(mid + 12, y + box_h + (step - box_h) / 2, Label(stage.op), size=12, anchor="start",
                           plain=True))
        px = mid + 20 + sum(13 if ord(ch) > 0x2e80 else 7.5 for ch in stage.op) + 14
        for label, shape in stage.params:
            text = Label(label.base, label.sub, rf"{label.math()}:\ {shape.math()}", f": {shape.base}")
            shapes.append(Text(px, y + box_h + (step - box_h) / 2, text, size=12, anchor="start"))
            px += 8 * len(label.base + label.sub + shape.base) + 34
        widest = max(widest, px)
        y += step
        tensor(stage.output, stage.shape, y, "#e3f1de" if stage is stages[-1] else "#fde8d7")
    return Picture(widest + 20, y + box_h + 20, tuple(shapes))


def shape_label(sizes, scalar_word: str) -> Label:
    """``N × I`` (TeX ``N \\times I``); a scalar is said in words."""
    if not sizes:
        return Label(scalar_word)
    return Label(" × ".join(sizes), tex=r" \times ".join(sizes))


# -- what an op does, on a small example ---------------------------------------------------------

CELL = 30.0


def _grid(shapes, x0, y0, values, fills, size=CELL):
    """A grid of cells with a number in each (``values`` rows of text), ``fills`` per cell."""
    for r, row in enumerate(values):
        for c, value in enumerate(row):
            shapes.append(Box(x0 + c * size, y0 + r * size, size, size, fills[r][c], square=True))
            if value != "":
                shapes.append(Text(x0 + (c + 0.5) * size, y0 + (r + 0.5) * size, Label(value), size=11, plain=True))


def window_picture(height: int, width: int, pad: int, kernel: int, stride: int, at: tuple,
                   words: dict) -> Picture:
    """conv2d: the padded input (padding grey), the kernel's window for output position ``at``, and
    that position in the output."""
    ph, pw = height + 2 * pad, width + 2 * pad
    oh, ow = (ph - kernel) // stride + 1, (pw - kernel) // stride + 1
    i, j = at
    fills = [["#f2f2f2" if not (pad <= r < pad + height and pad <= c < pad + width) else "#dbe9f6"
              for c in range(pw)] for r in range(ph)]
    values = [["0" if fills[r][c] == "#f2f2f2" else "" for c in range(pw)] for r in range(ph)]
    shapes = []
    x0, y0 = 20.0, 40.0
    _grid(shapes, x0, y0, values, fills)
    shapes.append(Box(x0 + j * stride * CELL, y0 + i * stride * CELL, kernel * CELL, kernel * CELL, "", outline=True))
    shapes.append(Text(x0 + pw * CELL / 2, 20, Label(words["padded"]), size=12, plain=True))
    ox = x0 + pw * CELL + 90
    oy = y0 + (ph - oh) * CELL / 2
    out_fills = [["#f5b7b1" if (r, c) == at else "#e3f1de" for c in range(ow)] for r in range(oh)]
    _grid(shapes, ox, oy, [[""] * ow for _ in range(oh)], out_fills)
    shapes.append(Text(ox + ow * CELL / 2, 20, Label(words["output"]), size=12, plain=True))
    shapes.append(Arrow(x0 + (j * stride + kernel) * CELL + 6, y0 + (i * stride + kernel / 2) * CELL,
                        ox + j * CELL - 4, oy + (i + 0.5) * CELL))
    label = Label("y", f"o,{i},{j}", tex=rf"y_{{o,{i},{j}}}")
    shapes.append(Text(ox + (j + 0.5) * CELL, oy + (i + 0.5) * CELL, label, size=11))
    bottom = y0 + ph * CELL
    shapes.append(Text(x0, bottom + 22, Label(words["window"]), size=11, plain=True, anchor="start"))
    return Picture(ox + ow * CELL + 20, bottom + 40, tuple(shapes))


def pooling_picture(x, out, mask, words: dict) -> Picture:
    """max_pool2d: the input with each window's first maximum marked (the mask), and the output."""
    shapes = []
    x0, y0 = 20.0, 40.0
    h, w = x.shape
    fills = [["#f5b7b1" if mask[r][c] else "#dbe9f6" for c in range(w)] for r in range(h)]
    _grid(shapes, x0, y0, [[f"{v:g}" for v in row] for row in x], fills)
    k = h // out.shape[0]
    for r in range(out.shape[0]):
        for c in range(out.shape[1]):
            shapes.append(Box(x0 + c * k * CELL, y0 + r * k * CELL, k * CELL, k * CELL, "", outline=True))
    shapes.append(Text(x0 + w * CELL / 2, 20, Label(words["input"]), size=12, plain=True))
    ox = x0 + w * CELL + 70
    oy = y0 + (h - out.shape[0]) * CELL / 2
    _grid(shapes, ox, oy, [[f"{v:g}" for v in row] for row in out], [["#e3f1de"] * out.shape[1]] * out.shape[0])
    shapes.append(Text(ox + out.shape[1] * CELL / 2, 20, Label(words["output"]), size=12, plain=True))
    shapes.append(Arrow(x0 + w * CELL + 8, y0 + h * CELL / 2, ox - 8, y0 + h * CELL / 2))
    shapes.append(Text(x0, y0 + h * CELL + 22, Label(words["mask"]), size=11, plain=True, anchor="start"))
    return Picture(ox + out.shape[1] * CELL + 20, y0 + h * CELL + 40, tuple(shapes))


def statistics_picture(x, mean, var, words: dict) -> Picture:
    """batch_norm: a batch (rows: samples, columns: channels) and each channel's mean and variance."""
    shapes = []
    n, c = x.shape
    x0, y0, width = 90.0, 40.0, 44.0
    for k in range(c):
        shapes.append(Text(x0 + (k + 0.5) * width, 22, Label(words["channel"].format(k + 1)), size=12, plain=True))
    _grid(shapes, x0, y0, [[f"{v:g}" for v in row] for row in x], [["#dbe9f6"] * c] * n, size=width)
    for r in range(n):
        shapes.append(Text(x0 - 10, y0 + (r + 0.5) * width, Label(words["sample"].format(r + 1)), size=12,
                           plain=True, anchor="end"))
    k = c - 1
    shapes.append(Box(x0 + k * width, y0, width, n * width, "", outline=True))
    below = y0 + n * width + 14
    for row, (name, tex, values) in enumerate((("μ", r"\mu_{c}", mean), ("σ²", r"\sigma^{2}_{c}", var))):
        y = below + row * width
        _grid(shapes, x0, y, [[f"{v:.3g}" for v in values]], [["#e3f1de"] * c], size=width)
        shapes.append(Text(x0 - 10, y + width / 2, Label(name, tex=tex), size=13, anchor="end"))
    shapes.append(Arrow(x0 + (k + 0.5) * width, y0 + n * width, x0 + (k + 0.5) * width, below))
    return Picture(x0 + c * width + 20, below + 2 * width + 20, tuple(shapes))
