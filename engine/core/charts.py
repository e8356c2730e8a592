"""Charts of a metric over runs: mermaid `xychart-beta` for markdown (GitHub renders it) and
inline SVG for HTML pages (no script, no fonts or styles from elsewhere). Pure text out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

_UNSAFE = re.compile(r"[^A-Za-z0-9 _.,:/()+#'-]")
_ENTITY = re.compile(r"#(\w*);?")
MAX_LABEL = 40
MAX_TITLE = 90
LINE_COLOUR = "#1f6feb"
HIGHLIGHT_COLOUR = "#d4760b"


@dataclass(frozen=True)
class Point:
    """One value on a chart, with the label its axis shows (a run's date, `PR #12`)."""

    label: str
    value: float


def label(text: str, limit: int = MAX_LABEL) -> str:
    """Text that cannot break a mermaid string: no quotes, brackets, semicolons, newlines,
    entity codes or comment marks; at most MAX_LABEL characters.

    >>> label('a "b" [c];\\n%%d #quot;')
    "a 'b' c d #quot"
    """
    text = _UNSAFE.sub(lambda m: "'" if m.group() == '"' else " ", text)
    text = _ENTITY.sub(lambda m: "#" + m.group(1), text)  # `#quot;` would be an entity code
    text = " ".join(text.split())
    return text[:limit].strip()


def plain(value: float) -> str:
    """A number as mermaid's grammar reads it: no exponent.

    >>> plain(0.95), plain(1e-07), plain(3.0), plain(-12345678.5)
    ('0.95', '0.0000001', '3', '-12345678.5')
    """
    text = f"{value:.10g}"
    if "e" in text or "E" in text:
        text = f"{value:.12f}".rstrip("0").rstrip(".")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def ticks(values: Sequence[float]) -> list[float]:
    """Round-numbered axis ticks (steps of 1, 2, 2.5 or 5 times a power of ten, about four
    of them) that hold every value; never below zero for values that are not.

    >>> ticks([0.913, 0.97])
    [0.9, 0.92, 0.94, 0.96, 0.98]
    >>> ticks([0.1429, 1]), ticks([5, 5]), ticks([])
    ([0.0, 0.25, 0.5, 0.75, 1.0, 1.25], [4.5, 4.75, 5.0, 5.25, 5.5], [0.0, 0.5, 1.0, 1.5])
    """
    if not values:
        return ticks([0.0, 1.0])
    low, high = min(values), max(values)
    pad = (high - low) * 0.05 or abs(high) * 0.1 or 1.0  # no point on the frame
    low, high = (low - pad if low < 0 or low - pad >= 0 else 0.0), high + pad
    raw = (high - low) / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * 0.999)
    bottom, top = math.floor(low / step), math.ceil(high / step)
    digits = max(0, 1 - math.floor(math.log10(step)))
    return [round(n * step, digits) + 0.0 for n in range(bottom, top + 1)]


def axis_range(values: Sequence[float]) -> tuple[float, float]:
    """The first and last of `ticks(values)`.

    >>> axis_range([0.95, 0.97])
    (0.94, 0.98)
    """
    found = ticks(values)
    return found[0], found[-1]


def mermaid_xychart(
    title: str, axis: str, points: Sequence[Point], extra: Point | None = None
) -> str:
    """An `xychart-beta` diagram (no ``` fence) of `points`, then `extra` highlighted.

    A line runs through every value; `extra` (this PR's run, say) also stands out as a bar,
    the other bars sitting at the axis floor. "" when there is nothing to draw.
    """
    shown = [*points, *([extra] if extra else [])]
    if not shown:
        return ""
    low, high = axis_range([p.value for p in shown])
    labels = ", ".join(f'"{label(p.label) or "?"}"' for p in shown)
    lines = [
        "---",
        "config:",
        "  themeVariables:",
        "    xyChart:",
        f'      plotColorPalette: "{HIGHLIGHT_COLOUR}, {LINE_COLOUR}"',
        "---",
        "xychart-beta",
        f'  title "{label(title, MAX_TITLE) or "metric"}"',
        f"  x-axis [{labels}]",
        f'  y-axis "{label(axis) or "value"}" {plain(low)} --> {plain(high)}',
    ]
    if extra is not None:  # drawn first, so the line runs over it
        floors = [plain(low)] * len(points)
        lines.append(f"  bar [{', '.join([*floors, plain(extra.value)])}]")
    else:  # the palette's first colour belongs to the line then
        lines[4] = f'      plotColorPalette: "{LINE_COLOUR}"'
    lines.append(f"  line [{', '.join(plain(p.value) for p in shown)}]")
    return "\n".join(lines)


def fenced(diagram: str) -> str:
    """A diagram as a markdown code block GitHub renders."""
    return f"```mermaid\n{diagram}\n```"


def svg_line_chart(
    title: str,
    points: Sequence[Point],
    *,
    highlight: int | None = None,
    width: int = 720,
    height: int = 260,
) -> str:
    """An inline SVG line chart: one `<circle class="point">` per point (the highlighted one
    also has class `highlight`), each with a tooltip; axis ticks on round numbers."""
    left, right, top, bottom = 64, 48, 30, 52
    plot_w, plot_h = width - left - right, height - top - bottom
    marks = ticks([p.value for p in points])
    low, high = marks[0], marks[-1]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}">',
        f'<text x="{left}" y="18" class="chart-title">{escape(title)}</text>',
    ]

    def y(value: float) -> float:
        return top + plot_h * (1 - (value - low) / ((high - low) or 1.0))

    def x(index: int) -> float:
        return left + (plot_w * (index + 0.5) / len(points) if points else 0)

    for value in marks:
        out.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
            'class="grid"/>'
        )
        out.append(
            f'<text x="{left - 6}" y="{y(value) + 4:.1f}" class="tick" '
            f'text-anchor="end">{escape(plain(value))}</text>'
        )
    if not points:
        out.append(
            f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle">no data</text>'
        )
        return "\n".join([*out, "</svg>"])
    coords = " ".join(f"{x(i):.1f},{y(p.value):.1f}" for i, p in enumerate(points))
    out.append(f'<polyline points="{coords}" class="line" fill="none" stroke="{LINE_COLOUR}"/>')
    every = max(1, math.ceil(len(points) * 110 / plot_w))  # a label needs about 110 px
    for i, p in enumerate(points):
        if (len(points) - 1 - i) % every == 0:  # counted from the latest, always labelled
            out.append(
                f'<text x="{x(i):.1f}" y="{height - bottom + 16}" class="tick" '
                f'text-anchor="middle">{escape(p.label[:MAX_LABEL])}</text>'
            )
    for i, p in enumerate(points):
        special = i == highlight
        out.append(
            f'<circle class="point{" highlight" if special else ""}" cx="{x(i):.1f}" '
            f'cy="{y(p.value):.1f}" r="{6 if special else 4}" '
            f'fill="{HIGHLIGHT_COLOUR if special else LINE_COLOUR}">'
            f"<title>{escape(p.label)}: {escape(plain(p.value))}</title></circle>"
        )
    return "\n".join([*out, "</svg>"])
