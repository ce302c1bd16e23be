"""Statistics of a run's rollouts ("Where the search gains and loses", issue #19).

Everything here reads one run's stored rollouts, so the votes are derived from the same run,
never from a second search:

- coverage: pass@k, the unbiased estimator 1 - C(n-c, k) / C(n, k) for a problem with n
  rollouts of which c are correct, averaged over problems; the oracle counts a problem when
  any rollout is correct. Set beside the run's own pick and two votes over the same rollouts,
  it separates failing to FIND the answer from failing to PICK it;
- reward separation: AUROC of the reward between correct and wrong rollouts (ties count 1/2),
  pooled over every pair of the run and within a problem (pairs of the same problem only: the
  choice a search or a vote makes), each with a percentile bootstrap CI that resamples
  problems, not rollouts (a problem's rollouts are not independent), and reward-bin
  calibration;
- accuracy against tokens from the anytime traces.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from marco_eval.report.memo import once_per_run
from marco_eval.report.schema import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, TaskRun
from marco_eval.search.mcts import RolloutSummary, TracePoint
from marco_eval.report.statistics import Accuracy, accuracy_of, percentile_interval, resample_indices, same_answer
from marco_eval.search.final_answer import best_reward, vote

CALIBRATION_BINS = 10  # equal-width reward bins over [0, 1]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Chance that k rollouts drawn without replacement from n, c of them correct, include a
    correct one: 1 - C(n-c, k) / C(n, k) (Chen et al. 2021's unbiased estimator).

    Args:
        n: rollouts of the problem; c: how many are correct; k: 1 <= k <= n.

    Returns:
        pass@k for that problem, in [0, 1].
    """
    if not 1 <= k <= n:
        raise ValueError(f"pass@{k} needs 1 <= k <= n = {n}")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_answer(rollouts: list[RolloutSummary]) -> str | None:
    """The most frequent answer among the rollouts (no answer does not vote; ties: first seen)."""
    counts = Counter(r.answer for r in rollouts if r.answer is not None)
    return max(counts, key=counts.get) if counts else None  # max keeps the first of equal counts


def weighted_vote_answer(rollouts: list[RolloutSummary]) -> str | None:
    """The reward-weighted vote, by the search's own rule (final_answer=vote), so this column is
    what an mcts_step_vote / self-consistency pick over these very rollouts would answer."""
    return vote(None, rollouts).answer if rollouts else None


def correct_rollouts(run: TaskRun) -> dict[int, np.ndarray]:
    """doc_id -> one bool per rollout: does its answer match the problem's target."""
    return {d: np.array([same_answer(r.answer, run.targets[d]) for r in rs], dtype=bool)
            for d, rs in sorted(run.rollouts.items())}


@dataclass
class Coverage:
    """Find or pick: one run's rollouts against its own pick, the votes and the oracle."""

    problems: int
    rollouts_per_problem: float
    k_max: int  # the largest k every problem has: its fewest rollouts
    pass_1: Accuracy
    pass_k: Accuracy | None  # pass@k_max; None when some problem has no rollout
    chosen: Accuracy  # the store's answer: the configured rule's pick
    majority: Accuracy
    weighted: Accuracy
    best_reward: Accuracy  # the highest-reward rollout (best-of-N by the run's own reward; ties: first)
    oracle: Accuracy  # any rollout correct
    found_not_picked: int  # pick wrong, some rollout correct: a selection failure
    never_found: int  # pick wrong, no rollout correct: a search failure
    picked_unfound: int  # pick correct though no rollout is (a pick outside the rollouts; should be 0)


@once_per_run
def coverage(run: TaskRun) -> Coverage:
    """Coverage and selection of one run with per-rollout data; CIs bootstrap over problems.
    Computed once per run (memo.py): several sections read it.

    Args:
        run: a task run whose `rollouts` is set.

    Returns:
        Its Coverage.
    """
    return coverage_of(run)


