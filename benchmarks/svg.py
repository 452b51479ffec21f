"""The size sweep as an SVG picture: one log-log panel per op, one line per peer.

Written by hand (a few rectangles, polylines and labels) so that the
benchmark needs no plotting library.
"""
from __future__ import annotations

import math
from html import escape

COLORS = {"generated": "#1f77b4", "bare": "#7f7f7f", "torch": "#d62728", "autograd": "#2ca02c",
          "derivation": "#9467bd"}
PANEL_W, PANEL_H, COLUMNS = 300, 220, 3
LEFT, RIGHT, TOP, BOTTOM = 58, 24, 28, 40
HEADER = 70


def sweep_svg(panels: list, title: str) -> str:
    """``panels``: (op, batch size name, {peer: [(batch, seconds), ...]}); derivation is a flat line."""
    rows = math.ceil(len(panels) / COLUMNS)
    width, height = COLUMNS * PANEL_W, HEADER + rows * PANEL_H
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">{escape(title)}</text>']
    x = 20
    for peer, color in COLORS.items():
        dash = ' stroke-dasharray="5,3"' if peer == "derivation" else ""
        out.append(f'<line x1="{x}" y1="44" x2="{x + 24}" y2="44" stroke="{color}" stroke-width="2"{dash}/>')
        label = "derivation (once, symbolic sizes)" if peer == "derivation" else peer
        out.append(f'<text x="{x + 30}" y="48">{escape(label)}</text>')
        x += 40 + 7 * len(label)
    for number, panel in enumerate(panels):
        ox = (number % COLUMNS) * PANEL_W
        oy = HEADER + (number // COLUMNS) * PANEL_H
        out += _panel(ox, oy, *panel)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _panel(ox, oy, op, batch_name, lines) -> list:
    xs = [b for points in lines.values() for b, _ in points]
    ys = [s for points in lines.values() for _, s in points if s > 0]
    x_lo, x_hi = math.log10(min(xs)), math.log10(max(xs))
    y_lo, y_hi = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
    x_hi, y_hi = max(x_hi, x_lo + 1e-9), max(y_hi, y_lo + 1)
    left, right, top, bottom = ox + LEFT, ox + PANEL_W - RIGHT, oy + TOP, oy + PANEL_H - BOTTOM

    def px(b):
        return left + (math.log10(b) - x_lo) / (x_hi - x_lo) * (right - left)

    def py(s):
        return bottom - (math.log10(s) - y_lo) / (y_hi - y_lo) * (bottom - top)

    out = [f'<text x="{(left + right) / 2}" y="{oy + 16}" text-anchor="middle" font-weight="bold">'
           f'{escape(op)}</text>',
           f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" stroke="#999"/>']
    for decade in range(y_lo, y_hi + 1):
        y = py(10.0 ** decade)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{_seconds(10.0 ** decade)}</text>')
    for b in sorted(set(xs)):
        out.append(f'<text x="{px(b):.1f}" y="{bottom + 14}" text-anchor="middle">{_count(b)}</text>')
    out.append(f'<text x="{(left + right) / 2}" y="{bottom + 30}" text-anchor="middle">{escape(batch_name)}</text>')
    for peer, points in lines.items():
        points = [(b, s) for b, s in sorted(points) if s > 0]
        dash = ' stroke-dasharray="5,3"' if peer == "derivation" else ""
        path = " ".join(f"{px(b):.1f},{py(s):.1f}" for b, s in points)
        out.append(f'<polyline points="{path}" fill="none" stroke="{COLORS[peer]}" stroke-width="2"{dash}/>')
        out += [f'<circle cx="{px(b):.1f}" cy="{py(s):.1f}" r="2.5" fill="{COLORS[peer]}"/>'
                for b, s in points if peer != "derivation"]
    return out


def _count(n: int) -> str:
    """A batch size that fits under its tick: 524288 as 524k."""
    for suffix, factor in (("M", 1e6), ("k", 1e4)):
        if n >= factor:
            return f"{n / (factor if suffix == 'M' else 1e3):.3g}{suffix}"
    return str(n)


def _seconds(s: float) -> str:
    for unit, factor in (("s", 1), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= factor:
            return f"{s / factor:g} {unit}"
    return f"{s * 1e9:g} ns"
