"""Figures of "Where the search gains and loses": reward calibration, and per model and task
every run's accuracy against the tokens it had spent (from the anytime traces)."""

from __future__ import annotations

import re

from marco_eval.report.plots import legend_right_of, log_tokens_axis, pyplot
from marco_eval.report.schema import MGSM_TASKS, TaskRun
from marco_eval.report.search_stats import BudgetPoint, calibration
from marco_eval.report.styles import Style

CALIBRATION_PLOT = "reward_calibration.png"


def budget_plot_name(model: str, task: str) -> str:
    """File name of a model's accuracy-against-budget plot for one task (safe characters only)."""
    return f"budget_{re.sub(r'[^A-Za-z0-9._-]+', '-', model).strip('-')}_{task}.png"


def calibration_figure(runs: list[TaskRun], styles: dict[str, Style]):
    """Per MGSM task: above, the fraction of correct rollouts in each reward bin (one line per
    run; the diagonal is a calibrated reward); below, how many rollouts fell in each bin.

    Args:
        runs: task runs with per-rollout data.
        styles: system -> its style (styles.system_styles).

    Returns:
        The matplotlib figure.
    """
    plt = pyplot()
    fig, axes = plt.subplots(2, len(MGSM_TASKS), figsize=(12, 6.5), dpi=100, sharex=True,
                             gridspec_kw={"height_ratios": (2, 1)}, squeeze=False)
    handles = {}
    for column, (task, label) in enumerate(MGSM_TASKS.items()):
        top, bottom = axes[0][column], axes[1][column]
        top.plot([0, 1], [0, 1], color="0.7", linestyle=":", linewidth=1)
        if not any(r.task == task for r in runs):
            top.text(0.5, 0.5, "no runs with per-rollout data", ha="center", va="center", transform=top.transAxes)
        for run in (r for r in runs if r.task == task):
            bins = calibration(run)
            middles = [(lo + hi) / 2 for lo, hi, _, _ in bins]
            shown = [(m, right / count) for m, (_, _, count, right) in zip(middles, bins) if count]
            style = styles[run.system]
            (handles[run.system],) = top.plot([m for m, _ in shown], [f for _, f in shown], marker=style.marker,
                                              color=style.colour, label=run.system)
            bottom.plot(middles, [count for _, _, count, _ in bins], marker=style.marker, markersize=3,
                        color=style.colour, label=run.system)
        top.set_title(label)
        top.set_ylim(-0.02, 1.02)
        top.grid(True, alpha=0.3)
        bottom.set_xlim(0, 1)
        bottom.set_xlabel("rollout reward (bin middle)")
        bottom.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("fraction of rollouts correct")
    axes[1][0].set_ylabel("rollouts in the bin")
    if handles:
        legend_right_of(axes[0][-1], {system: handles[system] for system in sorted(handles)})
    fig.tight_layout()
    return fig


def budget_figure(model: str, task: str, curves: dict[str, list[BudgetPoint]], styles: dict[str, Style]):
    """Every run of one model on one task: accuracy of the answer it would give after k
    simulations or samples against the mean tokens spent by then, with a 95% CI band.

    Args:
        model, task: for the title.
        curves: system -> its budget curve.
        styles: system -> its style (styles.system_styles).

    Returns:
        The matplotlib figure.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    handles = {}
    for system, points in sorted(curves.items()):
        x, y = [p.tokens for p in points], [100 * p.accuracy.value for p in points]
        color, marker = styles[system].colour, styles[system].marker
        if len(points) == 1:  # one sample (greedy CoT): a point with its CI bar, no band to draw
            p = points[0]
            handles[system] = ax.errorbar(x, y, yerr=[[y[0] - 100 * p.accuracy.lo], [100 * p.accuracy.hi - y[0]]],
                                          fmt=marker, markersize=4, capsize=3, color=color, label=system)
            continue
        ax.fill_between(x, [100 * p.accuracy.lo for p in points], [100 * p.accuracy.hi for p in points],
                        color=color, alpha=0.15, linewidth=0)
        (handles[system],) = ax.plot(x, y, marker=marker, markersize=3, color=color, label=system)
    if any(p.tokens > 0 for points in curves.values() for p in points):
        log_tokens_axis(ax)
    ax.set_title(f"{model}, {MGSM_TASKS[task]}: accuracy after k simulations / samples")
    ax.set_xlabel("mean generated tokens per problem after k (log scale)")
    ax.set_ylabel("accuracy % (95% bootstrap CI)")
    ax.grid(True, alpha=0.3)
    legend_right_of(ax, handles)
    fig.tight_layout()
    return fig