def coverage_of(run: TaskRun) -> Coverage:
    correct = correct_rollouts(run)
    docs = sorted(correct)
    sizes = [len(correct[d]) for d in docs]
    k_max = min(sizes)
    hits = np.array([correct[d].sum() for d in docs])  # correct rollouts per problem
    pass_1 = np.array([pass_at_k(n, c, 1) if n else 0.0 for n, c in zip(sizes, hits)])
    pass_k = np.array([pass_at_k(n, c, k_max) for n, c in zip(sizes, hits)]) if k_max else None
    chosen = np.array([same_answer(run.answers[d], run.targets[d]) for d in docs], dtype=float)
    majority = np.array([same_answer(majority_answer(run.rollouts[d]), run.targets[d]) for d in docs], dtype=float)
    weighted = np.array([same_answer(weighted_vote_answer(run.rollouts[d]), run.targets[d]) for d in docs],
                        dtype=float)
    best = np.array([same_answer(best_reward(None, run.rollouts[d]).answer if run.rollouts[d] else None,
                                 run.targets[d]) for d in docs], dtype=float)
    oracle = (hits > 0).astype(float)
    return Coverage(problems=len(docs), rollouts_per_problem=float(np.mean(sizes)), k_max=k_max,
                    pass_1=accuracy_of(pass_1), pass_k=accuracy_of(pass_k) if pass_k is not None else None,
                    chosen=accuracy_of(chosen), majority=accuracy_of(majority), weighted=accuracy_of(weighted),
                    best_reward=accuracy_of(best),
                    oracle=accuracy_of(oracle), found_not_picked=int(np.sum((oracle == 1) & (chosen == 0))),
                    never_found=int(np.sum((oracle == 0) & (chosen == 0))),
                    picked_unfound=int(np.sum((oracle == 0) & (chosen == 1))))


@dataclass
class Auroc:
    """One AUROC of a reward for correct against wrong rollouts, with the pairs it rests on."""

    value: float | None  # None when there is no (correct, wrong) pair
    lo: float | None  # 95% CI; None with value, or when under half the resamples have a pair
    hi: float | None
    pairs: int  # the (correct, wrong) pairs it is the share of
    problems: int  # the problems those pairs come from


@dataclass
class Separation:
    """How well a run's reward tells its correct rollouts from its wrong ones: pooled over every
    pair of the run, and within a problem, the only choice a search or a vote makes."""

    rollouts: int
    correct: int
    pooled: Auroc  # every (correct, wrong) pair of the run, whatever the problems
    within: Auroc  # only pairs of one problem: over problems with both kinds
    mean_reward_correct: float | None
    mean_reward_wrong: float | None


