"""`marco-eval report`: results/ -> the seed's accuracy tables (and ours), costs, CIs, a plot.

    marco-eval report [RESULTS_DIR] [--out DIR] [--baseline SYSTEM]   tables + plot + README.md
    marco-eval report --compare OLD_DIR NEW_DIR                         what moved, and by how much
    marco-eval report --slim RAW_RUN_DIR DEST_DIR                       a run without dataset text

The file reads top to bottom: load (run.json + lm-eval files + stores) -> validate -> tables
-> render -> write. Every table row names the results files it came from (R1, R2, ... in
the Runs table), and everything is written atomically only after everything was computed.

Statistics (one place, documented in README "Report"):
- accuracy CI: percentile bootstrap over problems, BOOTSTRAP_RESAMPLES resamples, numpy
  default_rng(BOOTSTRAP_SEED) started afresh for every interval (row order changes nothing);
- a row against the baseline, same problems required: delta with a paired-bootstrap CI
  (the per-problem differences resampled), and an exact McNemar test (two-sided binomial
  on the discordant problems).
"""

from __future__ import annotations

import csv
import fnmatch
import functools
import io
import json
import math
import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from marco_eval import jsonl
from marco_eval.answers import answers_match

MGSM_TASKS = {"mgsm_en": "MGSM-En", "mgsm_zh": "MGSM-Zh"}
TRANSLATION_TASKS = {"colloquial_zh_en": "Colloquial zh-en", "wmt22_zh_en": "WMT22 zh-en"}
# metric -> (column, the names a task may report it under: tasks/colloquial_zh_en.yaml says chrf++)
TRANSLATION_METRICS = {"bleu": ("BLEU", ("bleu",)), "chrf++": ("chrF++", ("chrf++", "chrf")),
                       "ter": ("TER", ("ter",)), "comet": ("COMET", ("comet",))}
TEST_AT = (1, 8, 32)
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
CI_LEVEL = 0.95

MANIFEST = "run.json"
STORE = "requests.jsonl"
TOKENS = "tokens.json"
JUDGE_SUMMARY = "*.summary.json"  # `marco-eval judge summarize` writes <sheet>.summary.json
TRAINING_SUMMARY = "training_summary.json"  # `marco-eval train` writes it beside the weights
TABLES_DIR = "report"
PLOT = "accuracy_vs_tokens.png"
# Gitignored scratch under results/: raw lm-eval outputs before slimming, `make eval` output.
DEFAULT_EXCLUDE = ("runs", "make_eval")

MANIFEST_REQUIRED = {"system": str, "model": str, "config": str, "command": str}
MANIFEST_OPTIONAL = {"wall_seconds": (int, float), "notes": str, "store": str}
STORE_FIELDS = {"task": str, "doc_id": int, "candidates": list, "generated_tokens": int,
                "policy_calls": int, "seconds": (int, float)}


class ReportError(ValueError):
    """Bad or mixed-up input; the message is one line naming the file, the problem and the fix."""


# =============================================================================== load

@dataclass
class Manifest:
    path: Path
    system: str
    model: str
    config: str
    command: str
    wall_seconds: float | None = None
    notes: str = ""
    store: str | None = None


@dataclass
class TaskRun:
    """One task of one lm-eval results file, with everything the tables need."""

    system: str
    task: str
    source: str  # "R1", ...: the Runs table row of the results file
    results_file: Path
    manifest: Manifest
    metrics: dict  # lm-eval's results[task]
    n: int
    scores: dict[int, float] = field(default_factory=dict)  # doc_id -> exact_match (MGSM)
    targets: dict[int, str] = field(default_factory=dict)
    doc_hashes: dict[int, str] = field(default_factory=dict)
    samples_file: Path | None = None
    candidates: dict[int, list] | None = None  # doc_id -> answers of every rollout/sample
    tokens_per_problem: float | None = None
    policy_calls_per_problem: float | None = None
    tokens_file: Path | None = None
    seconds_per_problem: float | None = None
    strategy: str | None = None  # marco_eval_config.strategy of the results file: "mcts" or "sampling"
    first_correct: np.ndarray | None = None  # caches: Test@N, the accuracy with its CI
    accuracy_ci: "Accuracy | None" = None

    @property
    def accuracy(self) -> float:
        return float(np.mean([self.scores[d] for d in sorted(self.scores)]))

    def score_vector(self) -> np.ndarray:
        return np.array([self.scores[d] for d in sorted(self.scores)], dtype=float)


@dataclass
class RunFile:
    """A results file and what came with it (the Runs table)."""

    source: str
    path: Path
    manifest: Manifest
    tasks: list[str]
    wall_seconds: float | None
    samples: list[Path]
    tokens_file: Path | None


@dataclass
class JudgeRow:
    system: str
    task: str
    source: str
    path: Path
    n_items: int
    n_ratings: int
    adequacy: tuple[float, float, float] | None  # mean, lo, hi
    fluency: tuple[float, float, float] | None


@dataclass
class TrainingRun:
    """A checkpoint's training_summary.json (copied from the checkpoint into results/)."""
    path: Path
    source: str  # T1, T2, ...
    summary: dict
    command: str  # the summary's own, else a run.json beside it


@dataclass
class Loaded:
    root: Path
    runs: list[RunFile]
    tasks: list[TaskRun]
    judge: list[JudgeRow]
    judge_alpha: list[tuple[str, str, object]]  # (source, name, value)
    skipped_tasks: list[str]
    training: list[TrainingRun] = field(default_factory=list)


def read_json(path: Path, what: str = "JSON"):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: not valid {what} ({e}): regenerate or fix the file") from None


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    return list(jsonl.read_jsonl(path, ReportError, "one JSON object per line: regenerate or fix the line"))


def rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def load_manifest(path: Path) -> Manifest:
    doc = read_json(path, "run.json")
    if not isinstance(doc, dict):
        raise ReportError(f"{path}: must be a JSON object (see README, 'Run manifest')")
    known = {**MANIFEST_REQUIRED, **MANIFEST_OPTIONAL}
    for key in doc:
        if key not in known:
            raise ReportError(f"{path}: unknown key {key!r} (known: {', '.join(known)})")
    for key, kind in known.items():
        if key in MANIFEST_REQUIRED and key not in doc:
            raise ReportError(f"{path}: missing {key!r} (required: {', '.join(MANIFEST_REQUIRED)})")
        if key in doc and (not isinstance(doc[key], kind) or isinstance(doc[key], bool)):
            raise ReportError(f"{path}: {key!r} has the wrong type ({type(doc[key]).__name__})")
        if key in MANIFEST_REQUIRED and not doc[key].strip():
            raise ReportError(f"{path}: {key!r} is empty")
    if doc.get("wall_seconds") is not None and doc["wall_seconds"] < 0:
        raise ReportError(f"{path}: 'wall_seconds' must be >= 0")
    return Manifest(path=path, **doc)


