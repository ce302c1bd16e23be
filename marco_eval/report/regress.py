"""`marco-eval regress BASELINE CANDIDATE`: is a new checkpoint worse than the old one?

Two lm-eval runs (run folders or results files) of two models under the same settings are
checked to be comparable (the same tasks; the same marco_eval_config but for the keys
that name the model, the hardware or where outputs go), paired on the problems (MGSM) or
sentences (translation) both scored, and tested per task and metric, one-sided:

- MGSM accuracy: exact McNemar, one-sided: of the discordant problems, P(X <= the
  candidate's wins), X ~ Binomial(wins + losses, 1/2) (statistics.mcnemar_worse);
- translation BLEU and chrF++: the paired bootstrap over sentences (sacrebleu's paired_bs
  resampling, TRANSLATION_RESAMPLES, seeded), its one-sided shifted test;
- with a margin M (points) the test is of H0 "Δ >= -M" instead, for accuracy too: the
  shifted paired bootstrap (statistics.shifted_bootstrap_p).

Holm's adjustment runs over every row (task x metric); a row whose adjusted p is under
alpha is "worse", and any worse row makes the exit status 1 (the CLI: 0 none, 2 bad input).
Δ's 95% CI is the paired percentile bootstrap (statistics.paired for accuracy).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from marco_eval import settings
from marco_eval.errors import ReportError
from marco_eval.report.load import load, load_results_file, load_translations
from marco_eval.report.reading import rel
from marco_eval.report.schema import DEFAULT_EXCLUDE, MGSM_TASKS, TRANSLATION_TASKS, TaskRun
from marco_eval.report.statistics import (
    bootstrap_means, holm, mcnemar_worse, paired, paired_corpus_bootstrap, percentile_interval, shared_problems,
    shifted_bootstrap_p)
from marco_eval.report.tables import p_text

# marco_eval_config keys that are not search settings: which model (the thing compared),
# which hardware or engine and how it batches, and where outputs go.
NOT_SETTINGS = ("pretrained", "revision", "dtype", "device", "trust_remote_code", "backend", "max_batch",
                "kv_reuse", "kv_cache_mb", "tree_batch", "tensor_parallel_size", "data_parallel_size",
                "gpu_memory_utilization", "max_model_len", "vllm_args", *settings.OUTPUT_ONLY)
TRANSLATION_METRICS = {"bleu": "BLEU", "chrf++": "chrF++"}
TRANSLATION_RESAMPLES = 1000  # sacrebleu's paired_bs default
DEFAULT_ALPHA = 0.05


@dataclass
class Row:
    """One test: a task's accuracy (MGSM), or its BLEU or chrF++ (translation), in points."""

    task: str
    metric: str
    n: int  # problems or sentences both runs scored
    baseline: float
    candidate: float
    delta: float  # candidate - baseline
    lo: float  # Δ's 95% paired-bootstrap CI
    hi: float
    p: float  # one-sided p of the row's test (see the module's docstring)
    test: str
    wins: int | None = None  # MGSM: problems only the candidate solved, and only the baseline
    losses: int | None = None
    mcnemar_p: float | None = None  # MGSM: one-sided exact McNemar, whatever the margin
    p_holm: float = 1.0
    worse: bool = False


@dataclass
class Regression:
    baseline: str  # system names
    candidate: str
    baseline_files: list[str]
    candidate_files: list[str]
    alpha: float
    margin: float
    pairing: list[str]  # per task: how many problems both scored, of how many each
    rows: list[Row] = field(default_factory=list)

    @property
    def worse(self) -> list[Row]:
        return [r for r in self.rows if r.worse]

    @property
    def exit_status(self) -> int:
        return 1 if self.worse else 0

    def as_json(self) -> dict:
        return {**asdict(self), "worse_tasks": sorted({r.task for r in self.worse}), "exit_status": self.exit_status}


