"""Inline SVG bar charts: no script, no external asset, so the page is one self-contained file."""

from __future__ import annotations

from datetime import datetime
from html import escape

WIDTH, HEIGHT = 420, 150
LEFT, RIGHT, TOP, BOTTOM = 36, 8, 22, 24  # margins for the axis labels and the title


def bar_chart(title: str, starts: list[datetime], values: list[int], colour: str) -> str:
    """One series as bars over time buckets; each bar's <title> gives its bucket and count."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    peak = max(values, default=0) or 1
    step = plot_w / max(len(values), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">',
        f'<text x="{LEFT}" y="14" class="t">{escape(title)} (total {sum(values)})</text>',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}" '
        'stroke="#888"/>',
        f'<text x="{LEFT - 4}" y="{TOP + 8}" class="a" text-anchor="end">{peak}</text>',
        f'<text x="{LEFT - 4}" y="{TOP + plot_h}" class="a" text-anchor="end">0</text>',
    ]
    for i, (start, value) in enumerate(zip(starts, values, strict=True)):
        h = plot_h * value / peak
        x, y = LEFT + i * step + 1, TOP + plot_h - h
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(step - 2, 1):.1f}" height="{h:.1f}" '
            f'fill="{colour}"><title>{start:%Y-%m-%d %H:%M} UTC: {value}</title></rect>'
        )
    if starts:
        parts.append(
            f'<text x="{LEFT}" y="{HEIGHT - 6}" class="a">{starts[0]:%Y-%m-%d %H:%M}</text>'
            f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 6}" class="a" text-anchor="end">'
            f"{starts[-1]:%Y-%m-%d %H:%M}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
