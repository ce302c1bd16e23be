"""Reading the report's input files: JSON and JSON lines with one-line errors naming the
file, and paths shown relative to the results folder."""

from __future__ import annotations

import json
from pathlib import Path

from marco_eval import jsonl
from marco_eval.errors import ReportError


def read_json(path: Path, what: str = "JSON"):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: not valid {what} ({e}): regenerate or fix the file") from None


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    return list(jsonl.read_jsonl(path, ReportError, "one JSON object per line: regenerate or fix the line"))


def rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()
