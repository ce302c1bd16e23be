"""MATH-500 (the PRM800K test split) for lm-eval, as lm-eval's own `minerva_math500`.

The prompt, the four-shot exemplars, the gold-answer normalisation and both metrics
(`exact_match` on the normalised "final answer is" text, `math_verify`) are lm-eval's own
(lm_eval/tasks/minerva_math/utils.py), imported, never copied. Only the data source is ours:

1. MATH500_DATA_DIR: a folder holding `test.jsonl` (the hub's rows: problem, solution,
   answer, subject, level, unique_id), for offline machines;
2. `../shared/data/math500` beside this checkout, when MATH500_DATA_DIR is unset (said on
   stderr, one line);
3. the hub dataset HuggingFaceH4/MATH-500, as minerva_math500 reads it.

`MATH500_LEVELS=1,2,3` keeps only those difficulty levels (the 0.5B model's runs: levels
1-3 are where it solves enough for a comparison to mean anything).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from lm_eval.tasks.minerva_math.utils import (  # noqa: F401 (the YAML uses them)
    doc_to_text,
    list_fewshot_samples,
    process_docs,
    process_results,
)

from marco_eval.errors import DataError

HUB_DATASET = "HuggingFaceH4/MATH-500"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "math500"
FIELDS = ("problem", "solution", "answer", "subject", "level", "unique_id")


def _data_dir() -> Path | None:
    value = os.environ.get("MATH500_DATA_DIR")
    if not value:
        if (SHARED_DATA / "test.jsonl").is_file():
            print(f"math500: MATH500_DATA_DIR is unset, so reading MATH-500 from {SHARED_DATA}; set "
                  "MATH500_DATA_DIR to read another folder", file=sys.stderr, flush=True)
            return SHARED_DATA
        return None
    path = Path(value).expanduser()
    if not (path / "test.jsonl").is_file():
        raise DataError(f"MATH500_DATA_DIR={value} has no test.jsonl; point it at the folder holding "
                        "MATH-500's test.jsonl (one JSON row a problem)")
    return path


def _read_rows(path: Path) -> list[dict]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise DataError(f"{path} line {number} is not JSON; fix or replace the file") from None
        if missing := [k for k in ("problem", "solution", "answer") if k not in row]:
            raise DataError(f"{path} line {number} lacks {', '.join(missing)}; each row needs problem, "
                            "solution and answer")
        rows.append({k: row.get(k) for k in FIELDS})
    return rows


def _levels() -> set[int] | None:
    value = os.environ.get("MATH500_LEVELS", "").strip()
    if not value:
        return None
    try:
        levels = {int(v) for v in value.split(",")}
    except ValueError:
        raise DataError(f"MATH500_LEVELS={value!r}: give levels 1-5 separated by commas, e.g. 1,2,3") from None
    if not levels <= {1, 2, 3, 4, 5}:
        raise DataError(f"MATH500_LEVELS={value!r}: levels run from 1 to 5")
    return levels


def load_math500(**_ignored):
    import datasets

    folder = _data_dir()
    test = (datasets.Dataset.from_list(_read_rows(folder / "test.jsonl")) if folder is not None
            else datasets.load_dataset(HUB_DATASET, split="test"))
    if (levels := _levels()) is not None:
        test = test.filter(lambda row: int(row["level"]) in levels)
    return datasets.DatasetDict({"test": test})
