"""Tables of "Where the search gains and loses" (issue #19), from each run's stored rollouts
and anytime traces: find or pick (coverage against the run's own choice and two votes over
the same rollouts), how well the reward separates right from wrong rollouts, reward
calibration, and accuracy at each budget."""

from __future__ import annotations

from dataclasses import dataclass

from marco_eval.report.picks import verifier_rewarded
from marco_eval.report.rollouts import lacking_search_data
from marco_eval.report.schema import MGSM_TASKS, Loaded, TaskRun
from marco_eval.report.search_stats import (
    Auroc, BudgetPoint, Separation, budget_curve, calibration, confidence_separation, coverage, overtakes, separation)
from marco_eval.report.statistics import shared_problems
from marco_eval.report.tables import (
    Table, acc_csv, acc_md, by_task_then_system, mgsm_runs, num, pct, store_source)

NO_ROLLOUTS = "(no run has per-rollout data yet: see the paragraph above)"


def with_rollouts(loaded: Loaded) -> list[TaskRun]:
    """MGSM runs whose store records all carry rollouts, in table order."""
    return by_task_then_system(r for r in mgsm_runs(loaded).values() if r.rollouts is not None)


def with_traces(loaded: Loaded) -> list[TaskRun]:
    """MGSM runs whose store records all carry an anytime trace, in table order."""
    return by_task_then_system(r for r in mgsm_runs(loaded).values() if r.traces is not None)


def lacking_sentence(loaded: Loaded) -> str | None:
    """One sentence naming every MGSM run without per-rollout data, grouped by why and by system."""
    why: dict[str, dict[str, list[str]]] = {}
    for run in sorted(mgsm_runs(loaded).values(), key=lambda r: (r.system, list(MGSM_TASKS).index(r.task))):
        reason = lacking_search_data(run)
        if reason:
            why.setdefault(reason, {}).setdefault(run.system, []).append(f"{MGSM_TASKS[run.task]} {run.source}")
    if not why:
        return None
    return ("Runs without per-rollout data, so not in this section: "
            + "; ".join(f"{reason}: " + ", ".join(f"{system} ({', '.join(runs)})" for system, runs in systems.items())
                        for reason, systems in why.items()) + ".")


def coverage_table(loaded: Loaded) -> Table:
    columns = ["Task", "System", "Pick rule", "n", "Rollouts / problem", "pass@1 % [95% CI]", "pass@k % [95% CI]",
               "Pick % [95% CI]", "Majority vote % [95% CI]", "Reward-weighted vote % [95% CI]",
               "Best-reward rollout % [95% CI]", "Oracle % [95% CI]", "Found, not picked", "Never found", "Sources"]
    csv_columns = ["task", "system", "final_answer", "problems", "rollouts_per_problem", "k",
                   *(f"{name}{end}" for name in ("pass_at_1", "pass_at_k", "pick", "majority_vote",
                                                 "weighted_vote", "best_reward", "oracle")
                     for end in ("", "_lo", "_hi")),
                   "found_not_picked", "never_found", "picked_unfound", "sources"]
    md_rows, csv_rows, findings = [], [], []
    for run in with_rollouts(loaded):
        c = coverage(run)
        rule = run.final_rule or "?"
        source = store_source(run, loaded.root)
        md_rows.append([MGSM_TASKS[run.task], run.system, rule, str(c.problems), f"{c.rollouts_per_problem:.1f}",
                        acc_md(c.pass_1), f"{acc_md(c.pass_k)} (k={c.k_max})" if c.pass_k else "—",
                        acc_md(c.chosen), acc_md(c.majority), acc_md(c.weighted), acc_md(c.best_reward),
                        acc_md(c.oracle),
                        str(c.found_not_picked), str(c.never_found), source])
        csv_rows.append([run.task, run.system, rule, c.problems, num(c.rollouts_per_problem), c.k_max,
                         *acc_csv(c.pass_1), *acc_csv(c.pass_k), *acc_csv(c.chosen), *acc_csv(c.majority),
                         *acc_csv(c.weighted), *acc_csv(c.best_reward), *acc_csv(c.oracle), c.found_not_picked,
                         c.never_found,
                         c.picked_unfound, source])
        findings.append(f"{MGSM_TASKS[run.task]}, {run.system}: some rollout had the right answer on "
                        f"{pct(c.oracle.value)}% of the {c.problems} problems, its {rule} pick on "
                        f"{pct(c.chosen.value)}%. Of the {c.found_not_picked + c.never_found} problems the pick got "
                        f"wrong, {c.found_not_picked} failed at the pick (some rollout had the answer) and "
                        f"{c.never_found} at the search (no rollout had it). Over the same rollouts a majority "
                        f"vote would score {pct(c.majority.value)}%, a reward-weighted vote {pct(c.weighted.value)}%, "
                        f"the single best-rewarded rollout {pct(c.best_reward.value)}%.")
    note = ("From each run's request store (`rollouts`: every rollout or sample, in order). pass@k: the unbiased "
            "estimator 1 − C(n−c, k)/C(n, k) per problem (n rollouts, c correct), averaged; k = the fewest "
            "rollouts any problem has. Pick: the run's own answer (`answer` of the store record: the configured "
            "final-answer rule, compared with the target like the rollouts; lm-eval's filter in the MGSM table "
            "can differ on a few problems). Majority vote (no answer does not vote; ties: first seen) and "
            "reward-weighted vote (the search's `vote` rule) and the best-rewarded rollout (its `best_reward` rule; "
            "with a verifier as the run's reward, verifier best-of-N) are derived from the same rollouts of the same run: "
            "no second search. Oracle: a problem counts when any rollout is correct. Found, not picked: problems "
            "some rollout solved but the pick missed (a selection failure); never found: the pick missed and no "
            "rollout solved it (a search failure). CIs: percentile bootstrap over problems.")
    return Table("search_coverage", "Find or pick: rollouts against the run's own choice", note, columns, md_rows,
                 csv_columns, csv_rows, findings, empty=NO_ROLLOUTS)


