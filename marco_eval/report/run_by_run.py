"""The README's "Run by run" (under "Where the search gains and loses"): the questions of
issue #19 answered in one paragraph per MCTS run with per-rollout data ("In short", in_short.py,
keeps one sentence of each):

- does the search beat the runs without search (the verdicts of "Does the search pay?",
  Holm-corrected as there), and does its anytime curve overtake a vote at equal tokens;
- if it falls short, is that finding (its rollouts reach the answer less often than the
  voting run's samples: a paired McNemar test on the per-problem oracle) or picking (it
  reaches the answer but its pick loses it);
- how well its reward separates right rollouts from wrong ones: pooled over problems, and within
  a problem, where a pick is made (the "better than chance" verdict is read on that one);

then a paragraph per self-consistency run whose reward was a verifier (issue #27): its picks
against no search, its weighted vote against the majority of the same samples, and the
verifier's separation beside the confidence reward's (an MCTS run with a verifier gets the
picks read from its rollouts at the end of its own paragraph); then one sentence per
reflection run.
Every number is one its own section also shows, from the same functions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marco_eval.report.mgsm_tables import SIGNIFICANCE, Verdict
from marco_eval.report.picks import PICKS, verifier_rewarded
from marco_eval.report.reflection import fixed_and_broken, greedy_partner, is_reflection
from marco_eval.report.schema import MGSM_TASKS, Loaded, TaskRun
from marco_eval.report.search_stats import (
    confidence_separation, correct_rollouts, coverage, majority_answer, separation, weighted_vote_answer)
from marco_eval.report.search_tables import (
    overtake, overtake_words, problems, separation_sentence, voting_runs, with_rollouts)
from marco_eval.report.statistics import mcnemar_exact, same_answer, shared_problems
from marco_eval.report.tables import by_task_then_system, mgsm_runs, p_text, pct, signed
from marco_eval.search.final_answer import best_reward

NOTHING_YET = ("No MCTS run has per-rollout data yet, so there is nothing to read run by run; the verdicts are in "
               "\"Does the search pay?\".")


def config_name(run: TaskRun) -> str:
    """The run's config, as the paragraphs name the runs of one model: "self_consistency"."""
    return Path(run.manifest.config).stem


def against_no_search(search: TaskRun, found: list[Verdict]) -> str:
    """Its verdicts, one clause each, and what they add up to."""
    mine = [v for v in found if v.search is search]
    if not mine:
        return "No run without search of this model and task to compare with."
    clauses = [f"{pct(v.pair.run_value)}% vs {config_name(v.against)}'s {pct(v.pair.run_value - v.pair.delta)}% "
               f"on {v.pair.n} problems (Δ {signed(v.pair.delta)} points, Holm p = {p_text(v.p_holm)}"
               + (f", {v.tokens_ratio:.2f}× its tokens)" if v.tokens_ratio is not None else ")") for v in mine]
    parts = []
    for word, said in (("search better", "better than"), ("search worse", "worse than"),
                       ("no significant difference", "no significant difference from")):
        if names := [config_name(v.against) for v in mine if v.word == word]:
            parts.append(f"{said} {', '.join(names)}")
    outcome = "; ".join(parts)
    return f"Against no search: {'; '.join(clauses)}: {outcome}."


def at_equal_tokens(search: TaskRun, loaded: Loaded) -> str:
    """Whether its anytime curve stays above each vote's from some budget on (same problems)."""
    if search.traces is None:
        return ""
    parts = [f"against {config_name(vote)}'s vote, {overtake_words(overtake(search, vote, loaded.root))}"
             for vote in voting_runs(search, loaded)]
    return f" At equal tokens (point estimates), {'; '.join(parts)}." if parts else ""


