"""The README's "In short": one sentence per MCTS run, so a reader who stops at the top learns
what each search gained or lost against the same model without search (the Holm-corrected
verdicts of "Does the search pay?") and whether a shortfall is at finding the answer (its
rollouts reach it less often than self-consistency's samples) or at picking it (they reach
it as often, and its pick keeps less than the vote). The paragraphs behind each sentence,
with the reward's separation and the budget curves, are "Run by run" (run_by_run.py), from
the same functions."""

from __future__ import annotations

from marco_eval.report.headline import BASELINES, verdict_against
from marco_eval.report.mgsm_tables import Verdict
from marco_eval.report.run_by_run import config_name, find_pick
from marco_eval.report.schema import MGSM_TASKS, Loaded, TaskRun
from marco_eval.report.search_stats import coverage
from marco_eval.report.search_tables import problems, voting_runs, with_rollouts
from marco_eval.report.tables import by_task_then_system, mgsm_runs, p_text, pct, signed

NO_SEARCH_YET = "No MCTS run in these results yet; the runs without search are in the tables below."


def against_words(run: TaskRun, found: list[Verdict]) -> str:
    """What it gained or lost against greedy CoT and self-consistency, with the verdicts."""
    parts = [f"{signed(v.pair.delta)} points against {name} ({pct(v.pair.run_value - v.pair.delta)}%; "
             f"{v.word}, Holm p = {p_text(v.p_holm)})"
             for name, kind in BASELINES if (v := verdict_against(run, found, kind))]
    return ", ".join(parts) if parts else "no run without search of its model to compare with"


def where_words(run: TaskRun, loaded: Loaded) -> str:
    """Finding or picking, against the first self-consistency run with rollouts of its model."""
    if run.rollouts is None:
        return "its store has no per-rollout data, so finding and picking cannot be told apart"
    c = coverage(run)
    lost = f"it lost {problems(c.found_not_picked)} of {c.problems} a rollout had solved"
    voters = voting_runs(run, loaded, among=with_rollouts)
    fp = next(filter(None, (find_pick(run, voter, loaded.root) for voter in voters)), None)
    if fp is None:
        return (f"some rollout reached the answer on {pct(c.oracle.value)}% of its problems and its pick kept "
                f"{pct(c.chosen.value)}% ({lost}; no self-consistency run of its model to tell finding from picking)")
    reach = (f"its rollouts reach the answer {fp.how_often} {config_name(fp.voter)}'s samples ({pct(fp.found)}% vs "
             f"{pct(fp.voter_found)}%, McNemar p = {p_text(fp.p)})")
    if fp.shortfall == "finding":
        return f"it falls short at finding: {reach}"
    if fp.shortfall == "picking":
        return f"it falls short at picking: {reach}, but its pick keeps {pct(fp.picked)}% against the vote's " \
               f"{pct(fp.voted)}% ({lost})"
    return f"it falls short at neither: {reach} and its pick keeps {pct(fp.picked)}% against the vote's {pct(fp.voted)}%"


def in_short(loaded: Loaded, found: list[Verdict]) -> list[str]:
    """One sentence per MCTS run of MGSM, in table order (task, then system).

    Args:
        loaded: the loaded results.
        found: the verdicts of "Does the search pay?" (mgsm_tables.verdicts).

    Returns:
        The sentences; [NO_SEARCH_YET] when there is no MCTS run.
    """
    runs = by_task_then_system(r for r in mgsm_runs(loaded).values() if r.strategy == "mcts")
    return [f"**{MGSM_TASKS[r.task]}, {r.system}**: {pct(r.accuracy)}%, {against_words(r, found)}; "
            f"{where_words(r, loaded)}." for r in runs] or [NO_SEARCH_YET]