def separation_table(loaded: Loaded) -> Table:
    columns = ["Task", "System", "Rollouts", "Correct", "AUROC pooled [95% CI]", "Pairs pooled",
               "AUROC within a problem [95% CI]", "Pairs within (problems)", "Mean reward, correct",
               "Mean reward, wrong", "Sources"]
    csv_columns = ["task", "system", "rollouts", "correct", "auroc", "auroc_lo", "auroc_hi", "pairs",
                   "auroc_within", "auroc_within_lo", "auroc_within_hi", "pairs_within", "problems_within",
                   "mean_reward_correct", "mean_reward_wrong", "sources"]
    md_rows, csv_rows, findings = [], [], []
    # a run whose reward was a verifier gets a second row: the confidence reward of the same rollouts
    rows = [(run, label, s) for run in with_rollouts(loaded)
            for label, s in ((run.system, separation(run)),
                             (f"{run.system} (confidence reward)", confidence_separation(run))) if s is not None]
    for run, system, s in rows:
        if (sentence := separation_sentence(s)) is not None:
            findings.append(f"{MGSM_TASKS[run.task]}, {system}: {sentence}")
        if s.pooled.value is None:
            pooled = "— (no correct rollout)" if s.correct == 0 else "— (no wrong rollout)"
        else:
            pooled = auroc_md(s.pooled)
        within = auroc_md(s.within) if s.within.value is not None else "— (no problem has both)"
        source = store_source(run, loaded.root)
        md_rows.append([MGSM_TASKS[run.task], system, str(s.rollouts), str(s.correct), pooled,
                        f"{s.pooled.pairs:,}", within, f"{s.within.pairs:,} ({s.within.problems})",
                        f"{s.mean_reward_correct:.3f}" if s.mean_reward_correct is not None else "—",
                        f"{s.mean_reward_wrong:.3f}" if s.mean_reward_wrong is not None else "—", source])
        csv_rows.append([run.task, system, s.rollouts, s.correct, num(s.pooled.value), num(s.pooled.lo),
                         num(s.pooled.hi), s.pooled.pairs, num(s.within.value), num(s.within.lo), num(s.within.hi),
                         s.within.pairs, s.within.problems, num(s.mean_reward_correct), num(s.mean_reward_wrong),
                         source])
    note = ("Does the run's reward (the confidence reward unless the run names a verifier, `reward=PATH`; such a run "
            "also gets a row for the confidence reward of the same rollouts) know a right rollout from a wrong "
            "one? AUROC: the share of (correct, wrong) "
            "rollout pairs in which the correct one has the higher reward (ties count 1/2; 0.5 = no better than "
            "chance, 1 = perfect). Pooled: every pair of the run, whatever their problems, so a reward that only "
            "knows which problems are easy scores well on it. Within a problem: only pairs of the same problem, "
            "over the problems with both right and wrong rollouts; that is the choice a search or a vote makes, "
            "so whether the reward helps to pick is judged on it. CIs: percentile bootstrap resampling problems "
            "with all their rollouts (a problem's rollouts are not independent), the same resamples for both; "
            "resamples without a pair are skipped. Calibration by reward bin: `report/reward_calibration.png` "
            "(below, when any run has rollouts) and `report/reward_calibration.md`.")
    return Table("reward_auroc", "Does the reward separate right from wrong rollouts?", note, columns, md_rows,
                 csv_columns, csv_rows, findings, empty=NO_ROLLOUTS)