@dataclass
class FindPick:
    """A search's rollouts against a voting run's samples on the problems both ran: how often
    each reached the answer (the per-problem oracle, exact McNemar) and what each picked."""

    voter: TaskRun
    problems: int
    found: float  # share of problems where some rollout of the search reached the answer
    voter_found: float
    p: float
    picked: float  # the search's accuracy on those problems
    voted: float

    @property
    def how_often(self) -> str:
        if self.p >= SIGNIFICANCE:
            return "about as often as"
        return "less often than" if self.found < self.voter_found else "more often than"

    @property
    def shortfall(self) -> str | None:
        """"finding", "picking", or None when it picks at least as well as the vote."""
        if self.how_often == "less often than":
            return "finding"
        return "picking" if self.picked < self.voted else None


def find_pick(search: TaskRun, voter: TaskRun, root: Path) -> FindPick | None:
    oracle = {d: bool(hits.any()) for d, hits in correct_rollouts(search).items()}
    theirs = {d: bool(hits.any()) for d, hits in correct_rollouts(voter).items()}
    shared = [d for d in shared_problems(search, voter, root) if d in oracle and d in theirs]
    if not shared:
        return None
    a = np.array([oracle[d] for d in shared], dtype=float)
    b = np.array([theirs[d] for d in shared], dtype=float)
    _, _, p = mcnemar_exact(a, b)
    return FindPick(voter, len(shared), float(a.mean()), float(b.mean()), p,
                    float(np.mean([search.scores[d] for d in shared])), float(np.mean([voter.scores[d] for d in shared])))


def find_or_pick(search: TaskRun, voters: list[TaskRun], root: Path) -> str:
    """Coverage against the voters' samples (paired, per-problem oracle), then what the pick keeps."""
    c = coverage(search)
    rule = search.final_rule or "configured"
    text = (f" Find or pick: some rollout reached the answer on {pct(c.oracle.value)}% of its {c.problems} "
            f"problems; its {rule} pick kept {pct(c.chosen.value)}% and lost {problems(c.found_not_picked)} a "
            f"rollout had solved, where a vote over the same rollouts scores {pct(c.majority.value)}% (majority) or "
            f"{pct(c.weighted.value)}% (reward-weighted).")
    for fp in filter(None, (find_pick(search, voter, root) for voter in voters)):
        text += (f" On the {fp.problems} problems both ran, its rollouts reach the answer {fp.how_often} "
                 f"{config_name(fp.voter)}'s samples ({pct(fp.found)}% vs {pct(fp.voter_found)}%, McNemar p = "
                 f"{p_text(fp.p)})")
        if fp.shortfall == "finding":
            text += ": it falls short at finding (coverage)."
        elif fp.shortfall == "picking":
            text += (f", yet its pick scores {pct(fp.picked)}% against the vote's {pct(fp.voted)}%: it falls short at "
                     f"picking (selection), not at finding.")
        else:
            text += f", and its pick scores {pct(fp.picked)}% against the vote's {pct(fp.voted)}%."
    return text


def reward_words(search: TaskRun) -> str:
    sentence = separation_sentence(separation(search))
    return f" Its reward: {sentence}" if sentence else ""


def coverage_of_pick(run: TaskRun, label: str) -> float:
    """The accuracy of one verifier pick over all the run's problems, as the coverage table has it."""
    c = coverage(run)
    return c.best_reward.value if PICKS[label] is best_reward else c.weighted.value


def picks_words(run: TaskRun, found: list[Verdict]) -> str:
    """Each verifier pick read from a run's rollouts (picks.py) against no search, from the verdicts."""
    mine = [v for v in found if v.search.results_file == run.results_file and v.search.task == run.task]
    picks = []
    for label in PICKS:
        theirs = [v for v in mine if v.search.system.endswith(f"({label})")]
        clauses = [f"{config_name(v.against)}'s {pct(v.pair.run_value - v.pair.delta)}% on {v.pair.n} problems "
                   f"(Δ {signed(v.pair.delta)} points, Holm p = {p_text(v.p_holm)}: {v.word})" for v in theirs]
        if clauses:
            picks.append(f"{label} {pct(coverage_of_pick(run, label))}% against {', '.join(clauses)}")
    if not picks:
        return ""
    read = "Read from its own rollouts" if run.strategy == "mcts" else "Against no search"
    return f" {read}: {'; '.join(picks)}."


