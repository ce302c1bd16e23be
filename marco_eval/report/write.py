"""`marco-eval report`: load everything, build every table and plot in memory, and only
then write them all (atomically), so an error leaves the old outputs untouched."""

from __future__ import annotations

from pathlib import Path

from marco_eval.errors import ReportError
from marco_eval.files import write_atomic
from marco_eval.report.headline import headline_table
from marco_eval.report.in_short import in_short
from marco_eval.report.load import load
from marco_eval.report.mgsm_tables import Verdict, accuracy_table, cost_table, test_at_table, verdict_table, verdicts
from marco_eval.report.plots import accuracy_figure, png_bytes
from marco_eval.report.render import command_line, render_csv, render_markdown, render_readme
from marco_eval.report.schema import DEFAULT_EXCLUDE, MGSM_TASKS, PLOT, TABLES_DIR, Loaded
from marco_eval.report.reflection import reflection_table
from marco_eval.report.run_by_run import run_by_run
from marco_eval.report.search_stats import BudgetPoint
from marco_eval.report.search_plots import CALIBRATION_PLOT, budget_figure, budget_plot_name, calibration_figure
from marco_eval.report.styles import system_styles
from marco_eval.report.search_tables import (
    budget_table, calibration_table, coverage_table, search_intro, separation_table, with_rollouts, with_traces)
from marco_eval.report.tables import Table, human_table, runs_table, training_table, translation_table


def build_tables(loaded: Loaded, baseline: str | None, filter_name: str, budget: Table,
                 found: list[Verdict]) -> list[Table]:
    """Every table of the report, in README order, with the filter named in their notes
    (`budget`, the accuracy-by-budget table, is made with its curves by budget_table; `found`,
    the verdicts, by mgsm_tables.verdicts, which "In short" reads too)."""
    systems = {r.system for r in loaded.tasks if r.task in MGSM_TASKS}
    if baseline is not None and baseline not in systems:
        raise ReportError(f"--baseline {baseline!r} is not a system with MGSM runs (systems: {', '.join(sorted(systems)) or 'none'})")
    tables = [headline_table(loaded, found), accuracy_table(loaded, baseline), verdict_table(found), test_at_table(loaded), cost_table(loaded),
              coverage_table(loaded), separation_table(loaded), calibration_table(loaded), budget,
              reflection_table(loaded), translation_table(loaded), human_table(loaded), training_table(loaded),
              runs_table(loaded)]
    for t in tables:
        t.note = t.note.replace("{filter}", filter_name)
    return tables


def figures(loaded: Loaded, curves: dict[tuple[str, str], list[BudgetPoint]]) -> dict[str, object]:
    """Every figure of the report by file name, each system in the same style in all of them
    (styles.py): accuracy against tokens, then those of "Where the search gains and loses":
    reward calibration (when any run has rollouts) and one accuracy-against-budget plot per
    model and task (curves: (system, task) -> budget curve, from budget_table)."""
    styles = system_styles(loaded)
    out = {PLOT: accuracy_figure(loaded, styles)}
    if runs := with_rollouts(loaded):
        out[CALIBRATION_PLOT] = calibration_figure(runs, styles)
    groups: dict[tuple[str, str], dict[str, list]] = {}
    for run in with_traces(loaded):
        groups.setdefault((run.manifest.model, run.task), {})[run.system] = curves[run.system, run.task]
    for (model, task), mine in sorted(groups.items()):
        out[budget_plot_name(model, task)] = budget_figure(model, task, mine, styles)
    return out


def report(results_dir: Path, out_dir: Path | None = None, baseline: str | None = None,
           filter_name: str = "flexible-extract", exclude: tuple[str, ...] = DEFAULT_EXCLUDE) -> list[Path]:
    """Load and validate the runs, build every table and plot in memory, then write them all.

    Args:
        results_dir: the folder of runs.
        out_dir: where README.md and report/ go (default results_dir).
        baseline: the system the MGSM table compares every row with, if any.
        filter_name: lm-eval's filter whose exact_match is scored.
        exclude: sub-folders of results_dir to skip.

    Returns:
        The paths written.
    """
    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir else results_dir
    loaded = load(results_dir, filter_name, tuple(exclude))
    budget, curves = budget_table(loaded)
    found = verdicts(loaded)
    tables = build_tables(loaded, baseline, filter_name, budget, found)
    files: dict[Path, bytes] = {}
    for t in tables:
        files[out_dir / TABLES_DIR / f"{t.name}.md"] = render_markdown(t).encode()
        files[out_dir / TABLES_DIR / f"{t.name}.csv"] = render_csv(t).encode()
    drawn = figures(loaded, curves)
    files.update({out_dir / TABLES_DIR / name: png_bytes(fig) for name, fig in drawn.items()})
    command = command_line(results_dir, baseline, filter_name, tuple(exclude))
    files[out_dir / "README.md"] = render_readme(tables, loaded, command, search_intro(loaded),
                                                 [name for name in drawn if name != PLOT], in_short(loaded, found),
                                                 run_by_run(loaded, found)).encode()
    for path, data in files.items():
        write_atomic(path, data)
    return list(files)