def auroc_md(a: Auroc) -> str:
    """"0.625 [0.578, 0.669]" (an Auroc with a value)."""
    return f"{a.value:.3f}" + (f" [{a.lo:.3f}, {a.hi:.3f}]" if a.lo is not None else " [too few problems]")


def separation_sentence(s: Separation) -> str | None:
    """Both AUROCs in words, each named (pooled over problems, within a problem), and whether the
    within-problem CI tells the reward from chance at picking. None without both kinds of rollout."""
    if s.pooled.value is None:
        return None
    text = (f"pooled over problems, a correct rollout outranked a wrong one by reward in {100 * s.pooled.value:.1f}% "
            f"of the {s.pooled.pairs:,} pairs (ties count half; AUROC {s.pooled.value:.3f}"
            + (f", 95% CI [{s.pooled.lo:.3f}, {s.pooled.hi:.3f}])" if s.pooled.lo is not None
               else "; too few problems for a CI)"))
    w = s.within
    if w.value is None:
        return text + ("; within a problem, where a pick is made: no problem has both right and wrong rollouts, so "
                       "nothing to say about picking.")
    text += (f"; within a problem, where a pick is made, in {100 * w.value:.1f}% of the {w.pairs:,} pairs of the "
             f"{problems(w.problems)} with both right and wrong rollouts (AUROC {w.value:.3f}")
    if w.lo is None:
        return text + "; too few problems for a CI, so no verdict on picking)."
    verdict = ("better than chance at picking: the within-problem CI lies above 0.5" if w.lo > 0.5 else
               "worse than chance at picking: within a problem wrong rollouts score higher, the CI lies below 0.5"
               if w.hi < 0.5 else "not distinguishable from chance at picking: the within-problem CI spans 0.5")
    return text + f", 95% CI [{w.lo:.3f}, {w.hi:.3f}]): {verdict}."


def problems(n: int) -> str:
    """"1 problem", "3 problems"."""
    return f"{n} problem" + ("" if n == 1 else "s")


def calibration_table(loaded: Loaded) -> Table:
    columns = ["Task", "System", "Reward bin", "Rollouts", "Correct", "Fraction correct", "Sources"]
    csv_columns = ["task", "system", "bin_lo", "bin_hi", "rollouts", "correct", "fraction_correct", "sources"]
    md_rows, csv_rows = [], []
    for run in with_rollouts(loaded):
        source = store_source(run, loaded.root)
        for lo, hi, count, right in calibration(run):
            fraction = right / count if count else None
            md_rows.append([MGSM_TASKS[run.task], run.system, f"[{lo:.1f}, {hi:.1f}{']' if hi == 1 else ')'}",
                            str(count), str(right), f"{fraction:.3f}" if fraction is not None else "—", source])
            csv_rows.append([run.task, run.system, num(lo), num(hi), count, right, num(fraction), source])
    note = ("Every rollout of a run by its reward, in ten equal bins over [0, 1] (a reward of 1 in the last): how "
            "many fell in each and what fraction of those were correct. A calibrated reward would put that "
            "fraction near the bin's reward.")
    return Table("reward_calibration", "Reward calibration (by bin)", note, columns, md_rows, csv_columns, csv_rows,
                 empty=NO_ROLLOUTS)


def budget_table(loaded: Loaded) -> tuple[Table, dict[tuple[str, str], list[BudgetPoint]]]:
    """The accuracy-by-budget table and the curves it is made of ((system, task) -> points)."""
    columns = ["Task", "System", "k", "Tokens / problem", "Accuracy % [95% CI]", "Sources"]
    csv_columns = ["task", "system", "k", "tokens_per_problem", "acc", "ci_lo", "ci_hi", "sources"]
    md_rows, csv_rows, curves = [], [], {}
    for run in with_traces(loaded):
        curves[run.system, run.task] = points = budget_curve(run)
        source = store_source(run, loaded.root)
        for p in points:
            md_rows.append([MGSM_TASKS[run.task], run.system, str(p.k), f"{p.tokens:.1f}", acc_md(p.accuracy), source])
            csv_rows.append([run.task, run.system, p.k, num(p.tokens), *acc_csv(p.accuracy), source])
    note = ("From each run's anytime trace (`trace` in the request store): after k MCTS simulations (sampling runs: "
            "over the first k samples), the answer the run's configured final-answer rule would give and the "
            "tokens generated so far. Tokens / problem: their mean over problems; accuracy of those answers with "
            "a percentile bootstrap CI over problems. A problem whose search ended before k keeps its last answer. "
            "The curves of every run of a model on a task share one plot, `report/budget_<model>_<task>.png` "
            "(above, when any run has a trace).")
    table = Table("accuracy_by_budget", "Accuracy at each budget (anytime traces)", note, columns, md_rows,
                  csv_columns, csv_rows, overtake_sentences(loaded), empty=NO_ROLLOUTS)
    return table, curves


