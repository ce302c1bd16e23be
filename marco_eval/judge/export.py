"""Build a blind rating sheet from the lm-eval samples of two or more systems.

Input: one `samples_<task>_<timestamp>.jsonl` per system (lm-eval `--log_samples`), named
`NAME=PATH` (PATH a samples file or a folder holding one). Output, both written atomically:

    SHEET.json                  what raters see: items in a random order, each with the source,
                                the reference and the candidates in a per-item random order,
                                under opaque ids. Nothing else: no system or config names, no
                                paths, no token counts, no seed (with the seed and these
                                sources anyone could recompute which candidate is which).
    judge-keys/SHEET.key.json   cand_id -> system, the seed and the samples paths; read only
                                by `judge summarize`. Kept in another folder than the sheet
                                (never beside it), and `judge-keys/` is git-ignored.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from marco_eval.judge import JudgeError
from marco_eval.jsonl import read_jsonl
from marco_eval.files import write_json_atomic

SCHEMA_VERSION = 1
# Tried in order when --source-field / --reference-field are not given.
SOURCE_FIELDS = ("zh", "source", "src", "sentence")
REFERENCE_FIELDS = ("en", "reference", "references", "ref", "translation")
SAMPLES_NAME = re.compile(r"^samples_(?P<task>.+)_(?P<stamp>\d{4}-\d\d-\d\dT[\d.\-]+)\.jsonl$")
# Where keys go unless --key says otherwise: relative to the working directory (the repo root
# when run from there), git-ignored at any depth by the `judge-keys/` line in .gitignore.
KEYS_DIR = Path("judge-keys")
# The only fields a sheet may hold; a test checks every export against these.
SHEET_FIELDS = ("schema_version", "task", "sheet_id", "items")
ITEM_FIELDS = ("item_id", "source", "reference", "candidates")
CANDIDATE_FIELDS = ("cand_id", "text")


@dataclass
class SystemSamples:
    name: str
    path: Path
    rows: dict[str, dict]  # doc_id -> the samples row of the chosen filter


def default_key_path(sheet: Path) -> Path:
    return KEYS_DIR / (Path(sheet).stem + ".key.json")


def legacy_key_path(sheet: Path) -> Path:
    """Where exports before the key moved out put it: beside the sheet."""
    return Path(sheet).with_name(Path(sheet).stem + ".key.json")


def parse_system(spec: str) -> tuple[str, Path]:
    """`NAME=PATH`, or a bare PATH named after its folder (a file's parent, else itself)."""
    name, sep, path = spec.partition("=")
    if not sep:
        p = Path(spec)
        return (p.parent.name if p.suffix == ".jsonl" else p.name), p
    if not name or not path:
        raise JudgeError(f"--system {spec!r}: expected NAME=PATH (e.g. mcts=results/runs/mcts)")
    return name, Path(path)


def find_samples_file(path: Path, task: str | None) -> Path:
    """A samples file itself, or the newest `samples_<task>_*.jsonl` under a folder."""
    if path.is_file():
        return path
    if not path.exists():
        raise JudgeError(f"samples not found: {path} (pass a samples_<task>_*.jsonl file or its folder)")
    found = [(m["task"], m["stamp"], p) for p in path.rglob("samples_*.jsonl")
             if (m := SAMPLES_NAME.match(p.name))]
    tasks = sorted({t for t, _, _ in found})
    if task is not None:
        found = [f for f in found if f[0] == task]
    if not found:
        wanted = f"samples_{task}_*.jsonl" if task else "samples_*.jsonl"
        raise JudgeError(f"no {wanted} under {path} (tasks there: {', '.join(tasks) or 'none'}); "
                         "run lm_eval with --log_samples or pass the file")
    if len({t for t, _, _ in found}) > 1:
        raise JudgeError(f"{path} holds samples of several tasks ({', '.join(tasks)}): choose one with --task")
    return max(found, key=lambda f: f[1])[2]  # the newest run


def load_samples(name: str, path: Path, filter_name: str | None) -> SystemSamples:
    rows = []
    for lineno, row in read_jsonl(path, JudgeError, "an lm-eval samples file"):
        missing = {"doc_id", "doc", "filtered_resps"} - set(row)
        if missing:
            raise JudgeError(f"{path}:{lineno}: no {', '.join(sorted(missing))}; expected an lm-eval samples file")
        rows.append(row)
    if not rows:
        raise JudgeError(f"{path} is empty; expected lm-eval samples (run with --log_samples)")
    filters = list(dict.fromkeys(row.get("filter", "none") for row in rows))
    if filter_name is None and len(filters) > 1:
        raise JudgeError(f"{path} has the filters {', '.join(filters)}: choose one with --filter")
    chosen = filter_name or filters[0]
    if chosen not in filters:
        raise JudgeError(f"{path} has no filter {chosen!r} (it has {', '.join(filters)})")
    by_doc: dict[str, dict] = {}
    for row in rows:
        if row.get("filter", "none") == chosen:
            doc_id = str(row["doc_id"])
            if doc_id in by_doc:
                raise JudgeError(f"{path}: doc_id {doc_id} appears twice under filter {chosen!r}")
            by_doc[doc_id] = row
    return SystemSamples(name, path, by_doc)


def candidate_text(row: dict) -> str:
    """The filtered (extracted) response; lm-eval keeps one entry per repeat: take the first."""
    resp = row["filtered_resps"]
    while isinstance(resp, list):
        resp = resp[0] if resp else ""
    return str(resp)


def _field(doc: dict, row: dict, wanted: str | None, defaults: tuple[str, ...], what: str, flag: str) -> str | None:
    names = (wanted,) if wanted else defaults
    for name in names:
        if name in doc and doc[name] not in (None, ""):
            value = doc[name]
            return "\n".join(map(str, value)) if isinstance(value, list) else str(value)
    if what == "reference" and not wanted and isinstance(row.get("target"), str) and row["target"]:
        return row["target"]
    if what == "reference" and not wanted:
        return None  # a sheet without references is fine: raters judge against the source
    raise JudgeError(f"doc {row['doc_id']} has no {what} field {'/'.join(names)} "
                     f"(it has {', '.join(sorted(doc)) or 'nothing'}): name it with {flag}")


def _natural(doc_id: str):
    return (0, int(doc_id), "") if doc_id.isdigit() else (1, 0, doc_id)


def check_same_documents(systems: list[SystemSamples]) -> list[str]:
    first = systems[0]
    for other in systems[1:]:
        if other.rows.keys() != first.rows.keys():
            only = sorted(first.rows.keys() ^ other.rows.keys(), key=_natural)
            raise JudgeError(f"systems cover different documents: {first.name} has {len(first.rows)}, "
                             f"{other.name} has {len(other.rows)} (doc_id {only[0]} is in only one); "
                             "export runs of the same task with the same --limit")
    return sorted(first.rows, key=_natural)


def build_sheet(systems: list[SystemSamples], seed: int = 0, limit: int | None = None,
                source_field: str | None = None, reference_field: str | None = None,
                task: str | None = None) -> tuple[dict, dict]:
    """(sheet, key). Same samples + same seed -> the same sheet, byte for byte."""
    if len(systems) < 2:
        raise JudgeError(f"judging needs two or more systems, got {len(systems)}: repeat --system NAME=PATH")
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        raise JudgeError(f"system names repeat ({', '.join(names)}): give each --system a distinct NAME=")
    if limit is not None and limit < 1:
        raise JudgeError(f"--limit must be at least 1, got {limit}")
    rng = random.Random(seed)
    doc_ids = check_same_documents(systems)
    rng.shuffle(doc_ids)
    items, key = [], {}
    for doc_id in doc_ids[:limit]:
        rows = [s.rows[doc_id] for s in systems]
        sources = [_field(r["doc"], r, source_field, SOURCE_FIELDS, "source", "--source-field") for r in rows]
        differs = [name for name, source in zip(names, sources) if source != sources[0]]
        if differs:
            raise JudgeError(f"doc_id {doc_id} has a different source in {differs[0]} than in {names[0]}: "
                             "are these samples of the same task?")
        # Surrounding whitespace is no part of a translation, but could tell systems apart.
        candidates = [(s.name, candidate_text(r).strip()) for s, r in zip(systems, rows)]
        rng.shuffle(candidates)
        entries = []
        for system, text in candidates:
            cand_id = f"c{rng.getrandbits(40):010x}"
            while cand_id in key:
                cand_id = f"c{rng.getrandbits(40):010x}"
            key[cand_id] = system
            entries.append({"cand_id": cand_id, "text": text})
        reference = _field(rows[0]["doc"], rows[0], reference_field, REFERENCE_FIELDS, "reference", "--reference-field")
        items.append({"item_id": doc_id, "source": sources[0], "reference": reference, "candidates": entries})
    sheet = {"schema_version": SCHEMA_VERSION, "task": task, "sheet_id": sheet_id(items), "items": items}
    key_doc = {"schema_version": SCHEMA_VERSION, "sheet_id": sheet["sheet_id"], "seed": seed,
               "systems": {s.name: str(s.path) for s in systems}, "candidates": key}
    return sheet, key_doc


def sheet_id(items: list[dict]) -> str:
    """Ties the key file and the ratings store to one sheet's exact content."""
    return hashlib.sha256(json.dumps(items, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def read_judge_json(path: Path, what: str, required: tuple[str, ...], fix: str) -> dict:
    """A sheet or key file with the fields it must have; every failure is one line ending in `fix`."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise JudgeError(f"{what} not found: {path} ({fix})") from None
    except json.JSONDecodeError as e:
        raise JudgeError(f"{path} is not JSON ({e.msg}): {fix}") from None
    if not isinstance(doc, dict) or any(field not in doc for field in required):
        raise JudgeError(f"{path} is not a judge {what} (no {'/'.join(required)}): {fix}")
    return doc


def load_sheet(path: Path) -> dict:
    sheet = read_judge_json(path, "sheet", ("items", "sheet_id"), "make one with `marco-eval judge export`")
    if sheet["sheet_id"] != sheet_id(sheet["items"]):
        raise JudgeError(f"{path} was edited after export (its sheet_id no longer matches): export it again")
    return sheet


def check_key_apart(out: Path, key_out: Path) -> None:
    """The key never sits in the sheet's folder: whoever is handed that folder gets no key."""
    if key_out.resolve().parent == out.resolve().parent:
        raise JudgeError(f"--key {key_out} is in the sheet's folder {out.parent}: keep the key apart from "
                         f"what raters get (default {KEYS_DIR}/, git-ignored)")


def check_key_free(key_out: Path, new_sheet_id: str) -> None:
    """Never overwrite the key of another sheet: its ratings could no longer be unblinded."""
    try:
        old = json.loads(key_out.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return
    if isinstance(old, dict) and old.get("sheet_id") not in (None, new_sheet_id):
        raise JudgeError(f"{key_out} holds the key of another sheet ({old['sheet_id']}): overwriting it would leave "
                         "that sheet's ratings unreadable; pass another --out or --key")


def export(specs: list[str], out: Path, key_out: Path | None = None, task: str | None = None,
           filter_name: str | None = None, seed: int | None = None, limit: int | None = None,
           source_field: str | None = None, reference_field: str | None = None) -> tuple[Path, Path, dict]:
    """Write the sheet and its key; `seed=None` draws a secret one (recorded only in the key)."""
    out = Path(out)
    key_out = Path(key_out) if key_out else default_key_path(out)
    check_key_apart(out, key_out)
    if seed is None:
        seed = secrets.randbits(63)
    systems = []
    for spec in specs:
        name, path = parse_system(spec)
        samples_file = find_samples_file(path, task)
        if task is None and (m := SAMPLES_NAME.match(samples_file.name)):
            task = m["task"]
        systems.append(load_samples(name, samples_file, filter_name))
    sheet, key = build_sheet(systems, seed, limit, source_field, reference_field, task)
    check_key_free(key_out, sheet["sheet_id"])
    # Key first: a sheet is never on disk without the key that unblinds it.
    write_json_atomic(key_out, key)
    write_json_atomic(out, sheet)
    return out, key_out, sheet
