"""A bar chart as numbers for an SVG template (no JavaScript, nothing to escape but ints)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from resilient_task.dashboard.stats import MinuteCount

__all__ = ["Bar", "Chart", "bar_chart"]

WIDTH = 600
HEIGHT = 120
_LEFT = 40
_BOTTOM = 16


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar: its rectangle and its tooltip."""

    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True, slots=True)
class Chart:
    """The chart's bars, scale and axis labels, in SVG user units."""

    bars: list[Bar]
    width: int
    height: int
    left: int
    baseline: int
    top_label: str
    first_label: str
    last_label: str


def bar_chart(minutes: list[MinuteCount], *, now: datetime) -> Chart:
    """Bars for per-minute counts (oldest first) ending at ``now``; estimates marked "≈"."""
    values = [m.count for m in minutes]
    count = max(len(values), 1)
    top = max([*values, 1])
    plot_width = WIDTH - _LEFT
    plot_height = HEIGHT - _BOTTOM - 4
    slot = plot_width / count
    bars = []
    for index, value in enumerate(values):
        height = plot_height * value / top
        start = now - timedelta(minutes=len(values) - index)
        shown = f"{value:,}" if minutes[index].exact else f"≈ {value:,}"
        bars.append(
            Bar(
                x=round(_LEFT + index * slot + 0.5, 1),
                y=round(4 + plot_height - height, 1),
                width=round(max(slot - 1, 1), 1),
                height=round(height, 1),
                title=f"{start:%H:%M} UTC: {shown}",
            )
        )
    top_label = f"{top:,}" if all(m.exact for m in minutes) else f"≈ {top:,}"
    return Chart(
        bars=bars,
        width=WIDTH,
        height=HEIGHT,
        left=_LEFT,
        baseline=HEIGHT - _BOTTOM,
        top_label=top_label,
        first_label=f"-{len(values)} min",
        last_label="now",
    )
