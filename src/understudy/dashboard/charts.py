"""Inline SVG charts for the dashboard: no JavaScript, no chart library, readable at any size.

Each function returns an ``<svg>`` element as safe markup with a ``viewBox`` so the browser
scales it to the column it sits in. Values are plotted as given; ``None`` leaves a gap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

WIDTH = 560
HEIGHT = 180
# Room around the plot for the axis labels, in SVG units.
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 48, 12, 28, 26
# Baseline of the header band holding the title and the legend.
HEADER_Y = 15
PALETTE = ("#2563eb", "#ea580c", "#16a34a", "#9333ea")


@dataclass(frozen=True)
class Series:
    """One line: its legend name and a value per x position (None: no data there)."""

    name: str
    values: Sequence[float | None]


def _fmt_default(value: float) -> str:
    return f"{value:.3g}"


def line_chart(
    title: str,
    x_labels: Sequence[str],
    series: Sequence[Series],
    *,
    y_min: float | None = 0.0,
    y_max: float | None = None,
    y_format: Callable[[float], str] = _fmt_default,
) -> Markup:
    """A line chart of ``series`` over ``x_labels`` (evenly spaced), with min/max y labels, the
    first and last x labels, and a legend. The y range covers the data unless fixed."""
    present = [v for s in series for v in s.values if v is not None]
    low = y_min if y_min is not None else min(present, default=0.0)
    high = y_max if y_max is not None else max(present, default=1.0)
    if high <= low:
        high = low + 1.0
    n = max(1, len(x_labels) - 1)
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM

    def x_of(i: int) -> float:
        return PAD_LEFT + plot_w * i / n

    def y_of(v: float) -> float:
        return PAD_TOP + plot_h * (1 - (v - low) / (high - low))

    parts = [_frame(title, y_format(high), y_format(low))]
    if x_labels:
        parts.append(_text(PAD_LEFT, HEIGHT - 8, x_labels[0], "start"))
        parts.append(_text(WIDTH - PAD_RIGHT, HEIGHT - 8, x_labels[-1], "end"))
    for index, line in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        for run in _runs(line.values):
            points = " ".join(f"{x_of(i):.1f},{y_of(v):.1f}" for i, v in run)
            if len(run) == 1:
                i, v = run[0]
                parts.append(
                    f'<circle cx="{x_of(i):.1f}" cy="{y_of(v):.1f}" r="2" fill="{colour}"/>'
                )
            else:
                parts.append(
                    f'<polyline points="{points}" fill="none" stroke="{colour}" '
                    'stroke-width="1.8"/>'
                )
        legend_x = WIDTH - PAD_RIGHT - 90 * (len(series) - 1 - index)
        parts.append(_text(legend_x, HEADER_Y, f"■ {line.name}", "end", colour))
    return _svg(title, parts)


def curve_chart(
    points: Sequence[tuple[float, float, float]], chosen: float | None, target: float | None
) -> Markup:
    """The agreement-vs-coverage curve: ``points`` are (threshold, coverage, agreement); the
    point at the ``chosen`` threshold is marked and the ``target`` agreement drawn as a line."""
    title = "Agreement vs coverage (held-out)"
    agreements = [a for _, _, a in points]
    low = min([*agreements, target or 1.0, 1.0]) if agreements else 0.0
    low = max(0.0, min(low, 0.99) - 0.01)
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM

    def x_of(coverage: float) -> float:
        return PAD_LEFT + plot_w * coverage

    def y_of(agreement: float) -> float:
        return PAD_TOP + plot_h * (1 - (agreement - low) / (1.0 - low))

    parts = [_frame(title, "100%", f"{low:.0%}")]
    parts.append(_text(PAD_LEFT, HEIGHT - 8, "coverage 0%", "start"))
    parts.append(_text(WIDTH - PAD_RIGHT, HEIGHT - 8, "100%", "end"))
    if target is not None and target >= low:
        y = y_of(target)
        parts.append(
            f'<line x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
            'stroke="#dc2626" stroke-dasharray="4 3" stroke-width="1"/>'
        )
        parts.append(_text(WIDTH - PAD_RIGHT - 4, y - 4, f"target {target:.1%}", "end", "#dc2626"))
    ordered = sorted(points, key=lambda p: p[1])
    if ordered:
        line = " ".join(f"{x_of(c):.1f},{y_of(a):.1f}" for _, c, a in ordered)
        parts.append(
            f'<polyline points="{line}" fill="none" stroke="{PALETTE[0]}" stroke-width="2"/>'
        )
    if chosen is not None and points:
        _, coverage, agreement = min(points, key=lambda p: abs(p[0] - chosen))
        parts.append(
            f'<circle cx="{x_of(coverage):.1f}" cy="{y_of(agreement):.1f}" r="5" '
            f'fill="none" stroke="{PALETTE[1]}" stroke-width="2"/>'
        )
        label = f"threshold {chosen:.2f}: {coverage:.0%} covered at {agreement:.1%}"
        parts.append(_text(WIDTH - PAD_RIGHT, HEADER_Y, label, "end", PALETTE[1]))
    return _svg(title, parts)


def _runs(values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    """Consecutive non-None stretches as (index, value) lists."""
    runs: list[list[tuple[int, float]]] = []
    current: list[tuple[int, float]] = []
    for i, v in enumerate(values):
        if v is None:
            if current:
                runs.append(current)
            current = []
        else:
            current.append((i, v))
    if current:
        runs.append(current)
    return runs


def _frame(title: str, top: str, bottom: str) -> str:
    x2, y2 = WIDTH - PAD_RIGHT, HEIGHT - PAD_BOTTOM
    heading = (
        f'<text x="0" y="{HEADER_Y}" font-size="12" font-weight="600" fill="#262626">'
        f"{escape(title)}</text>"
    )
    return (
        heading
        + f'<rect x="{PAD_LEFT}" y="{PAD_TOP}" width="{x2 - PAD_LEFT}" height="{y2 - PAD_TOP}" '
        'fill="#fafafa" stroke="#d4d4d4"/>'
        + _text(PAD_LEFT - 4, PAD_TOP + 9, top, "end")
        + _text(PAD_LEFT - 4, y2, bottom, "end")
    )


def _text(x: float, y: float, text: str, anchor: str, colour: str = "#525252") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="11" '
        f'fill="{colour}">{escape(text)}</text>'
    )


def _svg(title: str, parts: list[str]) -> Markup:
    body = "".join(parts)
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>{body}</svg>'
    )
