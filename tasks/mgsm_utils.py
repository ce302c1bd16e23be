"""MGSM (en, zh) for lm-eval: data loading, prompts, targets.

Data, first found of:
1. MGSM_DATA_DIR: the local files `mgsm_en.tsv` / `mgsm_zh.tsv` (question<TAB>answer, no
   header) and `mgsm_exemplars_en_zh.json` in that folder (the hub's content, for offline machines);
2. `../shared/data/mgsm` beside this checkout, when MGSM_DATA_DIR is unset (said on stderr, one line);
3. the hub dataset `juletxara/mgsm`. Before it is asked (where an unreachable hub costs ~25 s of
   retries and a long traceback), HF_HUB_OFFLINE / HF_DATASETS_OFFLINE are honoured (the hub
   cache only) and one short request checks the hub answers; if not, one line names MGSM_DATA_DIR.
"""

from __future__ import annotations

import csv
import json
import os
import re
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path

from marco_eval.answers import flexible_filter, normalize_number, strict_filter  # noqa: F401 (YAML uses them)
from marco_eval.errors import DataError, first_line

HUB_DATASET = "juletxara/mgsm"
# The data folder this project's machines keep beside the checkout (never copied into it).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mgsm"
HUB_PROBE_SECONDS = 5.0

INSTRUCTION = {
    "en": ("Solve the math word problem below. Reason step by step inside <Thought> and </Thought>, "
           "then give only the final number inside <Output> and </Output>."),
    "zh": ("请解答下面的数学应用题。在 <Thought> 和 </Thought> 中逐步推理（推理可以用英文），"
           "然后在 <Output> 和 </Output> 中用中文给出最终答案的数字。"),
}
QUESTION_LABEL = {"en": "Question:", "zh": "问题："}


def _data_dir(lang: str = "en") -> Path | None:
    value = os.environ.get("MGSM_DATA_DIR")
    if not value:
        if SHARED_DATA.is_dir():
            print(f"mgsm_{lang}: MGSM_DATA_DIR is unset, so reading MGSM from {SHARED_DATA} (../shared/data/mgsm "
                  "beside this checkout); set MGSM_DATA_DIR to read another folder", file=sys.stderr, flush=True)
            return SHARED_DATA
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise DataError(f"MGSM_DATA_DIR={value} is not a directory; point it at the folder holding mgsm_en.tsv")
    return path


def _offline() -> bool:
    """HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set to a true value, as huggingface_hub reads them."""
    return any(os.environ.get(k, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def hub_unreachable(timeout: float = HUB_PROBE_SECONDS) -> str | None:
    """None when the hub answers at all (any HTTP status, or a TLS problem the hub client may
    not share); else why not, in one line (no such host, refused, timed out, no route)."""
    request = urllib.request.Request(f"{hub_endpoint()}/api/datasets/{HUB_DATASET}", method="HEAD")
    try:
        urllib.request.urlopen(request, timeout=timeout).close()  # proxies from the environment, like the hub client
    except urllib.error.HTTPError:
        return None
    except urllib.error.URLError as e:
        if isinstance(e.reason, ssl.SSLError):
            return None
        return first_line(e.reason) if isinstance(e.reason, BaseException) else str(e.reason)
    except (OSError, ValueError) as e:  # a timeout while reading, a malformed HF_ENDPOINT
        return first_line(e)
    return None


def _no_data(lang: str, why: str) -> DataError:
    return DataError(f"mgsm_{lang}: MGSM_DATA_DIR is unset and {why}; set MGSM_DATA_DIR to a folder holding "
                     f"mgsm_{lang}.tsv (question<TAB>answer) and mgsm_exemplars_en_zh.json, or, with a copy in "
                     "the Hugging Face cache, HF_HUB_OFFLINE=1")


def _load_from_hub(lang: str):
    import datasets

    if not _offline() and (why := hub_unreachable()) is not None:
        raise _no_data(lang, f"the Hugging Face hub ({hub_endpoint()}) is unreachable ({why})")
    try:
        return datasets.load_dataset(HUB_DATASET, lang)
    except Exception as e:  # noqa: BLE001 (whatever the hub client raises, the user's fix is the same)
        where = "HF_HUB_OFFLINE is set and the Hugging Face cache" if _offline() else "the Hugging Face hub"
        raise _no_data(lang, f"{where} could not give {HUB_DATASET} ({first_line(e)})") from e


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

    folder = _data_dir(lang)
    if folder is None:  # users with a network: the hub copy (test = 250 problems, train = exemplars)
        return _load_from_hub(lang)
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