@dataclass
class Overtake:
    """Where a search run's anytime curve passes a voting run's, both read on the same problems."""

    problems: int  # the problems both ran, the only ones either curve is read on here
    budget: float | None  # tokens per problem from which the search stays above; None: it never does
    largest: float | None  # the largest budget both curves reach


def overtake(search: TaskRun, vote: TaskRun, root) -> Overtake:
    """The two curves on the problems both runs traced: a search on the first 100 against a vote
    on all 250 would otherwise compare different problems."""
    docs = [d for d in shared_problems(search, vote, root) if d in search.traces and d in vote.traces]
    if not docs:
        return Overtake(0, None, None)
    mine, theirs = budget_curve(search, docs), budget_curve(vote, docs)
    reach = [max(p.tokens for p in curve) for curve in (mine, theirs)]
    return Overtake(len(docs), overtakes(mine, theirs), min(reach))


def voting_runs(search: TaskRun, loaded: Loaded, among=with_traces) -> list[TaskRun]:
    """The runs of the same model and task without search whose pick is a vote (self-consistency):
    the baseline a search must beat (a verifier's vote is a new configuration, not a baseline:
    picks.py). `among` picks the runs that have what the caller reads
    (with_traces: an anytime trace; with_rollouts: per-rollout data)."""
    return [r for r in among(loaded) if r.task == search.task and r.strategy == "sampling"
            and r.final_rule == "vote" and r.manifest.model == search.manifest.model and not verifier_rewarded(r)]


def overtake_words(o: Overtake) -> str:
    """"the search's curve ..." for one Overtake, with the problems it was read on."""
    if o.budget is None:
        return f"the search's curve does not stay above the vote's at any budget both reach (on the {o.problems} " \
               f"problems both ran)"
    if o.budget == o.largest:
        return f"the search's curve is above only at the largest budget both reach, {o.budget:,.1f} tokens per " \
               f"problem (on the {o.problems} problems both ran)"
    return f"the search's curve is above from {o.budget:,.1f} tokens per problem on, up to the largest budget " \
           f"both reach, {o.largest:,.1f} (on the {o.problems} problems both ran)"


def overtake_sentences(loaded: Loaded) -> list[str]:
    """For every MCTS run and every voting run of the same model and task (both with traces):
    from which budget, if any, the search's curve stays above the vote's."""
    return [f"{MGSM_TASKS[search.task]}, {search.system} against the vote of {vote.system}: "
            f"{overtake_words(overtake(search, vote, loaded.root))}. (Point estimates; the CIs are in the plot.)"
            for search in with_traces(loaded) if search.strategy == "mcts" for vote in voting_runs(search, loaded)]


def search_intro(loaded: Loaded) -> str:
    """The plain-words paragraph that opens the section: what it asks, and which runs can answer."""
    having = [f"{r.system} {MGSM_TASKS[r.task]} ({r.source})" for r in with_rollouts(loaded)]
    text = ("Where does the search gain, and where does it lose? A run that records its rollouts (every MCTS "
            "rollout or sample with its answer, reward and length) and its anytime trace (after each simulation "
            "or sample, the answer it would give then and the tokens spent) answers, without a second search: "
            "did the right answer turn up among the rollouts at all (coverage: pass@k and the oracle), and did "
            "the run pick it (its own pick against a majority vote and a reward-weighted vote over the same "
            "rollouts)? A problem lost with the answer among the rollouts is a failure to pick; one where no "
            "rollout had it, a failure to find. Does the confidence reward rank right rollouts above wrong ones "
            "(AUROC, calibration)? And how does accuracy grow with the tokens spent, against voting on the same "
            "budget?")
    if having:
        text += f" Runs with per-rollout data: {', '.join(having)}."
    else:
        text += " No run in these results has per-rollout data yet, so the tables below are empty."
    lacking = lacking_sentence(loaded)
    return text + (f" {lacking}" if lacking else "")
