"""Rendering: a table as Markdown and CSV, and the results README that strings the tables
and plots together with the command that made them."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from marco_eval.report.schema import (
    BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, DEFAULT_EXCLUDE, PLOT, TABLES_DIR, Loaded)
from marco_eval.report.tables import Table


def escape_md(cell: str) -> str:
    return str(cell).replace("|", "\\|").replace("\n", " ")


def render_markdown(table: Table, rows: bool = True) -> str:
    """A table as Markdown: title, note, findings, then the rows (rows=False: a pointer to the
    table's own file instead, for tables too long for the README)."""
    lines = [f"### {table.title}", "", table.note, ""]
    lines += [f"- {sentence}" for sentence in table.findings] + ([""] if table.findings else [])
    if not rows and table.md_rows:
        return "\n".join(lines + [f"Every row: [`{TABLES_DIR}/{table.name}.md`]({TABLES_DIR}/{table.name}.md).", ""])
    if not table.md_rows:
        return "\n".join(lines + [table.empty, ""])
    lines.append("| " + " | ".join(table.columns) + " |")
    lines.append("|" + "|".join("---" for _ in table.columns) + "|")
    lines += ["| " + " | ".join(escape_md(c) for c in row) + " |" for row in table.md_rows]
    return "\n".join(lines + [""])


def render_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.csv_columns)
    writer.writerows(table.csv_rows)
    return out.getvalue()


def command_line(results_dir: Path, baseline: str | None, filter_name: str, exclude: tuple[str, ...]) -> str:
    shown = results_dir.resolve()
    if shown.is_relative_to(Path.cwd()):
        shown = shown.relative_to(Path.cwd())
    parts = ["marco-eval report", shell_quote(shown.as_posix())]
    if baseline:
        parts += ["--baseline", shell_quote(baseline)]
    if filter_name != "flexible-extract":
        parts += ["--filter", filter_name]
    if tuple(exclude) != DEFAULT_EXCLUDE:
        parts += [f"--exclude {shell_quote(e)}" for e in exclude] or []
    return " ".join(parts)


def shell_quote(s: str) -> str:
    return s if re.fullmatch(r"[\w./@%+=:,-]+", s) else "'" + s.replace("'", "'\\''") + "'"


def render_readme(tables: list[Table], loaded: Loaded, command: str, search_intro: str,
                  search_plots: list[str], in_short: list[str], run_by_run: list[str]) -> str:
    """The results README: the first screen (the headline table, the accuracy-against-tokens
    figure, "In short"), how it was made, then every table and plot.

    Args:
        tables: every table (build_tables), by name.
        loaded: the loaded results (for the tasks it skipped).
        command: the command line that regenerates it.
        search_intro: the paragraph opening "Where the search gains and loses".
        search_plots: that section's PNG file names (in TABLES_DIR).
        in_short: the sentences of "In short", one per MCTS run.
        run_by_run: the paragraphs of "Run by run", in "Where the search gains and loses".

    Returns:
        The Markdown text.
    """
    by_name = {t.name: t for t in tables}
    skipped = "".join(f"\n- {s}" for s in loaded.skipped_tasks)
    made = f"""### How this file is made

Generated from the runs in the results folder by

    {command}

Do not edit by hand: rerun the command; the same inputs give byte-identical files. Each
table is also in `{TABLES_DIR}/` as Markdown and CSV. A run is a folder with a `run.json`
manifest and lm-eval's output (`--output_path DIR --log_samples`); see the main README,
"Report".

Statistics: 95% CIs are percentile bootstraps over problems ({BOOTSTRAP_RESAMPLES:,} resamples,
numpy `default_rng({BOOTSTRAP_SEED})` for every interval). Paired comparisons use the same
problems only: Δ with a paired-bootstrap CI, p from an exact McNemar test; the verdicts of
"Does the search pay?" are Holm-corrected over all its comparisons.
"""
    if skipped:
        made += f"\nTasks in these results that the report does not tabulate:{skipped}\n"
    body = ["# Results\n", render_markdown(by_name["headline"]),
            f"![accuracy against generated tokens per problem]({TABLES_DIR}/{PLOT})\n",
            "### In short\n\n" + "".join(f"- {p}\n" for p in in_short), made]
    for name in ("mgsm", "verdict", "test_at_n", "cost"):
        body.append(render_markdown(by_name[name]))
    body.append(f"### Where the search gains and loses\n\n{search_intro}\n")
    body.append("### Run by run\n\n" + "".join(f"- {p}\n" for p in run_by_run))
    body += [render_markdown(by_name["search_coverage"]), render_markdown(by_name["reward_auroc"])]
    body += [f"![{alt_text(name)}]({TABLES_DIR}/{name})\n" for name in search_plots]
    body.append(render_markdown(by_name["accuracy_by_budget"], rows=False))
    for name in ("reflection", "translation", "human", "training", "runs"):
        body.append(render_markdown(by_name[name]))
    return "\n".join(body)


def alt_text(plot: str) -> str:
    """A plot's alt text from its file name: "budget_qwen_mgsm_en.png" -> "budget qwen mgsm en"."""
    return plot.removesuffix(".png").replace("_", " ")