def verifier_words(run: TaskRun, found: list[Verdict]) -> str:
    """A sampling run whose reward was a verifier: each verifier pick against no search, the
    weighted vote against the majority vote of the very same samples (paired), and both
    rewards' separation of right from wrong samples."""
    c = coverage(run)
    majority = {d: same_answer(majority_answer(rs), run.targets[d]) for d, rs in run.rollouts.items()}
    weighted = {d: same_answer(weighted_vote_answer(rs), run.targets[d]) for d, rs in run.rollouts.items()}
    docs = sorted(majority)
    wins, losses, p = mcnemar_exact(np.array([weighted[d] for d in docs], dtype=float),
                                    np.array([majority[d] for d in docs], dtype=float))
    text = (f" From the same {c.problems} problems' samples: majority vote {pct(c.majority.value)}%, "
            f"verifier-weighted vote {pct(c.weighted.value)}% (Δ {signed(c.weighted.value - c.majority.value)} points "
            f"over the majority, {wins} vs {losses} problems, McNemar p = {p_text(p)}), verifier best-of-"
            f"{c.k_max} {pct(c.best_reward.value)}%, any sample right {pct(c.oracle.value)}%.")
    text = picks_words(run, found) + text
    for name, sep in (("The verifier", separation(run)), ("The confidence reward of the same samples",
                                                          confidence_separation(run))):
        if sep is not None and (sentence := separation_sentence(sep)):
            text += f" {name}: {sentence}"
    return text


def reflection_words(run: TaskRun, loaded: Loaded) -> str | None:
    greedy = greedy_partner(run, loaded)
    if greedy is None:
        return None
    fb = fixed_and_broken(run, greedy, loaded.root)
    share = f" ({pct(fb.fixed_share.value)}%; the Marco-o1 paper: about half)" if fb.fixed_share else ""
    return (f"{MGSM_TASKS[run.task]}, {run.system}: of the {fb.greedy_wrong} problems greedy CoT got wrong, "
            f"reflection fixed {fb.fixed}{share}, and it broke {fb.broken} of the {fb.greedy_right} greedy CoT got "
            f"right: net {signed(fb.pair.delta)} points (McNemar p = {p_text(fb.pair.p)}).")


def run_by_run(loaded: Loaded, found: list[Verdict]) -> list[str]:
    """One paragraph per MCTS run with per-rollout data and per verifier-rewarded sampling run,
    then one sentence per reflection run.

    Args:
        loaded: the loaded results.
        found: the verdicts of "Does the search pay?" (mgsm_tables.verdicts).

    Returns:
        The sentences, in table order (task, then system); [NOTHING_YET] when no MCTS run
        has per-rollout data.
    """
    paragraphs = []
    for run in with_rollouts(loaded):
        head = f"**{MGSM_TASKS[run.task]}, {run.system}.**"
        if run.strategy == "mcts":
            voters = voting_runs(run, loaded, among=with_rollouts)
            paragraphs.append(head + " " + against_no_search(run, found) + at_equal_tokens(run, loaded)
                              + find_or_pick(run, voters, loaded.root) + reward_words(run)
                              + (picks_words(run, found) if verifier_rewarded(run) else ""))
        elif verifier_rewarded(run):
            paragraphs.append(head + verifier_words(run, found))
    if not paragraphs:
        paragraphs.append(NOTHING_YET)
    reflections = [r for r in by_task_then_system(mgsm_runs(loaded).values()) if is_reflection(r)]
    paragraphs += [f"Reflection, {words}" for r in reflections if (words := reflection_words(r, loaded))]
    return paragraphs
