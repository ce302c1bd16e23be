"""Reading JSON-lines files (lm-eval samples, request stores, our data sets) with errors
that name the file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


def read_jsonl(path: str | Path, error: type[Exception] = ValueError,
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
