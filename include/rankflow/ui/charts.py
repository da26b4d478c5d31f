"""A self-contained SVG line-chart kit (no JavaScript): axes, ticks, series, bounds, breaches."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from rankflow.ui.html import Format, bounds_text, esc, format_value

PALETTE = ("#1f6fb2", "#e07b1a", "#3a9d3a", "#8a8a8a", "#8e5bb5", "#b5524a", "#2aa3a3", "#c2a100")
BREACH_COLOR = "#d62728"
BOUND_COLOR = "#d62728"
WIDTH, HEIGHT = 420, 190
LEFT, RIGHT, TOP, BOTTOM = 54, 12, 12, 24


# --------------------------------------------------------------------------- charts


@dataclass(frozen=True)
class Point:
    """One day of a series: its value, the bounds it was judged against and the verdict."""

    day: date
    value: float
    lower: float | None = None
    upper: float | None = None
    breached: bool = False
    label: str = ""


@dataclass(frozen=True)
class Series:
    """A named line of a chart; ``bounds`` draws its thresholds as dashed lines."""

    name: str
    points: Sequence[Point]
    color: str
    bounds: bool = False
    emphasis: bool = False
    halo: bool = False  # a wide translucent line, visible under series drawn on top of it


@dataclass(frozen=True)
class Chart:
    """A chart of one or more series over the page's days."""

    key: str
    title: str
    series: Sequence[Series]
    kind: Format = "number"
    caption: str = ""


