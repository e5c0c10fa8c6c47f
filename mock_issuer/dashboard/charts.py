"""Stacked bar charts drawn as SVG on the server: no JavaScript, no CDN, readable by screen readers.

Pure functions from counts to markup, so they are unit-tested without a browser. Every chart has
a <title> and <desc> summary; the page also shows the same numbers as a table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from markupsafe import Markup, escape

# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#56B4E9", "#CC79A7", "#F0E442", "#999999")
FAILED_COLOR = "#D55E00"

WIDTH = 520
HEIGHT = 240
MARGIN_LEFT = 52
MARGIN_RIGHT = 8
MARGIN_TOP = 12
MARGIN_BOTTOM = 30
FONT_SIZE = 13
MAX_X_LABELS = 6


@dataclass(frozen=True)
class Series:
    """One stacked layer: a name, one count per time bucket, and how to paint it."""

    name: str
    values: tuple[int, ...]
    color: str
    hatched: bool = False  # failed verifications: a pattern as well as a colour

    @property
    def total(self) -> int:
        return sum(self.values)


@dataclass(frozen=True)
class BarChart:
    """Counts per time bucket for several series, stacked bottom to top in series order."""

    chart_id: str
    title: str
    description: str
    labels: tuple[str, ...]
    series: tuple[Series, ...]

    def __post_init__(self) -> None:
        for s in self.series:
            if len(s.values) != len(self.labels):
                raise ValueError(
                    f"series {s.name!r} has {len(s.values)} values for {len(self.labels)} buckets"
                )

    @property
    def bucket_totals(self) -> tuple[int, ...]:
        return tuple(sum(column) for column in zip(*(s.values for s in self.series), strict=True))

    @property
    def total(self) -> int:
        return sum(s.total for s in self.series)

    def summary(self) -> str:
        """One sentence for the <desc>: the total, each series' share and the busiest bucket."""
        if not self.series or self.total == 0:
            return f"{self.description} No events in this range."
        parts = ", ".join(f"{s.name} {s.total}" for s in self.series)
        totals = self.bucket_totals
        peak = max(totals)
        peak_label = self.labels[totals.index(peak)]
        return f"{self.description} Total {self.total}: {parts}. Busiest: {peak} at {peak_label}."


def nice_step(raw: float) -> int:
    """The smallest 1, 2 or 5 times a power of ten (at least 1) that is >= raw."""
    if raw <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * magnitude >= raw:
            return int(factor * magnitude)
    raise AssertionError("unreachable: 10 * magnitude >= raw")


def y_ticks(peak: int, count: int = 4) -> list[int]:
    """Evenly spaced whole-number gridlines from 0 to a round top that is >= peak."""
    step = nice_step(peak / count) if peak > 0 else 1
    top = max(step, step * math.ceil(peak / step))
    return list(range(0, top + 1, step))


def label_stride(n_labels: int, max_labels: int = MAX_X_LABELS) -> int:
    """Show every k-th x label so no more than max_labels are drawn."""
    return max(1, math.ceil(n_labels / max_labels))


def render_stacked_bars(chart: BarChart) -> Markup:
    """The chart as an inline <svg> element (scales to its container's width)."""
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    baseline = MARGIN_TOP + plot_h
    ticks = y_ticks(max(chart.bucket_totals, default=0))
    top = ticks[-1]
    n = max(len(chart.labels), 1)
    band = plot_w / n
    bar_w = max(1.0, band * 0.72)
    cid = escape(chart.chart_id)

    def y(value: float) -> float:
        return baseline - value / top * plot_h

    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{cid}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{cid}-title {cid}-desc" font-size="{FONT_SIZE}">',
        f'<title id="{cid}-title">{escape(chart.title)}</title>',
        f'<desc id="{cid}-desc">{escape(chart.summary())}</desc>',
        f'<defs><pattern id="{cid}-hatch" width="6" height="6" '
        'patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
        f'<rect width="6" height="6" fill="{FAILED_COLOR}"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#fff" stroke-width="2"/></pattern></defs>',
    ]
    for tick in ticks:
        ty = _fmt(y(tick))
        out.append(
            f'<line class="grid" x1="{MARGIN_LEFT}" x2="{WIDTH - MARGIN_RIGHT}" y1="{ty}" '
            f'y2="{ty}" stroke="#d0d4da" stroke-width="1"/>'
            f'<text x="{MARGIN_LEFT - 6}" y="{ty}" text-anchor="end" dominant-baseline="middle" '
            f'fill="#444">{tick}</text>'
        )
    for i, label in enumerate(chart.labels):
        x = MARGIN_LEFT + i * band + (band - bar_w) / 2
        stacked = 0
        for s in chart.series:
            value = s.values[i]
            if value <= 0:
                continue
            fill = f"url(#{cid}-hatch)" if s.hatched else s.color
            y_top, y_bottom = y(stacked + value), y(stacked)
            out.append(
                f'<rect x="{_fmt(x)}" y="{_fmt(y_top)}" width="{_fmt(bar_w)}" '
                f'height="{_fmt(y_bottom - y_top)}" fill="{fill}">'
                f"<title>{escape(label)}: {escape(s.name)} {value}</title></rect>"
            )
            stacked += value
    stride = label_stride(len(chart.labels))
    for i, label in enumerate(chart.labels):
        if i % stride and i != len(chart.labels) - 1:
            continue
        if i != len(chart.labels) - 1 and len(chart.labels) - 1 - i < stride:
            continue  # too close to the last label, which is always shown
        cx = _fmt(MARGIN_LEFT + (i + 0.5) * band)
        out.append(
            f'<text x="{cx}" y="{baseline + 18}" text-anchor="middle" fill="#444">'
            f"{escape(label)}</text>"
        )
    out.append(
        f'<line x1="{MARGIN_LEFT}" x2="{WIDTH - MARGIN_RIGHT}" y1="{baseline}" y2="{baseline}" '
        'stroke="#444" stroke-width="1"/>'
    )
    if chart.total == 0:
        out.append(
            f'<text x="{MARGIN_LEFT + plot_w / 2}" y="{MARGIN_TOP + plot_h / 2}" '
            'text-anchor="middle" fill="#666">No events in this range</text>'
        )
    out.append("</svg>")
    # Every interpolated value above is a number, a constant or passed through escape().
    return Markup("".join(out))  # noqa: S704


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")
