"""Summaries written by other subcommands: `marco-eval judge summarize` (human ratings) and
`marco-eval train` (training_summary.json copied beside the results)."""

from __future__ import annotations

from pathlib import Path

from marco_eval.errors import ReportError
from marco_eval.report.reading import read_json, rel
from marco_eval.report.schema import MANIFEST, JudgeRow, TrainingRun

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