def find_results_files(root: Path, exclude: tuple[str, ...]) -> list[Path]:
    if not root.is_dir():
        raise ReportError(f"{root}: no such results directory")
    return files_outside(root, "results_*.json", exclude)


def files_outside(root: Path, pattern: str, exclude: tuple[str, ...]) -> list[Path]:
    """Files matching pattern anywhere under root, except the excluded paths and what lies inside them."""
    skipped = {(root / e).resolve() for e in exclude if e}
    return [p for p in sorted(root.rglob(pattern))
            if skipped.isdisjoint((resolved := p.resolve(), *resolved.parents))]


def find_manifest(results_file: Path, root: Path) -> Path:
    for folder in results_file.parents:
        if (folder / MANIFEST).is_file():
            return folder / MANIFEST
        if folder.resolve() == root.resolve():
            break
    raise ReportError(f"{results_file}: no {MANIFEST} in its folder or any folder above it up to {root}: "
                      f"write one into the run folder (see README, 'Run manifest')")


def model_args_dict(config: dict) -> dict:
    """lm-eval 0.4.13 stores model_args as a dict; older versions as "k=v,k=v"."""
    args = config.get("model_args") or {}
    if isinstance(args, str):
        args = dict(part.split("=", 1) for part in args.split(",") if "=" in part)
    return args if isinstance(args, dict) else {}


def check_manifest_matches(doc: dict, manifest: Manifest, path: Path) -> None:
    """A run.json copied into the wrong folder is the mix-up this catches."""
    config = doc.get("config") or {}
    args = model_args_dict(config)
    pretrained = args.get("pretrained")
    if pretrained and manifest.model not in (pretrained, Path(str(pretrained)).name):
        raise ReportError(f"{path}: ran pretrained={pretrained} but {manifest.path} says model "
                          f"{manifest.model!r}: set run.json 'model' to the pretrained= value")
    ran_config = config.get("marco_eval_config_file") or doc.get("marco_eval_config_file") or args.get("config")
    if ran_config and Path(str(ran_config)).stem != Path(manifest.config).stem:
        raise ReportError(f"{path}: ran config={ran_config} but {manifest.path} says config "
                          f"{manifest.config!r}: fix run.json or move the run")


def samples_file_for(results_file: Path, task: str) -> Path:
    stamp = results_file.stem[len("results_"):]
    return results_file.with_name(f"samples_{task}_{stamp}.jsonl")


def load_scores(run: TaskRun, metric_key: str, filter_name: str) -> None:
    """Per-problem exact_match of one filter, checked against the aggregate lm-eval wrote."""
    path = samples_file_for(run.results_file, run.task)
    if not path.is_file():
        raise ReportError(f"{run.results_file}: no {path.name} beside it: rerun lm_eval with --log_samples "
                          f"(CIs and paired tests need per-problem scores)")
    run.samples_file = path
    for number, row in read_jsonl(path):
        if row.get("filter", "none") != filter_name:
            continue
        doc_id, score = row.get("doc_id"), row.get("exact_match")
        if not isinstance(doc_id, int) or not isinstance(score, (int, float)) or score not in (0, 1):
            raise ReportError(f"{path}:{number}: needs an integer doc_id and exact_match 0 or 1")
        if doc_id in run.scores:
            raise ReportError(f"{path}:{number}: doc_id {doc_id} appears twice for filter {filter_name}")
        run.scores[doc_id] = float(score)
        run.targets[doc_id] = str(row.get("target", ""))
        if "doc_hash" in row:
            run.doc_hashes[doc_id] = row["doc_hash"]
    if len(run.scores) != run.n:
        raise ReportError(f"{path}: {len(run.scores)} problems with filter {filter_name}, but "
                          f"{run.results_file.name} counts {run.n}: the samples belong to another run")
    if not math.isclose(run.accuracy, run.metrics[metric_key], abs_tol=1e-9):
        raise ReportError(f"{path}: mean exact_match {run.accuracy:.6f} differs from {metric_key} = "
                          f"{run.metrics[metric_key]:.6f} in {run.results_file.name}: the samples belong to another run")


def load_store(path: Path) -> dict[tuple[str, int], dict]:
    """The per-request store: one record per request; identical repeats collapse."""
    records: dict[tuple[str, int], tuple[int, dict]] = {}
    for number, row in read_jsonl(path):
        for key, kind in STORE_FIELDS.items():
            if not isinstance(row.get(key), kind) or isinstance(row.get(key), bool):
                raise ReportError(f"{path}:{number}: field {key!r} missing or not {getattr(kind, '__name__', 'a number')}")
        key = (row["task"], row["doc_id"])
        if key in records and records[key][1] != row:
            raise ReportError(f"{path}:{number}: a second, different record for {key[0]} doc {key[1]} "
                              f"(first at line {records[key][0]}): one run per store file")
        records[key] = (number, row)
    return {key: row for key, (_, row) in records.items()}


def attach_store(run: TaskRun, store: dict[tuple[str, int], dict], path: Path) -> None:
    mine = {doc_id: row for (task, doc_id), row in store.items() if task == run.task}
    if not mine:
        return
    if set(mine) != set(run.scores):
        extra, missing = sorted(set(mine) - set(run.scores)), sorted(set(run.scores) - set(mine))
        raise ReportError(f"{path}: {run.task} records do not match {run.samples_file.name} "
                          f"(missing doc_ids {missing[:5]}, extra {extra[:5]}): the store belongs to another run")
    docs = sorted(mine)
    run.candidates = {d: mine[d]["candidates"] for d in docs}
    run.tokens_per_problem = float(np.mean([mine[d]["generated_tokens"] for d in docs]))
    run.policy_calls_per_problem = float(np.mean([mine[d]["policy_calls"] for d in docs]))
    run.tokens_file = path


def attach_tokens_sidecar(run: TaskRun, path: Path) -> None:
    """tokens.json: {"<task>": {"problems": N, "generated_tokens": TOTAL}, ...}."""
    doc = read_json(path, "tokens.json")
    entry = doc.get(run.task) if isinstance(doc, dict) else None
    if entry is None:
        return
    if not (isinstance(entry, dict) and isinstance(entry.get("problems"), int)
            and isinstance(entry.get("generated_tokens"), (int, float))):
        raise ReportError(f"{path}: {run.task} must be {{\"problems\": N, \"generated_tokens\": TOTAL}}")
    if entry["problems"] != run.n:
        raise ReportError(f"{path}: {run.task} counts {entry['problems']} problems, the results file {run.n}")
    run.tokens_per_problem = entry["generated_tokens"] / entry["problems"]
    run.tokens_file = path


def task_count(doc: dict, task: str, path: Path) -> int:
    n = (doc.get("n-samples") or {}).get(task, {}).get("effective")
    if n is None:
        n = doc["results"][task].get("sample_len")
    if not isinstance(n, int):
        raise ReportError(f"{path}: no problem count for {task} (n-samples.{task}.effective)")
    return n


