"""The report's figures, drawn with matplotlib's Agg backend and saved without a version
string so that the same inputs give the same PNG bytes. Legends sit outside the axes, to
the right, so they never cover a data point."""

from __future__ import annotations

import io

from marco_eval.report.mgsm_tables import cost_rows
from marco_eval.report.schema import MGSM_TASKS, Loaded
from marco_eval.report.styles import Style


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed), imported only when a plot is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version string: byte-identical reruns
    pyplot().close(fig)
    return buf.getvalue()


def log_tokens_axis(ax) -> None:
    """A log-scale x axis of token counts labelled 1, 2, 5, 10, 20, ... in plain numbers."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())


def legend_right_of(ax, handles: dict, title: str | None = None) -> None:
    """One legend for a whole figure, outside and to the right of `ax` (tight_layout makes room).

    Args:
        ax: the rightmost axes.
        handles: label -> artist, in the order to list them.
        title: the legend's title, if any.
    """
    ax.legend(list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7,
              title=title, title_fontsize=7, frameon=False)


def accuracy_figure(loaded: Loaded, styles: dict[str, Style]):
    """Accuracy against generated tokens per problem: one panel per MGSM task, one point per
    system, 95% CI bars, each system in its own colour and marker (styles.py). Systems without
    token counts are left out (the cost table says so).

    Args:
        loaded: the loaded results.
        styles: system -> its style (styles.system_styles).

    Returns:
        The matplotlib figure (render with png_bytes).
    """
    plt = pyplot()
    points = [(run, acc) for run, acc in cost_rows(loaded) if run.tokens_per_problem]
    fig, axes = plt.subplots(1, len(MGSM_TASKS), figsize=(12, 4.5), dpi=100, sharey=True)
    handles = {}
    for ax, (task, label) in zip(axes, MGSM_TASKS.items()):
        mine = [(r, a) for r, a in points if r.task == task]
        for r, a in mine:
            style = styles[r.system]
            handles[r.system] = ax.errorbar([r.tokens_per_problem], [100 * a.value], fmt=style.marker,
                                            color=style.colour, capsize=3, label=r.system,
                                            yerr=[[100 * (a.value - a.lo)], [100 * (a.hi - a.value)]])
        if mine:
            log_tokens_axis(ax)
            ax.margins(x=0.2)
        else:
            ax.text(0.5, 0.5, "no runs with token counts", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(label)
        ax.set_xlabel("generated tokens per problem (log scale)")
        ax.grid(True, alpha=0.3)
    if handles:
        legend_right_of(axes[-1], {system: handles[system] for system in sorted(handles)})
    axes[0].set_ylabel("accuracy % (95% bootstrap CI)")
    axes[0].set_ylim(-2, 102)
    fig.tight_layout()
    return fig
