"""What the report reads and builds on: task names, file names, statistics settings, and
the records the loaders fill (a manifest, a results file, one task of it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from marco_eval.search.mcts import RolloutSummary, TracePoint

MGSM_TASKS = {"mgsm_en": "MGSM-En", "mgsm_zh": "MGSM-Zh"}
TRANSLATION_TASKS = {"colloquial_zh_en": "Colloquial zh-en", "wmt22_zh_en": "WMT22 zh-en"}
# metric -> (column, the names a task may report it under: tasks/colloquial_zh_en.yaml says chrf++)
TRANSLATION_METRICS = {"bleu": ("BLEU", ("bleu",)), "chrf++": ("chrF++", ("chrf++", "chrf")),
                       "ter": ("TER", ("ter",)), "comet": ("COMET", ("comet",))}
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
# Per-rollout data and the anytime trace: optional, stores written before them lack both.
ROLLOUT_FIELDS = {"answer": (str, type(None)), "reward": (int, float), "tokens": int, "finish": str}
TRACE_FIELDS = {"answer": (str, type(None)), "tokens": int}


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
    derived: bool = False  # no run.json: made from the results file (manifest.derive_manifest)
    folder: Path | None = None  # the run folder: where the store and tokens.json are; run.json's own folder

    def __post_init__(self):
        if self.folder is None:
            self.folder = self.path.parent


@dataclass(eq=False)  # a run is itself, not its values: statistics are kept per run (memo.py)
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
    final_rule: str | None = None  # marco_eval_config.final_answer: max_value, most_visited, vote, best_reward
    settings: dict | None = None  # the results file's marco_eval_config (None: not a marco_mcts run)
    translations: dict[int, tuple[tuple[str, ...], str]] | None = None  # doc_id -> (references, hypothesis)
    store_records: int = 0  # this task's records in the request store
    answers: dict[int, str | None] | None = None  # doc_id -> the store record's answer (the configured pick)
    rollouts: dict[int, list[RolloutSummary]] | None = None  # doc_id -> every rollout; None unless every record has them
    traces: dict[int, list[TracePoint]] | None = None  # doc_id -> the anytime trace; None unless every record has one

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