def wall_seconds(doc: dict, path: Path) -> float | None:
    """lm-eval 0.4.x writes total_evaluation_time_seconds as a string."""
    value = doc.get("total_evaluation_time_seconds")
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        raise ReportError(f"{path}: total_evaluation_time_seconds is {value!r}, not a number") from None


def load_results_file(path: Path, source: str, root: Path, metric_key: str, filter_name: str,
                      skipped: list[str]) -> tuple[RunFile, list[TaskRun]]:
    doc = read_json(path, "lm-eval results JSON")
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), dict):
        raise ReportError(f"{path}: no 'results' object: not an lm-eval results file")
    manifest = load_manifest(find_manifest(path, root))
    check_manifest_matches(doc, manifest, path)
    store_path = manifest.path.parent / (manifest.store or STORE)
    if manifest.store and not store_path.is_file():
        raise ReportError(f"{manifest.path}: store {manifest.store!r} does not exist")
    store = load_store(store_path) if store_path.is_file() else {}
    tokens_path = manifest.path.parent / TOKENS
    config = doc.get("config")
    marco_config = config.get("marco_eval_config") if isinstance(config, dict) else None
    strategy = marco_config.get("strategy") if isinstance(marco_config, dict) else None
    runs = []
    for task in sorted(doc["results"]):
        if task not in MGSM_TASKS and task not in TRANSLATION_TASKS:
            skipped.append(f"{rel(path, root)}: {task}")
            continue
        run = TaskRun(system=manifest.system, task=task, source=source, results_file=path, manifest=manifest,
                      metrics=doc["results"][task], n=task_count(doc, task, path), strategy=strategy)
        if task in MGSM_TASKS:
            if metric_key not in run.metrics:
                have = sorted(k for k in run.metrics if k.startswith("exact_match,"))
                raise ReportError(f"{path}: {task} has no {metric_key!r} (has {have}): pick --filter accordingly")
            load_scores(run, metric_key, filter_name)
            attach_store(run, store, store_path)
            if run.tokens_file is None and tokens_path.is_file():
                attach_tokens_sidecar(run, tokens_path)
        runs.append(run)
    wall = wall_seconds(doc, path)
    problems = sum(task_count(doc, t, path) for t in doc["results"])
    for run in runs:
        run.seconds_per_problem = wall / problems if wall is not None and problems else None
    tokens_file = next((r.tokens_file for r in runs if r.tokens_file), None)
    run_file = RunFile(source=source, path=path, manifest=manifest, tasks=[r.task for r in runs],
                       wall_seconds=wall, samples=[r.samples_file for r in runs if r.samples_file],
                       tokens_file=tokens_file)
    return run_file, runs


TRAINING_REQUIRED = {"base_model": str, "train_rows": int, "steps": int, "losses": list, "data": dict,
                     "config": dict, "train_seconds": (int, float), "wall_seconds": (int, float)}


def load_training_summary(path: Path, source: str, root: Path) -> TrainingRun:
    doc = read_json(path, "training summary")
    for key, kind in TRAINING_REQUIRED.items():
        if not isinstance(doc.get(key), kind):
            raise ReportError(f"{rel(path, root)}: {key!r} is missing or not {getattr(kind, '__name__', 'a number')}: "
                              f"copy the training_summary.json that marco-eval train wrote, unchanged")
    command = doc.get("command")
    beside = path.parent / MANIFEST
    if not command and beside.is_file():
        command = read_json(beside, "run manifest").get("command")
    if not isinstance(command, str) or not command:
        raise ReportError(f"{rel(path, root)}: no command recorded: write {MANIFEST} beside it with "
                          f'{{"command": "marco-eval train ..."}}')
    return TrainingRun(path=path, source=source, summary=doc, command=command)


def load_judge_summary(path: Path, source: str) -> tuple[list[JudgeRow], list[tuple[str, str, object]]]:
    doc = read_json(path, "judge summary")
    if not isinstance(doc, dict) or not isinstance(doc.get("systems"), list):
        raise ReportError(f"{path}: expected {{\"systems\": [...], \"alpha\": {{...}}}} from `marco-eval judge summarize`")
    rows = []
    for i, s in enumerate(doc["systems"]):
        try:
            rows.append(JudgeRow(system=str(s["system"]), task=str(doc.get("task") or ""), source=source, path=path,
                                 n_items=int(s["n_items"]), n_ratings=int(s["n_ratings"]),
                                 adequacy=judged_mean(s, "adequacy"), fluency=judged_mean(s, "fluency")))
        except (KeyError, TypeError, ValueError) as e:
            raise ReportError(f"{path}: systems[{i}] is malformed ({e!r}): rerun `marco-eval judge summarize`") from None
    alpha = doc.get("alpha") or {}
    flat = [(source, name, value) for name, value in flatten(alpha)]
    return rows, flat


def judged_mean(entry: dict, aspect: str) -> tuple[float, float, float] | None:
    """(mean, lo, hi); None when nobody rated that aspect (the summary writes null)."""
    mean, ci = entry[f"{aspect}_mean"], entry.get(f"{aspect}_ci")
    if mean is None:
        return None
    lo, hi = ci if ci else (mean, mean)
    return float(mean), float(lo), float(hi)


