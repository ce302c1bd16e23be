"""Reflection against greedy CoT, problem by problem: of the problems greedy CoT got wrong,
how many the reflection run fixed, and of those it got right, how many it broke, beside the
Marco-o1 paper's claim that reflection fixed "about half" of the hard problems."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marco_eval.report.schema import MGSM_TASKS, Loaded, TaskRun
from marco_eval.report.statistics import Accuracy, Paired, accuracy_of, paired, shared_problems
from marco_eval.report.tables import Table, acc_md, by_task_then_system, mgsm_runs, num, p_text, pct, signed

GREEDY_CONFIG = "base_cot"  # the greedy CoT config each reflection run is compared with
PAPER_CLAIM = "fixed about half of the hard problems"


def is_reflection(run: TaskRun) -> bool:
    """A run whose config name says reflection (cot_reflection, mcts_step_reflection, ...)."""
    return "reflection" in Path(run.manifest.config).stem


def greedy_partner(run: TaskRun, loaded: Loaded) -> TaskRun | None:
    """The base_cot run of the same model and task, if there is one."""
    return next((r for r in mgsm_runs(loaded).values() if r.task == run.task and r.manifest.model == run.manifest.model
                 and Path(r.manifest.config).stem == GREEDY_CONFIG), None)


@dataclass
class FixedBroken:
    """Reflection against greedy CoT on the problems both scored."""

    greedy_wrong: int
    fixed: int  # greedy wrong, reflection right
    greedy_right: int
    broken: int  # greedy right, reflection wrong
    fixed_share: Accuracy | None  # fixed / greedy_wrong with a bootstrap CI over those problems
    pair: Paired  # reflection minus greedy: Δ, its CI, McNemar's p (wins = fixed, losses = broken)
    fired: int | None = None  # problems where the phrase was inserted (None: the store does not say)
    # Split by whether the phrase went in (None without per-rollout data). Where it did not,
    # the reflection run's text is greedy CoT's own, so any change there is not reflection's:
    # it measures how far greedy decoding moves with the batch it ran in.
    fixed_reflected: int | None = None
    broken_reflected: int | None = None
    fixed_elsewhere: int | None = None
    broken_elsewhere: int | None = None


def fixed_and_broken(reflection: TaskRun, greedy: TaskRun, root: Path) -> FixedBroken:
    """Count what reflection fixed and broke relative to greedy CoT.

    Args:
        reflection, greedy: the two runs (same model and task).
        root: the results folder, for error messages.

    Returns:
        FixedBroken over the problems both runs scored.
    """
    shared = shared_problems(reflection, greedy, root)
    mine = np.array([reflection.scores[d] for d in shared])
    base = np.array([greedy.scores[d] for d in shared])
    fixed_of_wrong = mine[base == 0]
    split = {}
    if reflection.rollouts is not None:  # the model must close its thought for the phrase to go in
        went_in = np.array([any(r.reflections for r in reflection.rollouts.get(d, [])) for d in shared])
        for name, where in (("reflected", went_in), ("elsewhere", ~went_in)):
            split[f"fixed_{name}"] = int(np.sum(where & (base == 0) & (mine == 1)))
            split[f"broken_{name}"] = int(np.sum(where & (base == 1) & (mine == 0)))
        split["fired"] = int(went_in.sum())
    return FixedBroken(greedy_wrong=int(np.sum(base == 0)), fixed=int(np.sum((base == 0) & (mine == 1))),
                       greedy_right=int(np.sum(base == 1)), broken=int(np.sum((base == 1) & (mine == 0))),
                       fixed_share=accuracy_of(fixed_of_wrong) if len(fixed_of_wrong) else None,
                       pair=paired(reflection, greedy, root), **split)


def reflection_table(loaded: Loaded) -> Table:
    columns = ["Task", "Reflection", "Greedy CoT", "n paired", "Reflected", "Greedy wrong",
               "Fixed (% of greedy wrong [95% CI])",
               "Greedy right", "Broken (% of greedy right)", "Fixed / broken where reflected",
               "Fixed / broken elsewhere", "Δ accuracy [95% CI]", "p (McNemar)", "Marco-o1 paper", "Sources"]
    csv_columns = ["task", "reflection", "greedy", "n_paired", "reflected", "fixed_reflected", "broken_reflected",
                   "fixed_elsewhere", "broken_elsewhere", "greedy_wrong", "fixed", "fixed_share",
                   "fixed_share_lo", "fixed_share_hi", "greedy_right", "broken", "broken_share", "delta", "delta_lo",
                   "delta_hi", "p_mcnemar", "paper_claim", "sources"]
    md_rows, csv_rows, findings = [], [], []
    for run in by_task_then_system(r for r in mgsm_runs(loaded).values() if is_reflection(r)):
        greedy = greedy_partner(run, loaded)
        if greedy is None:
            findings.append(f"{MGSM_TASKS[run.task]}, {run.system}: no {GREEDY_CONFIG} run of model "
                            f"{run.manifest.model} on this task to compare with.")
            continue
        f = fixed_and_broken(run, greedy, loaded.root)
        share = f.fixed_share
        broken_share = f.broken / f.greedy_right if f.greedy_right else None
        d = f.pair
        reflected = "—" if f.fired is None else str(f.fired)
        where = "—" if f.fired is None else f"{f.fixed_reflected} / {f.broken_reflected}"
        elsewhere = "—" if f.fired is None else f"{f.fixed_elsewhere} / {f.broken_elsewhere}"
        md_rows.append([MGSM_TASKS[run.task], run.system, greedy.system, str(d.n), reflected, str(f.greedy_wrong),
                        f"{f.fixed} ({acc_md(share)})" if share else "0 (—)", str(f.greedy_right),
                        f"{f.broken} ({pct(broken_share)})" if broken_share is not None else "0 (—)", where, elsewhere,
                        f"{signed(d.delta)} [{signed(d.lo)}, {signed(d.hi)}]", p_text(d.p), PAPER_CLAIM,
                        f"{run.source}, {greedy.source}"])
        split = [f.fired, f.fixed_reflected, f.broken_reflected, f.fixed_elsewhere, f.broken_elsewhere]
        csv_rows.append([run.task, run.system, greedy.system, d.n, *["" if v is None else v for v in split],
                         f.greedy_wrong, f.fixed,
                         *([num(share.value), num(share.lo), num(share.hi)] if share else ["", "", ""]),
                         f.greedy_right, f.broken, num(broken_share), num(d.delta), num(d.lo), num(d.hi),
                         num(d.p, 9), PAPER_CLAIM, f"{run.source} {greedy.source}"])
        if share:
            findings.append(f"{MGSM_TASKS[run.task]}, {run.system}: of the {f.greedy_wrong} problems greedy CoT got "
                            f"wrong, reflection fixed {f.fixed} ({pct(share.value)}%, 95% CI [{pct(share.lo)}, "
                            f"{pct(share.hi)}]; the paper: about half), and it broke {f.broken} of the "
                            f"{f.greedy_right} greedy CoT got right: net {signed(d.delta)} points "
                            f"(McNemar p = {p_text(d.p)})."
                            + ("" if f.fired is None else
                               f" The phrase went in on {f.fired} of the {d.n} problems (elsewhere the model never "
                               f"closed its thought); there it fixed {f.fixed_reflected} and broke "
                               f"{f.broken_reflected}. On the other {d.n - f.fired} the run decoded greedily like "
                               f"greedy CoT, yet {f.fixed_elsewhere} answers turned right and {f.broken_elsewhere} "
                               "wrong: not reflection's doing, but how far greedy decoding moves with the batch it "
                               "ran in (batch size, padding, bf16 rounding); read the totals against that."))
    note = (f"Every run whose config name contains \"reflection\" against greedy CoT (`{GREEDY_CONFIG}`) of the same "
            "model and task, on the problems both scored, per problem (lm-eval `exact_match`, filter `{filter}`). "
            "Fixed: greedy CoT wrong, reflection right; broken: greedy CoT right, reflection wrong. The fixed "
            "share's CI is a percentile bootstrap over the problems greedy CoT got wrong; Δ and p as in the MGSM "
            "table (McNemar on fixed vs broken). The Marco-o1 paper reports that reflection fixed about half of "
            "the problems the model first got wrong (its \"hard problems\"); here \"hard\" means greedy CoT got it "
            "wrong. Reflected: problems where the reflection phrase was inserted at all (from the store's "
            "per-rollout `reflections`; — when the store predates it): the phrase goes in only where the model "
            "writes the end-of-thought tag. Fixed / broken where reflected: the same counts over those problems "
            "only; elsewhere: over the rest, where the reflection run decoded exactly as greedy CoT does, so "
            "those changes are the noise of rerunning greedy decoding in another batch, not reflection.")
    return Table("reflection", "Does reflection fix what greedy CoT got wrong?", note, columns, md_rows, csv_columns,
                 csv_rows, findings, empty="(no run with \"reflection\" in its config name yet)")
