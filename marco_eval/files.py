"""Atomic file writes: the one home for "temp file + rename".

Outputs users keep (results, trees, ratings, judge sheets, slimmed runs) are written to a
temp file in the same folder and renamed over the target, so a reader (or a run killed
half-way) sees the old file or the whole new one, never half of either.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write `data` (bytes, or text as UTF-8) to `path` through a temp file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a kept output gets the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | Path, doc, *, indent: int | None = None) -> None:
    """One JSON document, atomically (non-ASCII text kept as written)."""
    write_atomic(path, json.dumps(doc, ensure_ascii=False, indent=indent) + ("\n" if indent is not None else ""))