def flatten(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for key in sorted(d):
        value = d[key]
        name = f"{prefix}{key}"
        out += flatten(value, name + ".") if isinstance(value, dict) else [(name, value)]
    return out


def load(root: Path, filter_name: str = "flexible-extract", exclude: tuple[str, ...] = DEFAULT_EXCLUDE) -> Loaded:
    """Every run under root, validated; raises ReportError on the first problem found."""
    root = Path(root)
    metric_key = f"exact_match,{filter_name}"
    runs, tasks, skipped = [], [], []
    for i, path in enumerate(find_results_files(root, exclude), 1):
        run_file, task_runs = load_results_file(path, f"R{i}", root, metric_key, filter_name, skipped)
        runs.append(run_file)
        tasks += task_runs
    judge, alpha = [], []
    judge_files = files_outside(root, JUDGE_SUMMARY, exclude)
    for i, path in enumerate(judge_files, 1):
        rows, flat = load_judge_summary(path, f"J{i}")
        judge += rows
        alpha += flat
    training = [load_training_summary(p, f"T{i}", root)
                for i, p in enumerate(files_outside(root, TRAINING_SUMMARY, exclude), 1)]
    loaded = Loaded(root=root, runs=runs, tasks=tasks, judge=judge, judge_alpha=alpha, skipped_tasks=skipped,
                    training=training)
    validate(loaded)
    return loaded


# =============================================================================== validate

def validate(loaded: Loaded) -> None:
    root = loaded.root
    seen: dict[tuple[str, str], TaskRun] = {}
    for run in loaded.tasks:
        key = (run.system, run.task)
        if key in seen:
            raise ReportError(f"two runs claim system {run.system!r} task {run.task}: "
                              f"{rel(seen[key].results_file, root)} and {rel(run.results_file, root)}: "
                              f"remove one or give it another system name in its run.json")
        seen[key] = run
    by_system: dict[str, Manifest] = {}
    for run in loaded.tasks:
        first = by_system.setdefault(run.system, run.manifest)
        if (first.model, first.config) != (run.manifest.model, run.manifest.config):
            raise ReportError(f"system {run.system!r} has model/config {first.model}/{first.config} in "
                              f"{rel(first.path, root)} but {run.manifest.model}/{run.manifest.config} in "
                              f"{rel(run.manifest.path, root)}: one system name per model + config")
    judged: dict[tuple[str, str], JudgeRow] = {}
    for row in loaded.judge:
        key = (row.system, row.task)
        if key in judged:
            raise ReportError(f"system {row.system!r} task {row.task or '?'} is judged twice: "
                              f"{rel(judged[key].path, root)} and {rel(row.path, root)}: keep one summary")
        judged[key] = row


def shared_problems(a: TaskRun, b: TaskRun, root: Path) -> list[int]:
    """The doc_ids both runs scored. A paired comparison is only meaningful on the very same
    problems, so a run on all 250 pairs with one on the first 100 over those 100; runs that
    share none, or disagree on a shared problem's data, are an error."""
    where = f"{a.task}: {a.system!r} ({rel(a.results_file, root)}) and {b.system!r} ({rel(b.results_file, root)})"
    shared = sorted(set(a.scores) & set(b.scores))
    if not shared:
        raise ReportError(f"{where} scored different problems (n={a.n} vs n={b.n}, no doc_id in common): "
                          f"rerun one on the other's problems (same --limit)")
    for d in shared:
        if a.targets[d] != b.targets[d] or a.doc_hashes.get(d, "") != b.doc_hashes.get(d, ""):
            raise ReportError(f"{where} disagree on problem doc_id {d} (target or doc_hash differs): "
                              f"the runs used different data")
    return shared


# =============================================================================== statistics

def bootstrap_means(values: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """Means of `resamples` resamples (with replacement) of values; a fresh fixed-seed rng each call."""
    rng = np.random.default_rng(seed)
    n, chunk, means = len(values), 1000, []
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        means.append(values[idx].mean(axis=1))
    return np.concatenate(means)


def bootstrap_ci(values, level: float = CI_LEVEL, **kwargs) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        raise ReportError("bootstrap of no values")
    means = bootstrap_means(values, **kwargs)
    # inverted_cdf: the classic percentile, an attainable resample mean rather than an interpolation
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2], method="inverted_cdf")
    return float(lo), float(hi)


def mcnemar_exact(system: np.ndarray, baseline: np.ndarray) -> tuple[int, int, float]:
    """Exact McNemar: (system-only wins, baseline-only wins, two-sided p). p = 1 with no discordance."""
    wins = int(np.sum((system == 1) & (baseline == 0)))
    losses = int(np.sum((system == 0) & (baseline == 1)))
    n, k = wins + losses, min(wins, losses)
    if n == 0:
        return wins, losses, 1.0
    tail = Fraction(sum(math.comb(n, i) for i in range(k + 1)), 2 ** n)
    return wins, losses, float(min(Fraction(1), 2 * tail))


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


def run_accuracy(run: TaskRun) -> Accuracy:
    if run.accuracy_ci is None:
        run.accuracy_ci = accuracy_of(run.score_vector())
    return run.accuracy_ci


def paired(run: TaskRun, base: TaskRun, root: Path) -> Paired:
    """run minus base on the problems both scored (see shared_problems)."""
    shared = shared_problems(run, base, root)
    a = np.array([run.scores[d] for d in shared], dtype=float)
    b = np.array([base.scores[d] for d in shared], dtype=float)
    lo, hi = bootstrap_ci(a - b)
    wins, losses, p = mcnemar_exact(a, b)
    return Paired(float(a.mean() - b.mean()), lo, hi, wins, losses, p, len(shared), float(a.mean()))


same_answer = functools.lru_cache(maxsize=None)(answers_match)  # rollouts repeat answers a lot


def first_correct(run: TaskRun) -> np.ndarray:
    """Per problem (doc_id order): the index of the first candidate that matches the target, or inf."""
    if run.first_correct is None:
        run.first_correct = np.array([next((i for i, c in enumerate(run.candidates[d]) if same_answer(c, run.targets[d])),
                                           math.inf) for d in sorted(run.candidates)], dtype=float)
    return run.first_correct


def test_at_n(run: TaskRun, n: int) -> np.ndarray | None:
    """Per problem: 1 when any of the first n candidates matches the target; None when too few."""
    if run.candidates is None or min(len(c) for c in run.candidates.values()) < n:
        return None
    return (first_correct(run) < n).astype(float)


# =============================================================================== tables

@dataclass
class Table:
    name: str  # file stem
    title: str
    note: str
    columns: list[str]
    md_rows: list[list[str]]
    csv_columns: list[str]
    csv_rows: list[list[object]]
    findings: list[str] = field(default_factory=list)  # plain sentences, rendered above the table


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def signed(x: float) -> str:
    return f"{100 * x:+.2f}"


