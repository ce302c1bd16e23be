"""`marco-eval report --slim RAW DEST`: a run folder made fit to commit."""

from __future__ import annotations

import fnmatch
from pathlib import Path

from marco_eval.errors import ReportError
from marco_eval.files import write_atomic
from marco_eval.jsonl import write_jsonl_atomic
from marco_eval.report.manifest import README_SECTION, load_manifest
from marco_eval.report.reading import read_jsonl
from marco_eval.report.schema import JUDGE_SUMMARY, MANIFEST, STORE, TOKENS


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
        raise ReportError(f"{raw_dir}: no {MANIFEST}: write one (system, model, config, the exact command; see "
                          f"{README_SECTION}) before slimming: a committed run keeps its exact command")
    written = []
    for path in sorted(raw_dir.rglob("*")):
        if not path.is_file():
            continue
        name, target = path.name, dest_dir / path.relative_to(raw_dir)
        if name.startswith("samples_") and name.endswith(".jsonl"):
            copy_jsonl_without(path, target, sample_dropped)
        elif name == (manifest.store or STORE):
            copy_jsonl_without(path, target, store_dropped)
        elif (name.startswith("results_") and name.endswith(".json")) or name in (
                MANIFEST, TOKENS, manifest.store or STORE) or fnmatch.fnmatch(name, JUDGE_SUMMARY):
            write_atomic(target, path.read_bytes())
        else:
            continue
        written.append(target)
    return written


def copy_jsonl_without(path: Path, target: Path, dropped: tuple[str, ...]) -> None:
    """Copy a JSON-lines file, leaving the `dropped` fields out of every row."""
    write_jsonl_atomic(target, ({k: v for k, v in row.items() if k not in dropped} for _, row in read_jsonl(path)))
