"""The report's first screen: one row per system with its MGSM accuracy (95% CI) in each
language, its tokens per problem, and its verdicts against the same model's greedy CoT and
self-consistency, read off "Does the search pay?" (the same Holm-corrected comparisons, never
made again here)."""

from __future__ import annotations

from marco_eval.report.mgsm_tables import Verdict
from marco_eval.report.reflection import is_reflection
from marco_eval.report.schema import MGSM_TASKS, Loaded, TaskRun
from marco_eval.report.statistics import run_accuracy
from marco_eval.report.tables import Table, acc_csv, acc_md, mgsm_runs, num, p_text, signed, system_order

SHORT_WORD = {"search better": "better", "search worse": "worse", "no significant difference": "n.s."}
SHORT_TASK = {"mgsm_en": "En", "mgsm_zh": "Zh"}


def is_greedy(run: TaskRun) -> bool:
    """One sample at temperature 0 without reflection: greedy CoT (base_cot, marco_o1_cot)."""
    settings = run.settings or {}
    return (run.strategy == "sampling" and settings.get("samples") == 1 and settings.get("temperature") == 0
            and not is_reflection(run))


def is_self_consistency(run: TaskRun) -> bool:
    """A vote over samples; the verdicts only ever compare with runs of the confidence reward."""
    return run.strategy == "sampling" and run.final_rule == "vote"


BASELINES = (("greedy CoT", is_greedy), ("self-consistency", is_self_consistency))


def verdict_against(run: TaskRun, found: list[Verdict], kind) -> Verdict | None:
    """The verdict of this run's own rule (not a verifier pick read from it) against the
    run without search that `kind` picks."""
    return next((v for v in found if v.search is run and kind(v.against)), None)


def verdict_cell(runs: list[TaskRun], found: list[Verdict], kind) -> str:
    parts = [f"{SHORT_TASK[r.task]} {signed(v.pair.delta)}, {SHORT_WORD[v.word]} (p {p_text(v.p_holm)})"
             for r in runs if (v := verdict_against(r, found, kind))]
    return " · ".join(parts) or "—"


def headline_table(loaded: Loaded, found: list[Verdict]) -> Table:
    """The first-screen table.

    Args:
        loaded: the loaded results.
        found: the verdicts of "Does the search pay?" (mgsm_tables.verdicts).

    Returns:
        The table (report/headline.md and .csv).
    """
    runs = mgsm_runs(loaded)
    columns = ["System", *(f"{label} % [95% CI]" for label in MGSM_TASKS.values()), "Tokens / problem",
               *(f"Against {name} (Δ points, Holm p)" for name, _ in BASELINES)]
    csv_columns = ["system"]
    for task in MGSM_TASKS:
        csv_columns += [f"{task}_acc", f"{task}_ci_lo", f"{task}_ci_hi", f"{task}_tokens_per_problem"]
        for name, _ in BASELINES:
            key = name.replace(" ", "_").replace("-", "_").lower()
            csv_columns += [f"{task}_{key}_delta", f"{task}_{key}_p_holm", f"{task}_{key}_verdict"]
    md_rows, csv_rows = [], []
    for system in system_order({s for s, _ in runs}, None):
        mine = [runs[system, task] for task in MGSM_TASKS if (system, task) in runs]
        accuracy = {r.task: run_accuracy(r) for r in mine}
        tokens = " · ".join(f"{SHORT_TASK[r.task]} {r.tokens_per_problem:.0f}" for r in mine if r.tokens_per_problem)
        md_rows.append([system, *(acc_md(accuracy.get(task)) for task in MGSM_TASKS), tokens or "—",
                        *(verdict_cell(mine, found, kind) for _, kind in BASELINES)])
        row = [system]
        for task in MGSM_TASKS:
            run = runs.get((system, task))
            row += [*acc_csv(accuracy.get(task)), num(run.tokens_per_problem) if run else ""]
            for _, kind in BASELINES:
                v = verdict_against(run, found, kind) if run else None
                row += [num(v.pair.delta), num(v.p_holm, 9), v.word] if v else ["", "", ""]
        csv_rows.append(row)
    note = ("Accuracy: lm-eval `exact_match` (`{filter}`), 95% bootstrap CI over problems. Tokens: mean generated "
            "per problem. Against …: each MCTS row's own pick against the same model's greedy CoT (one sample at "
            "temperature 0) and self-consistency (a vote) on the problems both ran: Δ, then better / worse where the "
            "Holm-corrected McNemar p of \"Does the search pay?\" is below 0.05, else n.s.; — where there is none.")
    return Table("headline", "At a glance", note, columns, md_rows, csv_columns, csv_rows)
