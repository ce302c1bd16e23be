"""Loading a results folder: every lm-eval results file with its run.json manifest, per-problem
scores from the samples files, the request store (or tokens.json), then the cross-run checks.
Judge and training summaries are read by summaries.py."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from marco_eval import translation
from marco_eval.errors import ReportError
from marco_eval.report.manifest import manifest_for
from marco_eval.report.reading import read_json, read_jsonl, rel
from marco_eval.report.rollouts import attach_search_data, check_search_fields
from marco_eval.report.schema import (
    DEFAULT_EXCLUDE, JUDGE_SUMMARY, MGSM_TASKS, STORE, STORE_FIELDS, TOKENS, TRAINING_SUMMARY, TRANSLATION_TASKS,
    JudgeRow, Loaded, Manifest, RunFile, TaskRun)
from marco_eval.report.summaries import load_judge_summary, load_training_summary
from marco_eval.search.final_answer import WALKS_THE_TREE


def find_results_files(root: Path, exclude: tuple[str, ...]) -> list[Path]:
    """Every lm-eval results file under root outside the excluded folders; none is an error
    (a report of empty tables would look like a result)."""
    if not root.is_dir():
        raise ReportError(f"{root}: no such results directory")
    found = files_outside(root, "results_*.json", exclude)
    if not found:
        skipped = [e for e in exclude if e and (root / e).is_dir()]
        outside = f" outside {', '.join(f'{e}/' for e in skipped)} (skipped; --exclude changes that)" if skipped else ""
        raise ReportError(f"{root}: no runs: no lm-eval results file (results_*.json) under it{outside}; "
                          f"point the report at a folder holding runs written by lm_eval --output_path DIR --log_samples")
    return found


def files_outside(root: Path, pattern: str, exclude: tuple[str, ...]) -> list[Path]:
    """Files matching pattern anywhere under root, except the excluded paths and what lies inside them."""
    skipped = {(root / e).resolve() for e in exclude if e}
    return [p for p in sorted(root.rglob(pattern))
            if skipped.isdisjoint((resolved := p.resolve(), *resolved.parents))]


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


def load_translations(run: TaskRun) -> dict[int, tuple[tuple[str, ...], str]]:
    """Per sentence of a translation task (doc_id -> (references, hypothesis)), from its samples
    file: the references are the doc's (a raw run's samples keep it), else the target (the
    first reference). The corpus BLEU they give must be the results file's, so a slimmed
    multi-reference run (only the first reference left) or another run's samples is an error.
    Read on demand (`marco-eval regress`); kept on the run with targets and doc_hashes."""
    if run.translations is not None:
        return run.translations
    path = samples_file_for(run.results_file, run.task)
    if not path.is_file():
        raise ReportError(f"{run.results_file}: no {path.name} beside it: rerun lm_eval with --log_samples "
                          f"(paired tests need the per-sentence translations)")
    filters = sorted(key.split(",", 1)[1] for key in run.metrics if key.startswith("bleu,") and "," in key)
    if len(filters) != 1 or not isinstance(run.metrics[f"bleu,{filters[0]}"], (int, float)):
        raise ReportError(f"{run.results_file}: {run.task} needs one bleu score (bleu,FILTER), has filters {filters}")
    items: dict[int, tuple[tuple[str, ...], str]] = {}
    for number, row in read_jsonl(path):
        if row.get("filter", "none") != filters[0]:
            continue
        doc_id, resps, doc = row.get("doc_id"), row.get("filtered_resps"), row.get("doc")
        references = (doc or {}).get("references") if isinstance(doc, dict) else None
        references = tuple(references or [row.get("target")])
        if (not isinstance(doc_id, int) or not isinstance(resps, list) or len(resps) != 1
                or not isinstance(resps[0], (str, type(None))) or not all(isinstance(r, str) and r for r in references)):
            raise ReportError(f"{path}:{number}: needs an integer doc_id, filtered_resps [translation] and a target")
        if doc_id in items:
            raise ReportError(f"{path}:{number}: doc_id {doc_id} appears twice for filter {filters[0]}")
        items[doc_id] = (references, resps[0] or "")
        run.targets[doc_id] = references[0]
        if "doc_hash" in row:
            run.doc_hashes[doc_id] = row["doc_hash"]
    reported = run.metrics[f"bleu,{filters[0]}"]
    if len(items) != run.n or not math.isclose(translation.corpus_score("bleu", items.values()), reported, abs_tol=1e-6):
        raise ReportError(f"{path}: its {len(items)} translations do not give the {run.n} sentences' BLEU "
                          f"{reported:.2f} of {run.results_file.name}: the samples lack references the score used "
                          f"(a slimmed multi-reference run keeps only the first) or belong to another run")
    run.translations = items
    return items


def load_store(path: Path) -> dict[tuple[str, int], dict]:
    """The per-request store: one record per request; identical repeats collapse."""
    records: dict[tuple[str, int], tuple[int, dict]] = {}
    for number, row in read_jsonl(path):
        for key, kind in STORE_FIELDS.items():
            if not isinstance(row.get(key), kind) or isinstance(row.get(key), bool):
                raise ReportError(f"{path}:{number}: field {key!r} missing or not {getattr(kind, '__name__', 'a number')}")
        check_search_fields(row, path, number)
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
    attach_search_data(run, mine)


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
    manifest = manifest_for(path, doc, root)
    store_path = manifest.folder / (manifest.store or STORE)
    if manifest.store and not store_path.is_file():
        raise ReportError(f"{manifest.path}: store {manifest.store!r} does not exist")
    store = load_store(store_path) if store_path.is_file() else {}
    tokens_path = manifest.folder / TOKENS
    config = doc.get("config")
    marco_config = config.get("marco_eval_config") if isinstance(config, dict) else None
    strategy = marco_config.get("strategy") if isinstance(marco_config, dict) else None
    final_rule = marco_config.get("final_answer") if isinstance(marco_config, dict) else None
    if strategy == "sampling" and final_rule in WALKS_THE_TREE:
        final_rule = "best_reward"  # what the search applies to a flat set of samples (final_answer.rule_for)
    runs = []
    for task in sorted(doc["results"]):
        if task not in MGSM_TASKS and task not in TRANSLATION_TASKS:
            skipped.append(f"{rel(path, root)}: {task}")
            continue
        run = TaskRun(system=manifest.system, task=task, source=source, results_file=path, manifest=manifest,
                      metrics=doc["results"][task], n=task_count(doc, task, path), strategy=strategy,
                      final_rule=final_rule, settings=marco_config if isinstance(marco_config, dict) else None)
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

