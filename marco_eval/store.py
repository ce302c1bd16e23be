"""RequestStore: finished requests on disk, so a killed run resumes where it stopped.

    lm_eval --model marco_mcts --model_args ...,store=results/run.jsonl --tasks mgsm_en

One JSON line per finished `generate_until` request, appended and fsynced the moment the
request finishes (a tree search can take minutes; a kill loses at most the searches in
flight). A rerun of the same command loads the file, returns the stored text of every
request whose key is present and searches only the rest. Record fields:

    key               sha256 of json([fingerprint, context, gen_kwargs] + the copy of a repeated
                      request and the answer kind answer=auto gave it, when set): request_key
    instance          which copy of a request lm-eval repeats (`repeats`), from 0
    answer_kind       how its answers were read (readers.py)
    fingerprint       sha256 of the model identity and every setting that can change an answer
    task, doc_id      lm-eval's, for reading the file (null when unknown)
    text              the completion handed to lm-eval
    answer            extracted answer of that completion (null: none found / answer=none)
    candidates        extracted answers of every rollout or sample
    generated_tokens, policy_calls
    seconds           wall time from the start of that generate_until call to this request's end
    rollouts          per rollout or sample, in the order made: {answer, reward, tokens, finish,
                      simulation, reflections, confidence} (search.RolloutSummary; reward is
                      what the search used, confidence Marco-o1's reward of the same tokens,
                      the same number unless reward= names a verifier); absent in older stores
    trace             the anytime trace: after simulation (sampling: sample) k, {answer, tokens}
                      = what the configured rule would answer and the tokens spent so far
    redacted          true in a copy made by `marco-eval store redact`: text is then a stand-in
                      that reads as the same answer (MGSM), not the model's completion

The fingerprint covers the model (resolved path or hub id, revision, commit, loaded dtype,
the weights' config.json) and all search and model options except those that only say
where outputs go (`tree_dir`, `store`): a different model, config or seed never reuses an
answer, so several runs may share one file. A SIGKILL can tear only the last line (each
record is one write ending in a newline); it is ignored and cut away when the file is
opened again. An exclusive lock keeps two runs from appending to the same file.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
from pathlib import Path

from marco_eval.errors import UserError


class StoreError(UserError, ValueError):
    """The store file cannot be used; the message says why and what to do."""


def _sha256_json(obj) -> str:
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def model_identity(resolved: str, revision: str | None, dtype: str, commit: str | None = None) -> dict:
    """What identifies the weights: a local checkpoint by its path and config.json, a hub
    model by its id, revision and the commit transformers resolved."""
    path = Path(resolved).expanduser()
    config_file = path / "config.json"
    if config_file.is_file():
        return {"model": str(path.resolve()), "revision": revision, "dtype": dtype,
                "config": json.loads(config_file.read_text(encoding="utf-8"))}
    return {"model": resolved, "revision": revision, "dtype": dtype, "commit": commit}


def checkpoint_digest(folder: str | Path) -> str:
    """sha256 over a checkpoint folder's config.json and weight files, in name order."""
    digest = hashlib.sha256()
    folder = Path(folder).expanduser()
    for path in sorted([folder / "config.json", *folder.glob("*.safetensors")]):
        digest.update(path.name.encode("utf-8"))
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def fingerprint(identity: dict, settings: dict) -> str:
    return _sha256_json([identity, settings])


def request_key(fingerprint: str, context: str, gen_kwargs: dict, *, instance: int = 0,
                answer_kind: str | None = None) -> str:
    """A request's key in the store. Copy `instance` of a repeated request and, under
    answer=auto, the answer kind its task gave it are in the key; the first copy of a
    request under an explicit answer kind keeps the key stores had before either existed."""
    extra = {k: v for k, v in (("instance", instance), ("answer_kind", answer_kind)) if v}
    return _sha256_json([fingerprint, context, gen_kwargs, extra] if extra else [fingerprint, context, gen_kwargs])


# Tasks whose score depends only on the numbers read out of a completion, so a stand-in
# text scores the same (answers.number_stand_in); a translation's score needs the text.
REDACTABLE_TASKS = ("mgsm_",)


def redact(src: str | Path, dst: str | Path) -> int:
    """Copy a request store with every completion replaced by its number stand-in.

    A store is the one file that lets a long run go on in a later session on another
    machine, but its completions may quote the benchmark's questions, which must not be
    committed. The stand-in (answers.number_stand_in) reads as the same strict and
    flexible answer, so a run resumed from the copy scores every finished problem as
    before; everything else in each record is kept, plus "redacted": true. A store in use
    can be copied: a torn last line (a write under way) is left out.

    Args:
        src: the store (JSONL).
        dst: where the copy goes (written atomically; src may not be dst).
    Returns:
        How many records were copied.
    """
    from marco_eval.answers import number_stand_in
    from marco_eval.jsonl import write_jsonl_atomic

    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise StoreError(f"store redact: {dst} is the store itself; give another path for the copy")
    if not src.is_file():
        raise StoreError(f"store redact: {src} does not exist; give a request store (store=PATH of a run)")
    lines = src.read_bytes().split(b"\n")
    lines.pop()  # b"" after the last newline, or a line still being written
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise StoreError(f"store {src} line {number} is not a request record; fix or remove it") from None
        task = str(record.get("task"))
        if not task.startswith(REDACTABLE_TASKS):
            raise StoreError(f"store {src} line {number}: task {task!r} is scored on the whole text, which a "
                             f"stand-in cannot keep; only {', '.join(t + '*' for t in REDACTABLE_TASKS)} can be redacted")
        records.append({**record, "text": number_stand_in(record["text"]), "redacted": True})
    write_jsonl_atomic(dst, records)
    return len(records)


def search_record(result) -> dict:
    """A SearchResult's per-rollout data and anytime trace, as store fields."""
    return {"rollouts": [dataclasses.asdict(r) for r in result.rollouts],
            "trace": [dataclasses.asdict(t) for t in result.trace]}


class RequestStore:
    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        if self.path.is_dir():
            raise StoreError(f"store={path} is a directory; give a file path such as {self.path / 'run.jsonl'}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a+b")
        except OSError as e:
            raise StoreError(f"store={path} cannot be opened ({e.strerror}); give a writable file path") from None
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise StoreError(f"store={path} is in use by another run; wait for it to finish or "
                             "give this run its own store file") from None
        self.records: dict[str, dict] = {}
        self._load()

    def _load(self) -> None:
        self._file.seek(0)
        data = self._file.read()
        lines = data.split(b"\n")
        torn = lines.pop()  # b"" when the file ends with a newline, else a record a kill cut short
        if torn:
            self._file.truncate(len(data) - len(torn))
            self._sync()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not (isinstance(record["key"], str) and isinstance(record["text"], str)):
                    raise TypeError
                self.records[record["key"]] = record
            except (ValueError, TypeError, KeyError, IndexError):
                raise StoreError(f"store {self.path} line {number} is not a request record; remove that line "
                                 "(or the file, to start over) and rerun") from None

    def get(self, key: str) -> dict | None:
        return self.records.get(key)

    def __len__(self) -> int:
        return len(self.records)

    def other_fingerprints(self, fingerprint: str) -> int:
        """How many records were made under a fingerprint other than this one (never reused)."""
        return sum(r.get("fingerprint") != fingerprint for r in self.records.values())

    def add(self, record: dict) -> None:
        """Append one record as one write + fsync: after this returns, a kill keeps it."""
        line = json.dumps(record, ensure_ascii=False) + "\n"
        self._file.write(line.encode("utf-8"))
        self._sync()
        self.records[record["key"]] = record

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()  # closing releases the lock
