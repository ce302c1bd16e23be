"""The report's statistics, in one place (documented in README "Report"):

- accuracy CI: percentile bootstrap over problems, BOOTSTRAP_RESAMPLES resamples, numpy
  default_rng(BOOTSTRAP_SEED) started afresh for every interval (row order changes nothing);
- a row against the baseline, same problems required: delta with a paired-bootstrap CI
  (the per-problem differences resampled), and an exact McNemar test (two-sided binomial
  on the discordant problems);
- `marco-eval regress`: the one-sided exact McNemar test (is the candidate worse?), the
  shifted paired-bootstrap test of "worse by more than a margin", and the paired bootstrap
  of a corpus metric (BLEU, chrF++) over sentences, as sacrebleu's paired_bs resamples;
- Test@N from the candidates in the request stores.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from marco_eval import translation
from marco_eval.answers import answers_match
from marco_eval.errors import ReportError
from marco_eval.report.memo import once_per_run
from marco_eval.report.reading import rel
from marco_eval.report.schema import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, CI_LEVEL, TaskRun


def shared_problems(a: TaskRun, b: TaskRun, root: Path) -> list[int]:
    """The doc_ids both runs scored. A paired comparison is only meaningful on the very same
    problems, so a run on all 250 pairs with one on the first 100 over those 100; runs that
    share none, or disagree on a shared problem's data, are an error."""
    where = f"{a.task}: {a.system!r} ({rel(a.results_file, root)}) and {b.system!r} ({rel(b.results_file, root)})"
    shared = sorted(set(a.targets) & set(b.targets))  # every scored problem has a target
    if not shared:
        raise ReportError(f"{where} scored different problems (n={a.n} vs n={b.n}, no doc_id in common): "
                          f"rerun one on the other's problems (same --limit)")
    for d in shared:
        if a.targets[d] != b.targets[d] or a.doc_hashes.get(d, "") != b.doc_hashes.get(d, ""):
            raise ReportError(f"{where} disagree on problem doc_id {d} (target or doc_hash differs): "
                              f"the runs used different data")
    return shared


def resample_indices(n: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED):
    """Chunks of bootstrap resamples of n items, as index arrays (chunk x n); a fresh rng with
    the fixed seed each call, so every interval is reproducible whatever was computed before."""
    rng = np.random.default_rng(seed)
    chunk = 1000
    for start in range(0, resamples, chunk):
        yield rng.integers(0, n, size=(min(chunk, resamples - start), n))


