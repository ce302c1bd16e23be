"""Row files: read a JSON list or JSON lines; write whole files atomically or append one line.

Appending is how long jobs (synth) keep what they finished: one row per line, flushed and
synced, so a kill loses at most the line being written. `repair_tail` cuts such a torn last
line off before a resumed job appends again.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def read_json_rows(path: str | Path) -> list[dict]:
    """Rows of a `.json` file (a list of objects) or a `.jsonl` file (one object a line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; give a .json or .jsonl file of rows")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); fix the file") from None
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}: line {n} is not a JSON object ({e.msg}); fix or delete it") from None
    bad = next((i for i, r in enumerate(rows, 1) if not isinstance(r, dict)), None)
    if bad is not None:
        raise ValueError(f"{path}: row {bad} is not a JSON object; rows must be {{\"field\": value}} mappings")
    return rows


def write_jsonl_atomic(path: str | Path, rows) -> None:
    """Temp file + rename: readers see the old file or the whole new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def append_jsonl(path: str | Path, row: dict) -> None:
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
