"""MGSM (en, zh) for lm-eval: data loading, prompts, targets.

Data: the hub dataset `juletxara/mgsm` by default; when MGSM_DATA_DIR is set, the local
files `mgsm_en.tsv` / `mgsm_zh.tsv` (question<TAB>answer, no header) and
`mgsm_exemplars_en_zh.json` from that folder (the same content, for offline machines).
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

from marco_eval.answers import flexible_filter, normalize_number, strict_filter  # noqa: F401 (YAML uses them)
from marco_eval.errors import DataError

HUB_DATASET = "juletxara/mgsm"

INSTRUCTION = {
    "en": ("Solve the math word problem below. Reason step by step inside <Thought> and </Thought>, "
           "then give only the final number inside <Output> and </Output>."),
    "zh": ("请解答下面的数学应用题。在 <Thought> 和 </Thought> 中逐步推理（推理可以用英文），"
           "然后在 <Output> 和 </Output> 中用中文给出最终答案的数字。"),
}
QUESTION_LABEL = {"en": "Question:", "zh": "问题："}


def _data_dir() -> Path | None:
    value = os.environ.get("MGSM_DATA_DIR")
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise DataError(f"MGSM_DATA_DIR={value} is not a directory; point it at the folder holding mgsm_en.tsv")
    return path


def _read_tsv(path: Path) -> list[dict]:
    if not path.is_file():
        raise DataError(f"{path} is missing; MGSM_DATA_DIR must hold mgsm_en.tsv and mgsm_zh.tsv")
    with open(path, encoding="utf-8", newline="") as f:
        rows = [r for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if r]
    bad = [i + 1 for i, r in enumerate(rows) if len(r) != 2]
    if bad:
        raise DataError(f"{path}: line(s) {bad[:5]} are not question<TAB>answer; fix or replace the file")
    return [{"question": q, "answer": None, "answer_number": a, "equation_solution": None} for q, a in rows]


def _exemplars(folder: Path, lang: str) -> list[dict]:
    path = folder / "mgsm_exemplars_en_zh.json"
    if not path.is_file():
        return []
    label = {"en": "Question: ", "zh": "问题："}[lang]
    out = []
    for ex in json.loads(path.read_text(encoding="utf-8"))[lang]:
        q = ex["q"][len(label):] if ex["q"].startswith(label) else ex["q"]
        out.append({"question": q, "answer": ex["a"], "answer_number": str(ex["answer_number"]),
                    "equation_solution": None})
    return out


def load_mgsm(lang: str, **_ignored):
    import datasets

    folder = _data_dir()
    if folder is None:  # users with a network: the hub copy (test = 250 problems, train = exemplars)
        try:
            return datasets.load_dataset(HUB_DATASET, lang)
        except ConnectionError as e:
            raise ConnectionError(f"{e}; offline, set MGSM_DATA_DIR to a folder holding mgsm_{lang}.tsv") from e
    splits = {"test": _read_tsv(folder / f"mgsm_{lang}.tsv")}
    if exemplars := _exemplars(folder, lang):
        splits["train"] = exemplars
    return datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()})


def load_mgsm_en(**kwargs):
    return load_mgsm("en", **kwargs)


def load_mgsm_zh(**kwargs):
    return load_mgsm("zh", **kwargs)


def _prompt(doc: dict, lang: str) -> str:
    return f"{INSTRUCTION[lang]}\n\n{QUESTION_LABEL[lang]} {doc['question'].strip()}"


def doc_to_text_en(doc: dict) -> str:
    return _prompt(doc, "en")


def doc_to_text_zh(doc: dict) -> str:
    return _prompt(doc, "zh")


def doc_to_target(doc: dict) -> str:
    """The gold number, normalised exactly like the filters normalise predictions."""
    return normalize_number(str(doc["answer_number"])) or str(doc["answer_number"])


_STEP_PREFIX = re.compile(r"^(Step-by-Step Answer:|逐步解答：)\s*")


def fewshot_target(doc: dict) -> str:
    """An exemplar's worked answer in the Thought/Output format the prompt asks for."""
    reasoning = _STEP_PREFIX.sub("", (doc.get("answer") or "").strip())
    return f"<Thought>\n{reasoning}\n</Thought>\n<Output>{doc_to_target(doc)}</Output>"