def bootstrap_means(values: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """Means of `resamples` resamples (with replacement) of values; a fresh fixed-seed rng each call."""
    return np.concatenate([values[idx].mean(axis=1) for idx in resample_indices(len(values), resamples, seed)])


def percentile_interval(estimates: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float]:
    """The percentile interval of bootstrap estimates."""
    # inverted_cdf: the classic percentile, an attainable resample estimate rather than an interpolation
    lo, hi = np.quantile(estimates, [(1 - level) / 2, 1 - (1 - level) / 2], method="inverted_cdf")
    return float(lo), float(hi)


def bootstrap_ci(values, level: float = CI_LEVEL, **kwargs) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        raise ReportError("bootstrap of no values")
    return percentile_interval(bootstrap_means(values, **kwargs), level)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment for a family of tests: the i-th smallest p times (m - i + 1),
    kept non-decreasing and capped at 1; returned in the input order. Rejecting where the
    adjusted p < alpha controls the chance of any false "significant" at alpha.

    Args:
        p_values: the uncorrected p of every test in the family.

    Returns:
        The adjusted p values, same order.
    """
    m = len(p_values)
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def binomial_half_tail(k: int, n: int) -> Fraction:
    """P(X <= k) for X ~ Binomial(n, 1/2), exactly (1 when n = 0)."""
    return Fraction(sum(math.comb(n, i) for i in range(k + 1)), 2 ** n)


def mcnemar_exact(system: np.ndarray, baseline: np.ndarray) -> tuple[int, int, float]:
    """Exact McNemar: (system-only wins, baseline-only wins, two-sided p). p = 1 with no discordance."""
    wins = int(np.sum((system == 1) & (baseline == 0)))
    losses = int(np.sum((system == 0) & (baseline == 1)))
    if wins + losses == 0:
        return wins, losses, 1.0
    return wins, losses, float(min(Fraction(1), 2 * binomial_half_tail(min(wins, losses), wins + losses)))


def mcnemar_worse(wins: int, losses: int) -> float:
    """One-sided exact McNemar p of "the system is worse than the baseline": of the wins +
    losses discordant problems, as few as `wins` going the system's way when each goes
    either way with probability 1/2, P(X <= wins), X ~ Binomial(wins + losses, 1/2)."""
    return float(binomial_half_tail(wins, wins + losses))


def shifted_bootstrap_p(estimates: np.ndarray, observed: float, margin: float = 0.0) -> float:
    """One-sided p of H0 "delta >= -margin" (the system is not worse by more than the margin)
    from bootstrap estimates of delta: the estimates centred on zero and shifted to -margin
    are the null distribution, and p is the share of it at or below the observed delta, with
    the +1 of sacrebleu's paired_bs (which does the same two-sided, around 0)."""
    null = estimates - estimates.mean() - margin
    return float((np.sum(null <= observed) + 1) / (len(estimates) + 1))


def paired_corpus_bootstrap(metric: str, references: list, system: list[str], baseline: list[str],
                            resamples: int, seed: int = BOOTSTRAP_SEED) -> tuple[float, float, np.ndarray]:
    """A corpus metric (translation.METRICS: bleu, chrf++) of two systems on the same sentences,
    and bootstrap estimates of their difference, the way sacrebleu's paired_bs resamples: the
    same sentences drawn with replacement for both systems, each corpus score recomputed from
    the drawn sentences' summed sufficient statistics (corpus BLEU is not a mean of sentence
    scores).

    Args:
        metric: the metric's name.
        references: per sentence, its references.
        system, baseline: per sentence, each system's hypothesis.
        resamples: how many bootstrap resamples; seed: numpy default_rng's.

    Returns:
        (system's corpus score, baseline's, system minus baseline per resample).
    """
    scorer = translation.make_metric(metric)
    streams = translation.reference_streams(references)
    stats = [np.asarray(scorer._extract_corpus_statistics(hyps, streams), dtype=float) for hyps in (system, baseline)]
    score = [scorer._compute_score_from_stats(s.sum(0)).score for s in stats]
    deltas = [scorer._compute_score_from_stats(sys_row).score - scorer._compute_score_from_stats(base_row).score
              for idx in resample_indices(len(system), resamples, seed)
              for sys_row, base_row in zip(stats[0][idx].sum(1), stats[1][idx].sum(1))]
    return float(score[0]), float(score[1]), np.array(deltas)


@dataclass
class Accuracy:
    value: float
    lo: float
    hi: float
    n: int


@dataclass
class Paired:
    delta: float
    lo: float
    hi: float
    wins: int
    losses: int
    p: float
    n: int  # problems both runs scored
    run_value: float  # the run's accuracy on those problems (the base's: run_value - delta)


def accuracy_of(values: np.ndarray) -> Accuracy:
    lo, hi = bootstrap_ci(values)
    return Accuracy(float(values.mean()), lo, hi, len(values))


@once_per_run
def run_accuracy(run: TaskRun) -> Accuracy:
    return accuracy_of(run.score_vector())


def paired(run: TaskRun, base: TaskRun, root: Path) -> Paired:
    """run minus base on the problems both scored (see shared_problems)."""
    shared = shared_problems(run, base, root)
    a = np.array([run.scores[d] for d in shared], dtype=float)
    b = np.array([base.scores[d] for d in shared], dtype=float)
    lo, hi = bootstrap_ci(a - b)
    wins, losses, p = mcnemar_exact(a, b)
    return Paired(float(a.mean() - b.mean()), lo, hi, wins, losses, p, len(shared), float(a.mean()))


same_answer = functools.lru_cache(maxsize=None)(answers_match)  # rollouts repeat answers a lot


@once_per_run
def first_correct(run: TaskRun) -> np.ndarray:
    """Per problem (doc_id order): the index of the first candidate that matches the target, or inf."""
    return np.array([next((i for i, c in enumerate(run.candidates[d]) if same_answer(c, run.targets[d])),
                          math.inf) for d in sorted(run.candidates)], dtype=float)


def test_at_n(run: TaskRun, n: int) -> np.ndarray | None:
    """Per problem: 1 when any of its first n candidates matches the target; a problem with
    fewer than n counts all it has. None when no problem has n candidates (nothing new to say)."""
    if run.candidates is None or max(len(c) for c in run.candidates.values()) < n:
        return None
    return (first_correct(run) < n).astype(float)