def load_side(path: Path, label: str, filter_name: str, exclude: tuple[str, ...]) -> list[TaskRun]:
    """The task runs of one side: a run folder (every results file under it) or one results
    file; one system, MGSM or translation tasks."""
    path = Path(path)
    if path.is_file():  # lm-eval's layout: RUN/<model>/results_*.json, run.json and the store in RUN
        tasks = load_results_file(path, "R1", path.parent.parent, f"exact_match,{filter_name}", filter_name, [])[1]
    elif path.is_dir():
        tasks = load(path, filter_name, exclude).tasks
    else:
        raise ReportError(f"{label} {path}: no such run folder or results file")
    systems = sorted({t.system for t in tasks})
    if not tasks:
        raise ReportError(f"{label} {path}: no MGSM or translation task in it")
    if len(systems) > 1:
        named = "; ".join(systems[:3]) + ("; ..." if len(systems) > 3 else "")
        raise ReportError(f"{label} {path} holds {len(systems)} systems ({named}): "
                          f"point at one run's folder or results file")
    return tasks


def search_settings(run: TaskRun) -> dict | None:
    """The run's marco_eval_config without NOT_SETTINGS; a key a run's version did not record
    yet counts as its default (None when the run is not a marco_mcts one)."""
    if run.settings is None:
        return None
    values = {**settings.as_dict(settings.SearchConfig(), settings.ModelOptions()), **run.settings}
    return {k: v for k, v in values.items() if k not in NOT_SETTINGS}


def shown(value) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def check_comparable(base: dict[str, TaskRun], cand: dict[str, TaskRun]) -> None:
    """The same tasks, and per task the same search settings: a one-line error naming the first difference."""
    if set(base) != set(cand):
        raise ReportError(f"tasks differ: baseline ran {', '.join(sorted(base))}, candidate ran "
                          f"{', '.join(sorted(cand))}: run the candidate with the baseline's --tasks")
    for task in sorted(base):
        a, b = search_settings(base[task]), search_settings(cand[task])
        if (a is None) != (b is None):
            which = "baseline" if a is None else "candidate"
            raise ReportError(f"search settings differ: the {which}'s {task} is not a marco_mcts run "
                              f"(no marco_eval_config in its results file); compare runs of the same config")
        for key in {**(a or {}), **(b or {})}:
            if a.get(key) != b.get(key):
                raise ReportError(f"search settings differ: {key}={shown(a.get(key))} (baseline) vs "
                                  f"{shown(b.get(key))} (candidate) in {task}; compare runs of the same config")


def accuracy_rows(base: TaskRun, cand: TaskRun, root: Path, margin: float) -> list[Row]:
    both = paired(cand, base, root)
    mcnemar = mcnemar_worse(both.wins, both.losses)
    if margin:
        shared = shared_problems(cand, base, root)
        diffs = np.array([cand.scores[d] - base.scores[d] for d in shared])
        p, test = shifted_bootstrap_p(bootstrap_means(diffs), both.delta, margin / 100), "paired bootstrap, shifted"
    else:
        p, test = mcnemar, "exact McNemar"
    return [Row(task=cand.task, metric="accuracy", n=both.n, baseline=100 * (both.run_value - both.delta),
                candidate=100 * both.run_value, delta=100 * both.delta, lo=100 * both.lo, hi=100 * both.hi, p=p,
                test=test, wins=both.wins, losses=both.losses, mcnemar_p=mcnemar)]


def translation_rows(base: TaskRun, cand: TaskRun, root: Path, margin: float) -> list[Row]:
    base_items, cand_items = load_translations(base), load_translations(cand)
    shared = shared_problems(cand, base, root)
    references = [base_items[d][0] for d in shared]
    rows = []
    for metric in TRANSLATION_METRICS:
        cand_score, base_score, deltas = paired_corpus_bootstrap(
            metric, references, [cand_items[d][1] for d in shared], [base_items[d][1] for d in shared],
            TRANSLATION_RESAMPLES)
        delta = cand_score - base_score
        lo, hi = percentile_interval(deltas)
        rows.append(Row(task=cand.task, metric=metric, n=len(shared), baseline=base_score, candidate=cand_score,
                        delta=delta, lo=lo, hi=hi, p=shifted_bootstrap_p(deltas, delta, margin),
                        test="paired bootstrap, shifted"))
    return rows


