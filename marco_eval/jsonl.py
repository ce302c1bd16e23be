"""JSON lines: the one home for reading and writing them.

Reading names the file and line of anything malformed. Writing is either a whole file at
once (atomic, files.py) or one appended line, flushed and fsynced, which is how long jobs
(request stores, synth) keep what they finished: a kill loses at most the line being
written, and `repair_tail` cuts such a torn last line off before a resumed job appends.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from marco_eval.errors import DataError, InputError
from marco_eval.files import write_atomic


def read_jsonl(path: str | Path, error: type[Exception] = InputError,
               expected: str = "one JSON object per line") -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line; a bad line raises `error` as one line
    naming path:line and what the file should hold."""
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise error(f"{path}:{number}: not JSON ({e.msg}); expected {expected}") from None
        if not isinstance(row, dict):
            raise error(f"{path}:{number}: not a JSON object; expected {expected}")
        yield number, row


def read_json_rows(path: str | Path) -> list[dict]:
    """Rows of a `.json` file (a list of objects) or a `.jsonl` file (one object a line)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; give a .json or .jsonl file of rows")
    text = path.read_text(encoding="utf-8")
    if not text.lstrip().startswith("["):
        return [row for _, row in read_jsonl(path, expected="one JSON object per line; fix or delete that line")]
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); fix the file") from None
    bad = next((i for i, r in enumerate(rows, 1) if not isinstance(r, dict)), None)
    if bad is not None:
        raise InputError(f"{path}: row {bad} is not a JSON object; rows must be {{\"field\": value}} mappings")
    return rows


def dumps_jsonl(rows: Iterable[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict]) -> None:
    """A whole JSON-lines file at once: readers see the old file or the new one, never half."""
    write_atomic(path, dumps_jsonl(rows))


def append_jsonl(path: str | Path, row: dict) -> None:
    """One line, flushed and fsynced: after this returns, a kill keeps it."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def repair_tail(path: str | Path) -> int:
    """Cut a last line that has no newline (a kill mid-write); returns the bytes removed."""
    path = Path(path)
    if not path.is_file():
        return 0
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep == len(data):
        return 0
    with open(path, "r+b") as f:
        f.truncate(keep)
    return len(data) - keep
