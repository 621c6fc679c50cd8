"""A trend chart of one test over time, drawn on the server as SVG (no script, no inline style).

What a reader gets, with or without sight:

- ``role="img"`` with a ``<title>`` and a ``<desc>`` that say what the chart shows in words (the
  test, how many results, from when to when, the latest value and whether it is in range);
- the usual (reference) range as a shaded band with its limits written on the axis;
- each result as a point with its own ``<title>`` (date, value, flag in words), drawn as a circle
  when in range and as a labelled square when outside it, so the flag never rests on colour;
- axis labels (the unit, the dates); the page puts the same values in a table as well.

Colours and line widths come from CSS classes in ``housecall.css``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime

from markupsafe import Markup, escape

from housecall.results.service import Trend, Value
from housecall.web.i18n import _

# A narrow drawing, so that its text stays readable when a phone scales it to the screen's width.
WIDTH, HEIGHT = 480, 320
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 28, 60
INSET = 28  # no point sits on an axis or the edge: room for its labels


def _moment(value: Value) -> float:
    try:
        return datetime.fromisoformat(value.when.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (1, 2, 2.5 or 5 times a power of ten apart)."""
    if high <= low:
        high = low + 1
    raw = (high - low) / max(1, count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    start = math.floor(low / step) * step
    ticks = []
    value = start
    while value <= high + step * 0.001:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 10))
    return ticks


def _fmt(value: float) -> str:
    return f"{value:g}"


def chart(trend: Trend, date_text: Callable[[str], str], chart_id: str = "trend") -> Markup:
    """The SVG of ``trend``; ``date_text`` formats a point's date in the reader's language."""
    points = trend.points
    numbers = [p.number for p in points if p.number is not None]
    extent = numbers + [v for v in (trend.low, trend.high) if v is not None]
    low, high = min(extent), max(extent)
    pad = (high - low) * 0.1 or abs(high) * 0.1 or 1.0
    ticks = nice_ticks(max(0.0, low - pad) if low >= 0 else low - pad, high + pad)
    y_min, y_max = ticks[0], ticks[-1]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    times = [_moment(p) for p in points]
    t_min, t_max = min(times), max(times)

    def x(t: float) -> float:
        if t_max == t_min:
            return LEFT + plot_w / 2
        return LEFT + INSET + (t - t_min) / (t_max - t_min) * (plot_w - 2 * INSET)

    def y(v: float) -> float:
        return TOP + (y_max - v) / (y_max - y_min) * plot_h

    latest = points[-1]
    title = _("%(name)s over time") % {"name": trend.name}
    desc = _(
        "%(count)s results from %(first)s to %(last)s. Latest: %(value)s on %(date)s, %(flag)s."
    ) % {
        "count": len(points), "first": date_text(points[0].when), "last": date_text(latest.when),
        "value": latest.text, "date": date_text(latest.when), "flag": latest.flag_words.lower(),
    }  # fmt: skip
    if trend.low is not None or trend.high is not None:
        desc += " " + _("The usual range, shaded, is %(range)s.") % {"range": latest.range_text}
    usual, axis_x, axis_y = _("Usual range"), _("Date of the test"), trend.unit or _("Value")
    out: list[str] = []
    add = out.append
    add(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="trend-chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-labelledby="{chart_id}-title {chart_id}-desc" focusable="false">'
    )
    add(f'<title id="{chart_id}-title">{escape(title)}</title>')
    add(f'<desc id="{chart_id}-desc">{escape(desc)}</desc>')
    # The usual range.
    if trend.low is not None or trend.high is not None:
        band_top = y(min(trend.high, y_max)) if trend.high is not None else TOP
        band_bottom = y(max(trend.low, y_min)) if trend.low is not None else TOP + plot_h
        add(
            f'<rect class="range-band" x="{LEFT}" y="{band_top:.1f}" width="{plot_w}" '
            f'height="{max(0.0, band_bottom - band_top):.1f}"><title>{escape(usual)}: '
            f"{escape(latest.range_text)}</title></rect>"
        )
    # Axes, grid and tick labels.
    add('<g class="axis" aria-hidden="true">')
    for tick in ticks:
        ty = y(tick)
        add(f'<line class="grid" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{ty:.1f}" y2="{ty:.1f}"/>')
        add(f'<text x="{LEFT - 8}" y="{ty + 4:.1f}" text-anchor="end">{escape(_fmt(tick))}</text>')
    add(f'<line class="axis-line" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + plot_h}"/>')
    add(f'<line class="axis-line" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{TOP + plot_h}" y2="{TOP + plot_h}"/>')
    # Dates under the first and last results, and under others where there is room for them.
    kept: list[float] = []
    for i in [0, len(points) - 1, *range(1, len(points) - 1)]:
        lx = min(max(x(times[i]), LEFT + 46), LEFT + plot_w - 46)
        if any(abs(lx - k) < 112 for k in kept):
            continue
        kept.append(lx)
        add(
            f'<text x="{lx:.1f}" y="{TOP + plot_h + 22}" text-anchor="middle">'
            f"{escape(date_text(points[i].when))}</text>"
        )
    add(
        f'<text class="axis-title" x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 8}" text-anchor="middle">'
        f"{escape(axis_x)}</text>"
    )
    add(
        f'<text class="axis-title" x="14" y="{TOP + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {TOP + plot_h / 2:.1f})">{escape(axis_y)}</text>'
    )
    add("</g>")
    # The line through the results, then the results.
    if len(points) > 1:
        path = " ".join(f"{x(t):.1f},{y(p.number or 0):.1f}" for t, p in zip(times, points, strict=True))
        add(f'<polyline class="trend-line" points="{path}" aria-hidden="true"/>')
    add('<g class="points">')
    for t, p in zip(times, points, strict=True):
        px, py = x(t), y(p.number or 0)
        label = _("%(date)s: %(value)s, %(flag)s") % {
            "date": date_text(p.when), "value": p.text, "flag": p.flag_words.lower(),
        }  # fmt: skip
        add(f'<g class="point{" flagged" if p.flag else ""}">')
        add(f"<title>{escape(label)}</title>")
        if p.flag:
            add(f'<rect x="{px - 6:.1f}" y="{py - 6:.1f}" width="12" height="12"/>')
            mark = _("High") if "high" in p.flag else _("Low") if "low" in p.flag else "!"
            add(
                f'<text class="flag-label" x="{px:.1f}" y="{py - 12:.1f}" text-anchor="middle" '
                f'aria-hidden="true">{escape(mark)}</text>'
            )
        else:
            add(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="6"/>')
        add(f'<text class="value-label" x="{px:.1f}" y="{py + 24:.1f}" text-anchor="middle" aria-hidden="true">'
            f"{escape(_fmt(p.number or 0))}</text>")  # fmt: skip
        add("</g>")
    add("</g></svg>")
    return Markup("".join(out))  # noqa: S704 - our own SVG: every text in it went through escape()