def p_text(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def num(x: float | None, digits: int = 6):
    return "" if x is None else round(float(x), digits)


def acc_md(acc: Accuracy | None) -> str:
    return f"{pct(acc.value)} [{pct(acc.lo)}, {pct(acc.hi)}]" if acc else "—"


def acc_csv(acc: Accuracy | None) -> list:
    return [num(acc.value), num(acc.lo), num(acc.hi)] if acc else ["", "", ""]


def system_order(systems: set[str], baseline: str | None) -> list[str]:
    return sorted(systems, key=lambda s: (s != baseline, s))


def mgsm_runs(loaded: Loaded) -> dict[tuple[str, str], TaskRun]:
    return {(r.system, r.task): r for r in loaded.tasks if r.task in MGSM_TASKS}


def accuracy_table(loaded: Loaded, baseline: str | None) -> Table:
    runs = mgsm_runs(loaded)
    systems = system_order({s for s, _ in runs}, baseline)
    columns, csv_columns = ["System"], ["system"]
    for task, label in MGSM_TASKS.items():
        columns += [f"{label} % [95% CI]"] + ([f"Δ {label} [95% CI]", f"p {label}", f"n paired {label}"]
                                             if baseline else []) + [f"n {label}"]
        csv_columns += [f"{task}_acc", f"{task}_ci_lo", f"{task}_ci_hi"]
        csv_columns += [f"{task}_delta", f"{task}_delta_lo", f"{task}_delta_hi", f"{task}_wins", f"{task}_losses",
                        f"{task}_p_mcnemar", f"{task}_n_paired"] if baseline else []
        csv_columns += [f"{task}_n"]
    columns.append("Sources")
    csv_columns.append("sources")
    md_rows, csv_rows = [], []
    for system in systems:
        md, row, sources = [system], [system], []
        for task in MGSM_TASKS:
            run = runs.get((system, task))
            acc = run_accuracy(run) if run else None
            md.append(acc_md(acc))
            row += acc_csv(acc)
            if baseline:
                base = runs.get((baseline, task))
                pair = paired(run, base, loaded.root) if run and base and system != baseline else None
                md += [f"{signed(pair.delta)} [{signed(pair.lo)}, {signed(pair.hi)}]", p_text(pair.p), str(pair.n)] if pair else [
                    "baseline" if run and system == baseline else "—", "", ""]
                row += ([num(pair.delta), num(pair.lo), num(pair.hi), pair.wins, pair.losses, num(pair.p, 9), pair.n]
                        if pair else [""] * 7)
            md.append(str(run.n) if run else "—")
            row.append(run.n if run else "")
            sources += [run.source] if run and run.source not in sources else []
        md.append(", ".join(sources))
        row.append(" ".join(sources))
        md_rows.append(md)
        csv_rows.append(row)
    note = (f"Accuracy: lm-eval `exact_match` per problem, filter `{{filter}}`; CI: percentile bootstrap over problems. "
            + (f"Δ: row minus baseline `{baseline}` on the problems both scored (n paired: a run on the first 100 "
               f"pairs with a 250-problem baseline on those 100), CI by paired bootstrap; "
               f"p: exact McNemar test (two-sided binomial on the problems exactly one of the two solved)."
               if baseline else "No baseline chosen (`--baseline SYSTEM` adds Δ and paired tests)."))
    return Table("mgsm", "MGSM accuracy (the seed's table)", note, columns, md_rows, csv_columns, csv_rows)


def test_at_table(loaded: Loaded) -> Table:
    runs = mgsm_runs(loaded)
    systems = sorted({s for (s, t), r in runs.items() if r.candidates is not None})
    columns, csv_columns = ["System"], ["system"]
    for task, label in MGSM_TASKS.items():
        columns += [f"{label} candidates"] + [f"{label} Test@{n} %" for n in TEST_AT]
        csv_columns += [f"{task}_candidates_min"]
        csv_columns += [c for n in TEST_AT for c in (f"{task}_test@{n}", f"{task}_test@{n}_lo", f"{task}_test@{n}_hi")]
    columns.append("Sources")
    csv_columns.append("sources")
    md_rows, csv_rows = [], []
    for system in systems:
        md, row, sources = [system], [system], []
        for task in MGSM_TASKS:
            run = runs.get((system, task))
            have = run is not None and run.candidates is not None
            fewest = min(len(c) for c in run.candidates.values()) if have else None
            md.append(str(fewest) if have else "—")
            row.append(fewest if have else "")
            for n in TEST_AT:
                solved = test_at_n(run, n) if have else None
                acc = accuracy_of(solved) if solved is not None else None
                md.append(acc_md(acc))
                row += acc_csv(acc)
            source = f"{run.source} ({rel(run.tokens_file, loaded.root)})" if have else None
            sources += [source] if source and source not in sources else []
        md.append(", ".join(sources))
        row.append(" ".join(sources))
        md_rows.append(md)
        csv_rows.append(row)
    note = ("Test@N: a problem counts as solved when any of the first N candidate answers (every rollout or "
            "sample, in order, from the run's request store) equals the target; shown only where every problem "
            "has at least N candidates. CI: percentile bootstrap over problems.")
    return Table("test_at_n", "Test@N (from the request stores)", note, columns, md_rows, csv_columns, csv_rows)


def cost_rows(loaded: Loaded) -> list[tuple[TaskRun, Accuracy]]:
    runs = mgsm_runs(loaded)
    return [(runs[k], run_accuracy(runs[k])) for k in sorted(runs)]


def cost_table(loaded: Loaded) -> Table:
    columns = ["System", "Task", "n", "Accuracy % [95% CI]", "Tokens / problem", "Policy calls / problem",
               "Seconds / problem", "Accuracy % per 1k tokens", "Sources"]
    csv_columns = ["system", "task", "n", "acc", "ci_lo", "ci_hi", "tokens_per_problem", "policy_calls_per_problem",
                   "seconds_per_problem", "acc_pct_per_1k_tokens", "tokens_file", "sources"]
    md_rows, csv_rows = [], []
    for run, acc in cost_rows(loaded):
        tokens = run.tokens_per_problem
        per_1k = 100 * acc.value / (tokens / 1000) if tokens else None
        tokens_file = rel(run.tokens_file, loaded.root) if run.tokens_file else ""
        md_rows.append([run.system, MGSM_TASKS[run.task], str(run.n), acc_md(acc),
                        f"{tokens:.1f}" if tokens is not None else "—",
                        f"{run.policy_calls_per_problem:.1f}" if run.policy_calls_per_problem is not None else "—",
                        f"{run.seconds_per_problem:.1f}" if run.seconds_per_problem is not None else "—",
                        f"{per_1k:.2f}" if per_1k is not None else "—",
                        run.source + (f" ({tokens_file})" if tokens_file else "")])
        csv_rows.append([run.system, run.task, run.n, *acc_csv(acc), num(tokens),
                         num(run.policy_calls_per_problem), num(run.seconds_per_problem), num(per_1k), tokens_file,
                         run.source])
    note = ("Tokens / problem: mean generated tokens per problem over all rollouts or samples (the request store, "
            "else tokens.json; — when the run has neither). Seconds / problem: lm-eval's "
            "total_evaluation_time_seconds of the results file (model load included) divided by all problems in "
            "that file. Accuracy % per 1k tokens = accuracy % / (tokens per problem / 1000).")
    return Table("cost", "Cost: tokens, time and accuracy per token", note, columns, md_rows, csv_columns, csv_rows)


SIGNIFICANCE = 0.05  # the verdict table's threshold on the exact McNemar p


def verdict_pairs(loaded: Loaded) -> list[tuple[TaskRun, TaskRun]]:
    """(search run, run without search) of the same model and task: every MCTS row against greedy
    CoT and the compute-matched sampling baselines."""
    runs = sorted(mgsm_runs(loaded).values(), key=lambda r: (list(MGSM_TASKS).index(r.task), r.system))
    return [(s, b) for s in runs if s.strategy == "mcts" for b in runs
            if b.strategy == "sampling" and b.task == s.task and b.manifest.model == s.manifest.model]


def verdict_word(pair: Paired) -> str:
    if pair.p < SIGNIFICANCE:
        return "search better" if pair.delta > 0 else "search worse"
    return "no significant difference"


def verdict_table(loaded: Loaded) -> Table:
    columns = ["Task", "Search", "Against", "n paired", "Search %", "Against %", "Δ [95% CI]", "p (McNemar)",
               "Tokens ratio", "Verdict", "Sources"]
    csv_columns = ["task", "search", "against", "n_paired", "search_acc", "against_acc", "delta", "delta_lo",
                   "delta_hi", "wins", "losses", "p_mcnemar", "tokens_ratio", "verdict", "sources"]
    md_rows, csv_rows, findings, verdicts = [], [], [], []
    for s, b in verdict_pairs(loaded):
        pair = paired(s, b, loaded.root)
        search_acc, against_acc = pair.run_value, pair.run_value - pair.delta
        ratio = s.tokens_per_problem / b.tokens_per_problem if s.tokens_per_problem and b.tokens_per_problem else None
        word = verdict_word(pair)
        verdicts.append(word)
        findings.append(f"{MGSM_TASKS[s.task]}, {s.system} against {b.system} on the {pair.n} problems both ran: "
                        f"{pct(search_acc)}% vs {pct(against_acc)}% "
                        f"(Δ {signed(pair.delta)} points, 95% CI [{signed(pair.lo)}, {signed(pair.hi)}], "
                        f"McNemar p = {p_text(pair.p)}): **{word}**"
                        + (f", at {ratio:.2f}× the generated tokens." if ratio is not None else "."))
        md_rows.append([MGSM_TASKS[s.task], s.system, b.system, str(pair.n), pct(search_acc), pct(against_acc),
                        f"{signed(pair.delta)} [{signed(pair.lo)}, {signed(pair.hi)}]",
                        f"{p_text(pair.p)} ({pair.wins} vs {pair.losses})",
                        f"{ratio:.2f}" if ratio is not None else "—", word, f"{s.source}, {b.source}"])
        csv_rows.append([s.task, s.system, b.system, pair.n, num(search_acc), num(against_acc),
                         num(pair.delta), num(pair.lo), num(pair.hi), pair.wins, pair.losses, num(pair.p, 9),
                         num(ratio), word, f"{s.source} {b.source}"])
    if findings:  # the answer in one line first, then each comparison
        counts, n = Counter(verdicts), len(verdicts)
        findings.insert(0, f"In short: of {n} comparisons, the search was better in {counts['search better']}, "
                           f"worse in {counts['search worse']} and not significantly different in "
                           f"{counts['no significant difference']} (each at p < {SIGNIFICANCE}, not corrected "
                           f"for making {n} comparisons).")
    note = ("Every MCTS row (strategy `mcts` in the run's recorded config) against every row of the same model "
            "without search (strategy `sampling`: greedy CoT, self-consistency, best-of-N) on the problems both "
            f"scored, filter `{{filter}}`. Verdict: \"search better\" or \"search worse\" when the exact McNemar "
            f"p < {SIGNIFICANCE}, else \"no significant difference\". Tokens ratio: the search run's generated "
            "tokens per problem over the other's (each over its own problems). (a vs b): problems only the "
            "search solved vs only the other solved.")
    return Table("verdict", "Does the search pay? (MCTS against no search, same model)", note, columns, md_rows,
                 csv_columns, csv_rows, findings)


def metric_value(metrics: dict, metric: str) -> float | None:
    """A translation score under any of its names and any filter ("chrf++,output")."""
    for name in TRANSLATION_METRICS[metric][1]:
        for key in sorted(metrics):
            if key.split(",")[0] == name and isinstance(metrics[key], (int, float)):
                return float(metrics[key])
    return None


def signatures(metrics: dict) -> str:
    """sacrebleu signatures, wherever a task put them: any key mentioning 'signature'."""
    found = [f"{key.split(',')[0]}: {value}" for key, value in sorted(metrics.items())
             if "signature" in key.lower() and "_stderr" not in key and isinstance(value, str)]
    return "; ".join(found)


def translation_table(loaded: Loaded) -> Table:
    runs = sorted((r for r in loaded.tasks if r.task in TRANSLATION_TASKS), key=lambda r: (r.task, r.system))
    columns = ["System", "Task", "n", *(label for label, _ in TRANSLATION_METRICS.values()), "Signatures", "Sources"]
    csv_columns = ["system", "task", "n", *TRANSLATION_METRICS, "signatures", "sources"]
    md_rows, csv_rows = [], []
    for run in runs:
        values = [metric_value(run.metrics, m) for m in TRANSLATION_METRICS]
        sig = signatures(run.metrics)
        md_rows.append([run.system, TRANSLATION_TASKS[run.task], str(run.n),
                        *(f"{v:.2f}" if v is not None else "—" for v in values), sig or "—", run.source])
        csv_rows.append([run.system, run.task, run.n, *(num(v) for v in values), sig, run.source])
    note = ("Automatic metrics as lm-eval reported them (sacrebleu corpus BLEU, chrF++, TER; COMET when the task "
            "computed it); signatures as the task recorded them.")
    return Table("translation", "Translation: automatic metrics", note, columns, md_rows, csv_columns, csv_rows)


def human_table(loaded: Loaded) -> Table:
    columns = ["System", "Task", "Items", "Ratings", "Adequacy [95% CI]", "Fluency [95% CI]", "Sources"]
    csv_columns = ["system", "task", "n_items", "n_ratings", "adequacy", "adequacy_lo", "adequacy_hi", "fluency",
                   "fluency_lo", "fluency_hi", "sources"]

    def shown(m):
        return "{:.2f} [{:.2f}, {:.2f}]".format(*m) if m else "—"

    md_rows, csv_rows = [], []
    for row in sorted(loaded.judge, key=lambda r: (r.task, r.system)):
        md_rows.append([row.system, row.task or "—", str(row.n_items), str(row.n_ratings), shown(row.adequacy),
                        shown(row.fluency), row.source])
        csv_rows.append([row.system, row.task, row.n_items, row.n_ratings, *map(num, row.adequacy or (None,) * 3),
                         *map(num, row.fluency or (None,) * 3), row.source])
    alpha = "; ".join(f"{source} {name} = {value:.3f}" if isinstance(value, float) else f"{source} {name} = {value}"
                      for source, name, value in loaded.judge_alpha)
    note = ("Human adequacy and fluency from `marco-eval judge summarize` (its bootstrap CIs over items)."
            + (f" Krippendorff's alpha: {alpha}." if alpha else ""))
    return Table("human", "Translation: human judgement", note, columns, md_rows, csv_columns, csv_rows)


def training_table(loaded: Loaded) -> Table:
    columns = ["Source", "Checkpoint", "Base model", "Rows kept per source", "Rows", "Steps", "Loss, first → last quarter",
               "Mean loss", "Precision", "Train s", "Command"]
    csv_columns = ["source", "summary_file", "output_dir", "base_model", "rows_per_source", "train_rows", "steps",
                   "epochs", "loss_first_quarter", "loss_last_quarter", "train_loss", "precision", "max_length", "learning_rate",
                   "train_seconds", "wall_seconds", "command"]
    md_rows, csv_rows = [], []
    for t in loaded.training:
        d, c = t.summary, t.summary["config"]
        per_source = ", ".join(f"{label} {n.get('used', n.get('kept'))}" for label, n in d["data"].items())
        losses = [e["loss"] for e in d["losses"] if isinstance(e, dict) and isinstance(e.get("loss"), (int, float))]
        k = math.ceil(len(losses) / 4)  # per-step losses are noisy: compare quarter means
        first, last = (sum(losses[:k]) / k, sum(losses[-k:]) / k) if losses else (None, None)
        shown = f"{first:.3f} → {last:.3f}" if losses else "—"
        mean = d.get("train_loss")
        md_rows.append([t.source, c.get("output_dir", ""), d["base_model"], per_source, str(d["train_rows"]),
                        str(d["steps"]), shown, f"{mean:.3f}" if isinstance(mean, (int, float)) else "—",
                        str(c.get("precision", "")), f"{d['train_seconds']:.0f}", f"`{t.command}`"])
        csv_rows.append([t.source, rel(t.path, loaded.root), c.get("output_dir", ""), d["base_model"], per_source,
                         d["train_rows"], d["steps"], num(d.get("epochs")), num(first), num(last), num(mean),
                         c.get("precision", ""), c.get("max_length", ""), c.get("learning_rate", ""),
                         num(d["train_seconds"], 3), num(d["wall_seconds"], 3), t.command])
    note = ("Checkpoints this project trained (`marco-eval train`), from each `training_summary.json` copied out of "
            "the checkpoint. Losses are the trainer's per-logging-step values (completion tokens only), averaged over "
            "the first and the last quarter of the logged steps (one step's rows alone are noisy); the "
            "checkpoint's evaluations are the rows named after its output folder in the tables above.")
    return Table("training", "Training runs", note, columns, md_rows, csv_columns, csv_rows)


def runs_table(loaded: Loaded) -> Table:
    columns = ["Source", "Results file", "System", "Tasks", "Wall s (lm-eval)", "Per-problem files", "Command"]
    csv_columns = ["source", "results_file", "system", "model", "config", "tasks", "wall_seconds_lm_eval",
                   "wall_seconds_manifest", "samples_files", "tokens_file", "command", "notes"]
    md_rows, csv_rows = [], []
    root = loaded.root
    for run in loaded.runs:
        m = run.manifest
        files = [rel(p, root) for p in run.samples] + ([rel(run.tokens_file, root)] if run.tokens_file else [])
        wall = f"{run.wall_seconds:.0f}" if run.wall_seconds is not None else "—"
        md_rows.append([run.source, rel(run.path, root), m.system, ", ".join(run.tasks), wall,
                        "<br>".join(files) or "—", f"`{m.command}`"])
        csv_rows.append([run.source, rel(run.path, root), m.system, m.model, m.config, " ".join(run.tasks),
                         num(run.wall_seconds, 3), num(m.wall_seconds, 3), " ".join(rel(p, root) for p in run.samples),
                         rel(run.tokens_file, root) if run.tokens_file else "", m.command, m.notes])
    for i, path in enumerate(sorted({r.path for r in loaded.judge}), 1):
        source = next(r.source for r in loaded.judge if r.path == path)
        md_rows.append([source, rel(path, root), "(judge summary)", "", "—", "—", "`marco-eval judge summarize`"])
        csv_rows.append([source, rel(path, root), "", "", "", "", "", "", "", "", "marco-eval judge summarize", ""])
    for t in loaded.training:
        md_rows.append([t.source, rel(t.path, root), f"(training) {t.summary['config'].get('output_dir', '')}", "",
                        f"{t.summary['wall_seconds']:.0f}", "—", f"`{t.command}`"])
        csv_rows.append([t.source, rel(t.path, root), "", t.summary["base_model"], "", "", "",
                         num(t.summary["wall_seconds"], 3), "", "", t.command, ""])
    note = ("Every number above names its source here. Paths are relative to the results folder; commands are "
            "from each run.json.")
    return Table("runs", "Runs (sources)", note, columns, md_rows, csv_columns, csv_rows)


def build_tables(loaded: Loaded, baseline: str | None, filter_name: str) -> list[Table]:
    systems = {r.system for r in loaded.tasks if r.task in MGSM_TASKS}
    if baseline is not None and baseline not in systems:
        raise ReportError(f"--baseline {baseline!r} is not a system with MGSM runs (systems: {', '.join(sorted(systems)) or 'none'})")
    tables = [accuracy_table(loaded, baseline), verdict_table(loaded), test_at_table(loaded), cost_table(loaded),
              translation_table(loaded), human_table(loaded), training_table(loaded), runs_table(loaded)]
    for t in tables:
        t.note = t.note.replace("{filter}", filter_name)
    return tables


# =============================================================================== render

def escape_md(cell: str) -> str:
    return str(cell).replace("|", "\\|").replace("\n", " ")


def render_markdown(table: Table) -> str:
    lines = [f"### {table.title}", "", table.note, ""]
    lines += [f"- {sentence}" for sentence in table.findings] + ([""] if table.findings else [])
    if not table.md_rows:
        return "\n".join(lines + ["(no runs yet)", ""])
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


def render_plot(loaded: Loaded) -> bytes:
    """Accuracy against generated tokens per problem: one panel per MGSM task, one point per
    system, 95% CI bars. Systems without token counts are left out (the cost table says so)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, ScalarFormatter

    points = [(run, acc) for run, acc in cost_rows(loaded) if run.tokens_per_problem]
    color = {system: f"C{i % 10}" for i, system in enumerate(sorted({r.system for r, _ in points}))}
    fig, axes = plt.subplots(1, len(MGSM_TASKS), figsize=(10, 4.5), dpi=100, sharey=True)
    for ax, (task, label) in zip(axes, MGSM_TASKS.items()):
        mine = [(r, a) for r, a in points if r.task == task]
        for r, a in mine:
            ax.errorbar([r.tokens_per_problem], [100 * a.value], fmt="o", color=color[r.system], capsize=3,
                        yerr=[[100 * (a.value - a.lo)], [100 * (a.hi - a.value)]], label=r.system)
        if mine:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(plt.NullFormatter())
            ax.margins(x=0.2)
            ax.legend(loc="lower right", fontsize=7)
        else:
            ax.text(0.5, 0.5, "no runs with token counts", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(label)
        ax.set_xlabel("generated tokens per problem (log scale)")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("accuracy % (95% bootstrap CI)")
    axes[0].set_ylim(-2, 102)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version string: byte-identical reruns
    plt.close(fig)
    return buf.getvalue()


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


def render_readme(tables: list[Table], loaded: Loaded, command: str) -> str:
    by_name = {t.name: t for t in tables}
    skipped = "".join(f"\n- {s}" for s in loaded.skipped_tasks)
    head = f"""# Results

Generated from the runs in the results folder by

    {command}

Do not edit by hand: rerun the command; the same inputs give byte-identical files. Each
table is also in `{TABLES_DIR}/` as Markdown and CSV. A run is a folder with a `run.json`
manifest and lm-eval's output (`--output_path DIR --log_samples`); see the main README,
"Report".

Statistics: 95% CIs are percentile bootstraps over problems ({BOOTSTRAP_RESAMPLES:,} resamples,
numpy `default_rng({BOOTSTRAP_SEED})` for every interval). Paired comparisons use the same
problems only: Δ with a paired-bootstrap CI, p from an exact McNemar test.
"""
    if skipped:
        head += f"\nTasks in these results that the report does not tabulate:{skipped}\n"
    body = [head]
    for name in ("mgsm", "verdict", "test_at_n", "cost"):
        body.append(render_markdown(by_name[name]))
    body.append(f"![accuracy against generated tokens per problem]({TABLES_DIR}/{PLOT})\n")
    for name in ("translation", "human", "training", "runs"):
        body.append(render_markdown(by_name[name]))
    return "\n".join(body)


# =============================================================================== write

def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these are ordinary shared files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    files[out_dir / TABLES_DIR / PLOT] = render_plot(loaded)
    command = command_line(results_dir, baseline, filter_name, tuple(exclude))
    files[out_dir / "README.md"] = render_readme(tables, loaded, command).encode()
    for path, data in files.items():
        write_atomic(path, data)
    return list(files)


# =============================================================================== compare

def compare(old_dir: Path, new_dir: Path, filter_name: str = "flexible-extract",
            exclude: tuple[str, ...] = DEFAULT_EXCLUDE) -> tuple[str, int]:
    """Markdown of every system/task in either folder: accuracy old -> new, Δ, and whether the new
    accuracy lies outside the old run's 95% CI (and, on the same problems, McNemar's p).
    Returns (text, number of rows that moved outside the CI or appeared/disappeared)."""
    old, new = load(Path(old_dir), filter_name, exclude), load(Path(new_dir), filter_name, exclude)
    old_runs, new_runs = mgsm_runs(old), mgsm_runs(new)
    lines = ["| System | Task | Old % [95% CI] | New % | Δ | Outside old CI | McNemar p | Old source | New source |",
             "|---|---|---|---|---|---|---|---|---|"]
    moved = 0
    for key in sorted(set(old_runs) | set(new_runs)):
        a, b = old_runs.get(key), new_runs.get(key)
        if a is None or b is None:
            moved += 1
            status = "new" if a is None else "removed"
            src = rel((b or a).results_file, (new if a is None else old).root)
            lines.append(f"| {key[0]} | {MGSM_TASKS[key[1]]} | {status} | | | | | "
                         f"{'' if a is None else src} | {src if a is None else ''} |")
            continue
        acc_old, acc_new = run_accuracy(a), b.accuracy
        outside = not (acc_old.lo <= acc_new <= acc_old.hi)
        moved += outside
        same = set(a.scores) == set(b.scores) and all(a.targets[d] == b.targets[d] for d in a.scores)
        p = p_text(mcnemar_exact(b.score_vector(), a.score_vector())[2]) if same else "different problems"
        lines.append(f"| {key[0]} | {MGSM_TASKS[key[1]]} | {acc_md(acc_old)} | "
                     f"{pct(acc_new)} | {signed(acc_new - acc_old.value)} | {'yes' if outside else 'no'} | {p} | "
                     f"{rel(a.results_file, old.root)} | {rel(b.results_file, new.root)} |")
    lines += translation_compare(old, new)
    summary = f"{moved} of {len(set(old_runs) | set(new_runs))} MGSM system/task rows moved outside the old 95% CI or (dis)appeared."
    return "\n".join(lines + ["", summary, ""]), moved


def translation_compare(old: Loaded, new: Loaded) -> list[str]:
    def index(loaded):
        return {(r.system, r.task): r for r in loaded.tasks if r.task in TRANSLATION_TASKS}

    old_runs, new_runs = index(old), index(new)
    keys = sorted(set(old_runs) & set(new_runs))
    if not keys:
        return []
    lines = ["", "| System | Task | Metric | Old | New | Δ |", "|---|---|---|---|---|---|"]
    for key in keys:
        for metric, (label, _) in TRANSLATION_METRICS.items():
            a, b = metric_value(old_runs[key].metrics, metric), metric_value(new_runs[key].metrics, metric)
            if a is not None and b is not None:
                lines.append(f"| {key[0]} | {TRANSLATION_TASKS[key[1]]} | {label} | {a:.2f} | {b:.2f} | {b - a:+.2f} |")
    return lines


# =============================================================================== slim

# `resps` and the store's `text` go too: a model's reasoning often restates the problem
# word for word, and the dataset must not be committed. `filtered_resps` (the extracted
# answer or translation) is what the tables use and stays.
# With keep_text (a task whose data this project wrote, such as colloquial_zh_en) only the
# prompt goes: `doc` is what `marco-eval judge export` reads the source and reference from.
SAMPLE_FIELDS_DROPPED = ("doc", "arguments", "resps")
STORE_FIELDS_DROPPED = ("text",)
SAMPLE_FIELDS_DROPPED_KEEP_TEXT = ("arguments",)


def slim_run(raw_dir: Path, dest_dir: Path, keep_text: bool = False) -> list[Path]:
    """Copy a run for committing: run.json, results JSONs, tokens.json, the request store
    without completion texts, and samples without the dataset text (`doc`, `arguments`: the
    question and the prompt) or the raw completions (`resps`). keep_text keeps all but the
    prompt (`arguments`, the doc rendered by the task): for data that may be committed."""
    raw_dir, dest_dir = Path(raw_dir), Path(dest_dir)
    sample_dropped = SAMPLE_FIELDS_DROPPED_KEEP_TEXT if keep_text else SAMPLE_FIELDS_DROPPED
    store_dropped = () if keep_text else STORE_FIELDS_DROPPED
    manifest = load_manifest(raw_dir / MANIFEST) if (raw_dir / MANIFEST).is_file() else None
    if manifest is None:
        raise ReportError(f"{raw_dir}: no {MANIFEST}: write the manifest before slimming (see README, 'Run manifest')")
    written = []
    for path in sorted(raw_dir.rglob("*")):
        if not path.is_file():
            continue
        name, target = path.name, dest_dir / path.relative_to(raw_dir)
        if name.startswith("samples_") and name.endswith(".jsonl"):
            rows = [{k: v for k, v in row.items() if k not in sample_dropped} for _, row in read_jsonl(path)]
            write_atomic(target, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())
        elif name == (manifest.store or STORE):
            rows = [{k: v for k, v in row.items() if k not in store_dropped} for _, row in read_jsonl(path)]
            write_atomic(target, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())
        elif (name.startswith("results_") and name.endswith(".json")) or name in (
                MANIFEST, TOKENS, manifest.store or STORE) or fnmatch.fnmatch(name, JUDGE_SUMMARY):
            write_atomic(target, path.read_bytes())
        else:
            continue
        written.append(target)
    return written
