"""`marco-eval report`: load everything, build every table and the plot in memory, and only
then write them all (atomically), so an error leaves the old outputs untouched."""

from __future__ import annotations

from pathlib import Path

from marco_eval.files import write_atomic
from marco_eval.report.load import load
from marco_eval.report.mgsm_tables import accuracy_table, cost_table, test_at_table, verdict_table
from marco_eval.report.plots import accuracy_figure, png_bytes
from marco_eval.report.render import command_line, render_csv, render_markdown, render_readme
from marco_eval.report.schema import DEFAULT_EXCLUDE, MGSM_TASKS, PLOT, TABLES_DIR, Loaded, ReportError
from marco_eval.report.tables import Table, human_table, runs_table, training_table, translation_table


def build_tables(loaded: Loaded, baseline: str | None, filter_name: str) -> list[Table]:
    systems = {r.system for r in loaded.tasks if r.task in MGSM_TASKS}
    if baseline is not None and baseline not in systems:
        raise ReportError(f"--baseline {baseline!r} is not a system with MGSM runs (systems: {', '.join(sorted(systems)) or 'none'})")
    tables = [accuracy_table(loaded, baseline), verdict_table(loaded), test_at_table(loaded), cost_table(loaded),
              translation_table(loaded), human_table(loaded), training_table(loaded), runs_table(loaded)]
    for t in tables:
        t.note = t.note.replace("{filter}", filter_name)
    return tables



def report(results_dir: Path, out_dir: Path | None = None, baseline: str | None = None,
           filter_name: str = "flexible-extract", exclude: tuple[str, ...] = DEFAULT_EXCLUDE) -> list[Path]:
    """Load, validate, build every table and the plot in memory, then write them all. Returns the paths."""
    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir else results_dir
    loaded = load(results_dir, filter_name, tuple(exclude))
    tables = build_tables(loaded, baseline, filter_name)
    files: dict[Path, bytes] = {}
    for t in tables:
        files[out_dir / TABLES_DIR / f"{t.name}.md"] = render_markdown(t).encode()
        files[out_dir / TABLES_DIR / f"{t.name}.csv"] = render_csv(t).encode()
    files[out_dir / TABLES_DIR / PLOT] = png_bytes(accuracy_figure(loaded))
    command = command_line(results_dir, baseline, filter_name, tuple(exclude))
    files[out_dir / "README.md"] = render_readme(tables, loaded, command).encode()
    for path, data in files.items():
        write_atomic(path, data)
    return list(files)

