"""The one style table of the report's figures: each system its own colour and marker, the
same in every figure (the accuracy-against-tokens plot, the calibration plot, every budget plot).

Styles are given out over every system of the loaded results in name order, not per figure,
so a system keeps its style wherever it appears. Ten colours and seven markers: 7 is prime to
10, so system i gets colour i mod 10 and marker i mod 7, and no two of the first 70 systems
share both."""

from __future__ import annotations

from dataclasses import dataclass

from marco_eval.report.schema import Loaded

COLOURS = tuple(f"C{i}" for i in range(10))  # matplotlib's default cycle (tab10)
MARKERS = ("o", "s", "^", "D", "v", "P", "X")


@dataclass(frozen=True)
class Style:
    colour: str
    marker: str


def system_styles(loaded: Loaded) -> dict[str, Style]:
    """system -> its Style, for every system with a run in the results."""
    systems = sorted({r.system for r in loaded.tasks})
    return {s: Style(COLOURS[i % len(COLOURS)], MARKERS[i % len(MARKERS)]) for i, s in enumerate(systems)}