def pair_wins_by_problem(rewards: list[np.ndarray], labels: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """For problems p and q: M[p, q] = over correct rollouts i of p and wrong rollouts j of q, the
    sum of [r_i > r_j] + 1/2 [r_i = r_j]; and each problem's correct (a) and wrong (b) counts.
    Any multiset of problems then has AUROC w'Mw / ((w.a)(w.b)), w its problem counts, which
    makes a bootstrap over problems a few matrix products; its pairs within one problem are
    the diagonal, AUROC w.diag(M) / w.(a*b)."""
    problem = np.concatenate([np.full(len(r), p) for p, r in enumerate(rewards)])
    reward, label = np.concatenate(rewards), np.concatenate(labels)
    pos, neg = reward[label], reward[~label]
    wins = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    n = len(rewards)
    to_pos = np.eye(n)[problem[label]]  # rollout -> its problem, one-hot
    to_neg = np.eye(n)[problem[~label]]
    return to_pos.T @ wins @ to_neg, to_pos.sum(axis=0), to_neg.sum(axis=0)


def aurocs_with_ci(rewards: list[np.ndarray], labels: list[np.ndarray], resamples: int = BOOTSTRAP_RESAMPLES,
                   seed: int = BOOTSTRAP_SEED) -> tuple[Auroc, Auroc]:
    """The AUROC of any per-rollout score (the confidence reward, a verifier's) for correct
    against wrong rollouts, pooled over problems and within a problem, each with a percentile
    bootstrap CI that resamples problems (each with all its rollouts). Both come from one
    pass: the same resampled problem sets give both CIs.

    Pooled counts every (correct, wrong) pair of any two problems, so a score that only knows
    which problems are easy scores well on it; within counts only pairs of the same problem,
    over problems with both kinds: the choice a search or a vote makes. Ties count 1/2.

    Args:
        rewards, labels: per problem, its rollouts' scores and correctness (bools).
        resamples, seed: the bootstrap's, as for every other CI of the report.

    Returns:
        (pooled, within); an Auroc's value None when it has no pair (no correct rollout or no
        wrong one; within: no problem with both), its lo and hi None when fewer than half the
        resamples have a pair (too few to say).
    """
    wins, a, b = pair_wins_by_problem(rewards, labels)
    n = len(rewards)
    same = np.diag(wins).copy()  # each problem's own pairs: the within-problem wins
    both = a * b  # ... and their count
    estimates = {"pooled": [], "within": []}  # both from the same resampled problem sets
    for idx in resample_indices(n, resamples, seed):
        # each resample's problem counts, one row per resample
        counts = np.bincount((idx + n * np.arange(len(idx))[:, None]).ravel(), minlength=len(idx) * n)
        counts = counts.reshape(len(idx), n).astype(float)
        ratios = {"pooled": (((counts @ wins) * counts).sum(axis=1), (counts @ a) * (counts @ b)),
                  "within": (counts @ same, counts @ both)}
        for name, (numerator, denominator) in ratios.items():
            ok = denominator > 0  # a resample without a pair (e.g. only all-correct problems) is skipped
            estimates[name].append(numerator[ok] / denominator[ok])
    pooled = auroc_of(wins.sum(), a.sum() * b.sum(), int(np.sum(a + b > 0)), estimates["pooled"], resamples)
    within = auroc_of(same.sum(), both.sum(), int(np.sum(both > 0)), estimates["within"], resamples)
    return pooled, within


def auroc_of(wins: float, pairs: float, problems: int, estimates: list[np.ndarray], resamples: int) -> Auroc:
    """An Auroc from its wins, pairs and bootstrap estimates (no CI under resamples / 2 of them)."""
    if pairs == 0:
        return Auroc(None, None, None, 0, 0)
    point = float(wins / pairs)
    estimates = np.concatenate(estimates)
    if len(estimates) < resamples / 2:
        return Auroc(point, None, None, int(pairs), problems)
    lo, hi = percentile_interval(estimates)
    return Auroc(point, lo, hi, int(pairs), problems)


@once_per_run
def separation(run: TaskRun) -> Separation:
    """The reward's AUROCs (pooled and within a problem, with CIs) and mean reward of correct and
    wrong rollouts of one run, computed once per run (memo.py)."""
    return separation_of(run)


@once_per_run
def confidence_separation(run: TaskRun) -> Separation | None:
    """The same as `separation` for Marco-o1's confidence reward of the same rollouts, when the
    run's own reward was another (a verifier: reward=PATH); None when it was the confidence."""
    rollouts = [r for rs in run.rollouts.values() for r in rs]
    if any(r.confidence is None for r in rollouts) or all(r.confidence == r.reward for r in rollouts):
        return None
    return separation_of(run, score=lambda r: r.confidence)


def separation_of(run: TaskRun, score=lambda r: r.reward) -> Separation:
    correct = correct_rollouts(run)
    docs = sorted(correct)
    rewards = [np.array([score(r) for r in run.rollouts[d]], dtype=float) for d in docs]
    labels = [correct[d] for d in docs]
    pooled, within = aurocs_with_ci(rewards, labels)
    reward, label = np.concatenate(rewards), np.concatenate(labels)
    return Separation(rollouts=len(reward), correct=int(label.sum()), pooled=pooled, within=within,
                      mean_reward_correct=float(reward[label].mean()) if label.any() else None,
                      mean_reward_wrong=float(reward[~label].mean()) if (~label).any() else None)


def calibration(run: TaskRun, bins: int = CALIBRATION_BINS) -> list[tuple[float, float, int, int]]:
    """Reward bins against the fraction of correct rollouts in each.

    Args:
        run: a task run with rollouts.
        bins: equal-width bins over [0, 1]; a reward of exactly 1 falls in the last.

    Returns:
        (bin low, bin high, rollouts, correct rollouts) per bin, empty bins included.
    """
    correct = correct_rollouts(run)
    reward = np.concatenate([[r.reward for r in run.rollouts[d]] for d in sorted(correct)]).astype(float)
    label = np.concatenate([correct[d] for d in sorted(correct)])
    which = np.minimum((reward * bins).astype(int), bins - 1)
    return [(b / bins, (b + 1) / bins, int(np.sum(which == b)), int(np.sum(label[which == b])))
            for b in range(bins)]


@dataclass
class BudgetPoint:
    """After k simulations (sampling: samples): mean tokens spent and the trace answer's accuracy."""

    k: int
    tokens: float
    accuracy: Accuracy


def budget_curve(run: TaskRun, docs: list[int] | None = None) -> list[BudgetPoint]:
    """Accuracy against tokens from a run's anytime traces. A problem whose search ended before
    step k (a shorter trace) keeps its last answer and tokens: that is what it would hand back.

    Args:
        run: a task run whose `traces` is set.
        docs: the problems (doc_ids) to read, to set two runs side by side on the same ones;
            default all the run has.

    Returns:
        One point per k = 1 .. the longest trace.
    """
    docs = sorted(run.traces) if docs is None else sorted(docs)
    longest = max(len(run.traces[d]) for d in docs)
    points = []
    for k in range(1, longest + 1):
        at_k = [trace_at(run.traces[d], k) for d in docs]
        solved = np.array([same_answer(t.answer, run.targets[d]) for t, d in zip(at_k, docs)], dtype=float)
        points.append(BudgetPoint(k, float(np.mean([t.tokens for t in at_k])), accuracy_of(solved)))
    return points


def trace_at(trace: list[TracePoint], k: int) -> TracePoint:
    """The trace entry after step k (1-based), the last one for a shorter trace; nothing yet: no answer, no tokens."""
    return trace[min(k, len(trace)) - 1] if trace else TracePoint(None, 0)


def overtakes(search: list[BudgetPoint], other: list[BudgetPoint]) -> float | None:
    """The smallest budget (mean tokens per problem) from which the search's curve stays above
    the other's, within the token range both cover; None when it never does there. Each curve is
    read between its points by linear interpolation in log tokens (point estimates; the CIs are
    in the plot).

    Args:
        search, other: budget curves (increasing tokens).

    Returns:
        The budget, or None.
    """
    search_curve, other_curve = token_curve(search), token_curve(other)
    if not search_curve or not other_curve:
        return None
    low = max(min(search_curve), min(other_curve))
    high = min(max(search_curve), max(other_curve))
    grid = sorted(x for x in {*search_curve, *other_curve} if low <= x <= high)
    if not grid:
        return None

    def read(curve: dict[float, float], x: float) -> float:
        return float(np.interp(math.log(x), [math.log(t) for t in curve], list(curve.values())))

    above = [read(search_curve, x) > read(other_curve, x) for x in grid]
    if not above[-1]:
        return None
    last_below = max((i for i, a in enumerate(above) if not a), default=-1)
    return grid[last_below + 1]


def token_curve(curve: list[BudgetPoint]) -> dict[float, float]:
    """tokens -> accuracy, increasing in tokens; of points with equal tokens (every search
    already over) the last one counts."""
    return dict(sorted({p.tokens: p.accuracy.value for p in curve if p.tokens > 0}.items()))