def regress(baseline: Path, candidate: Path, alpha: float = DEFAULT_ALPHA, margin: float = 0.0,
            filter_name: str = "flexible-extract", exclude: tuple[str, ...] = DEFAULT_EXCLUDE) -> Regression:
    """Is the candidate run worse than the baseline run on any task? (See the module's docstring.)

    Args:
        baseline, candidate: a run folder or an lm-eval results file each.
        alpha: the family-wise error rate (Holm over every row).
        margin: in points (accuracy or BLEU/chrF++): "worse" means worse by more than this.
        filter_name, exclude: as for `marco-eval report`.

    Returns:
        The rows and their verdicts; ReportError (one line) for runs that cannot be compared.
    """
    if not 0 < alpha < 1 or margin < 0:
        raise ReportError(f"--alpha must lie in (0, 1) and --margin be >= 0 (got {alpha}, {margin})")
    base = {r.task: r for r in load_side(baseline, "baseline", filter_name, exclude)}
    cand = {r.task: r for r in load_side(candidate, "candidate", filter_name, exclude)}
    check_comparable(base, cand)
    root = Path.cwd()
    result = Regression(baseline=next(iter(base.values())).system, candidate=next(iter(cand.values())).system,
                        baseline_files=sorted({rel(r.results_file, root) for r in base.values()}),
                        candidate_files=sorted({rel(r.results_file, root) for r in cand.values()}),
                        alpha=alpha, margin=margin, pairing=[])
    for task in sorted(base, key=lambda t: (t not in MGSM_TASKS, t)):
        a, b = base[task], cand[task]
        rows = (accuracy_rows if task in MGSM_TASKS else translation_rows)(a, b, root, margin)
        result.rows += rows
        result.pairing.append(f"{task_label(task)}: paired on the {rows[0].n} {'problems' if task in MGSM_TASKS else 'sentences'} "
                              f"both scored (baseline {a.n}, candidate {b.n})")
    for row, p in zip(result.rows, holm([r.p for r in result.rows])):
        row.p_holm, row.worse = p, p < alpha
    return result


def plural(count: float, word: str) -> str:
    return f"{count:g} {word}{'' if count == 1 else 's'}"


def task_label(task: str) -> str:
    return {**MGSM_TASKS, **TRANSLATION_TASKS}[task]


def render(result: Regression) -> str:
    """The markdown the command prints: what was compared, the table, the verdict."""
    margin = f" by more than {plural(result.margin, 'point')}" if result.margin else ""
    lines = [f"Baseline:  {result.baseline} ({', '.join(result.baseline_files)})",
             f"Candidate: {result.candidate} ({', '.join(result.candidate_files)})",
             "Same tasks and search settings (model, hardware and output keys aside).", *result.pairing, "",
             "| Task | Metric | n | Baseline | Candidate | Δ [95% CI] | Cand./base wins | McNemar p | Test p | Holm p | Verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result.rows:
        wins = "—" if r.wins is None else f"{r.wins}/{r.losses}"
        mcnemar = "—" if r.mcnemar_p is None else p_text(r.mcnemar_p)
        verdict = f"worse{margin}" if r.worse else "not significantly worse"
        lines.append(f"| {task_label(r.task)} | {TRANSLATION_METRICS.get(r.metric, r.metric)} | {r.n} | "
                     f"{r.baseline:.2f} | {r.candidate:.2f} | {r.delta:+.2f} [{r.lo:+.2f}, {r.hi:+.2f}] | {wins} | "
                     f"{mcnemar} | {p_text(r.p)} | {p_text(r.p_holm)} | {verdict} |")
    tests = sorted({r.test for r in result.rows})
    worse = sorted({task_label(r.task) for r in result.worse})
    lines += ["", f"One-sided tests of H0 \"the candidate is not worse{margin}\" ({'; '.join(tests)}), "
                  f"Holm over {plural(len(result.rows), 'row')}, alpha {result.alpha:g}. McNemar p: one-sided exact "
                  f"binomial on the discordant problems.",
              f"Verdict: worse on {', '.join(worse)} (exit 1)." if worse else "Verdict: no task is significantly worse (exit 0).",
              ""]
    return "\n".join(lines)