def nice_step(span: float, ticks: int = 4) -> float:
    """Return a 1, 2 or 5 x 10^k step that cuts ``span`` into about ``ticks`` parts."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * magnitude:
            return float(factor * magnitude)
    return float(10 * magnitude)


def y_range(values: Sequence[float], kind: Format = "number") -> tuple[float, float, list[float]]:
    """Return the y axis (low, high) and its ticks for the given values and bounds.

    Padding never takes the axis below zero for figures that cannot be negative, nor a share
    above 100%.
    """
    low, high = min(values), max(values)
    pad = (high - low) * 0.08 if high > low else (abs(high) * 0.1 or 1.0)
    floor = 0.0 if low >= 0 else -math.inf
    ceiling = 1.0 if kind == "percent" and low >= 0 and high <= 1 else math.inf
    low, high = max(low - pad, floor), min(high + pad, ceiling)
    if high <= low:
        high = low + 1.0
    step = nice_step(high - low)
    start = max(math.floor(low / step) * step, floor)
    end = min(math.ceil(high / step) * step, ceiling)
    if end <= start:
        end = start + step
    count = round((end - start) / step)
    ticks = [start + i * step for i in range(count + 1) if start + i * step <= end + step / 1e6]
    return start, end, ticks


def svg_chart(chart: Chart, first: date, last: date) -> str:
    """Draw a chart as inline SVG: lines, dashed threshold bounds and breached points in red."""
    values: list[float] = []
    for series in chart.series:
        for point in series.points:
            values.append(point.value)
            if series.bounds:
                values += [b for b in (point.lower, point.upper) if b is not None]
    if not values:
        return ""
    low, high, ticks = y_range(values, chart.kind)
    span_days = max((last - first).days, 1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(day: date) -> float:
        offset = (day - first).days if last > first else 0.5
        return LEFT + plot_w * offset / span_days

    def y(value: float) -> float:
        return TOP + plot_h * (1 - (value - low) / (high - low))

    parts = [
        f'<svg class="plot" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="{esc(chart.title)}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for tick in ticks:
        ty = y(tick)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{ty:.1f}" y2="{ty:.1f}" class="grid"/>'
            f'<text x="{LEFT - 6}" y="{ty + 3.5:.1f}" class="tick" text-anchor="end">'
            f"{esc(format_value(tick, chart.kind))}</text>"
        )
    for day in x_ticks(first, last):
        anchor = "end" if day == last and last > first else "middle"
        parts.append(
            f'<text x="{x(day):.1f}" y="{HEIGHT - 6}" class="tick" text-anchor="{anchor}">'
            f"{day:%m-%d}</text>"
        )
    parts.append(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" '
        'class="axis"/>'
    )
    for series in chart.series:
        if series.bounds:
            for side in ("lower", "upper"):
                coords = [
                    (x(p.day), y(bound))
                    for p in series.points
                    if (bound := getattr(p, side)) is not None
                ]
                parts.append(polyline(coords, BOUND_COLOR, 1.2, "bound", dashed=True))
    for series in chart.series:
        coords = [(x(p.day), y(p.value)) for p in series.points]
        width = 2.4 if series.emphasis else 1.4
        if series.halo:
            parts.append(polyline(coords, series.color, 6.0, "halo", opacity=0.3))
        parts.append(polyline(coords, series.color, width, "line"))
        small = len(series.points) <= 45
        for point, (px, py) in zip(series.points, coords, strict=True):
            tip = (
                f"{point.day.isoformat()} · {series.name}{point.label}: "
                f"{format_value(point.value, chart.kind)}"
            )
            if point.lower is not None or point.upper is not None:
                tip += f" (bounds {bounds_text(point.lower, point.upper, chart.kind)})"
            if point.breached:
                parts.append(
                    f'<circle class="breach" cx="{px:.1f}" cy="{py:.1f}" r="4.5" '
                    f'fill="{BREACH_COLOR}" stroke="#fff" stroke-width="1.2">'
                    f"<title>{esc(tip + ' — breached')}</title></circle>"
                )
            elif small or len(coords) == 1:
                parts.append(
                    f'<circle class="point" cx="{px:.1f}" cy="{py:.1f}" r="2.2" '
                    f'fill="{series.color}"><title>{esc(tip)}</title></circle>'
                )
    parts.append("</svg>")
    return "".join(parts)


def polyline(
    coords: Sequence[tuple[float, float]],
    color: str,
    width: float,
    css: str,
    *,
    dashed: bool = False,
    opacity: float = 1.0,
) -> str:
    """Return an SVG polyline through the points (nothing for fewer than two)."""
    if len(coords) < 2:
        return ""
    points = " ".join(f"{px:.1f},{py:.1f}" for px, py in coords)
    extra = ' stroke-dasharray="5 4"' if dashed else ""
    if opacity < 1:
        extra += f' stroke-opacity="{opacity}"'
    return (
        f'<polyline class="{css}" points="{points}" fill="none" stroke="{color}" '
        f'stroke-width="{width}"{extra} stroke-linejoin="round"/>'
    )


def x_ticks(first: date, last: date, most: int = 6) -> list[date]:
    """Return up to ``most`` evenly spread days from ``first`` to ``last`` (both included)."""
    span = (last - first).days
    if span <= 0:
        return [first]
    step = max(1, math.ceil(span / (most - 1)))
    days = [date.fromordinal(first.toordinal() + i) for i in range(0, span + 1, step)]
    if days[-1] != last:
        if (last - days[-1]).days < step:
            days[-1] = last  # the last day always has its label, without crowding its neighbour
        else:
            days.append(last)
    return days


def chart_html(chart: Chart, first: date, last: date) -> str:
    """Wrap a chart's SVG in a figure with its title, legend and caption."""
    svg = svg_chart(chart, first, last)
    if not svg:
        return ""
    breached = sum(p.breached for s in chart.series for p in s.points)
    legend = "".join(
        f'<span class="key"><i style="background:{s.color}"></i>{esc(s.name)}</span>'
        for s in chart.series
    )
    if any(s.bounds for s in chart.series):
        legend += '<span class="key"><i class="dash"></i>alert bounds</span>'
    if breached:
        legend += f'<span class="key"><i class="dot"></i>breached ({breached})</span>'
    caption = f'<p class="caption">{esc(chart.caption)}</p>' if chart.caption else ""
    return (
        f'<figure class="chart" id="chart-{esc(chart.key)}" data-chart="{esc(chart.key)}" '
        f'data-breaches="{breached}"><figcaption>{esc(chart.title)}</figcaption>{svg}'
        f'<div class="legend">{legend}</div>{caption}</figure>'
    )
