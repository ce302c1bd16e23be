"""Chinese -> English translation tasks for lm-eval: data, prompts, scoring glue.

colloquial_zh_en  this project's own set of everyday colloquial Chinese
                  (colloquial_zh_en.jsonl beside this file, one reference each)
wmt22_zh_en       WMT22 general test set, zh->en: 1,875 segments, two references. Read
                  from $WMT22_ZHEN_DIR (generaltest2022.zh-en.src.zh + .ref.*.en) when
                  set, else downloaded by sacrebleu (`sacrebleu -t wmt22 -l zh-en`).

The model thinks in <Thought> and writes the translation in <Output>; the filter keeps
the <Output> text (marco_eval.answers.extract_output_text) and that is what is scored:
corpus BLEU, chrF++ and TER with their sacrebleu signatures (marco_eval.translation),
plus COMET when $MARCO_EVAL_COMET_MODEL names a local COMET model.
"""

from __future__ import annotations

import os
from pathlib import Path

from marco_eval import translation
from marco_eval.jsonl import read_jsonl
from marco_eval.answers import output_text_filter  # noqa: F401 (the YAMLs use it)

COLLOQUIAL_PATH = Path(__file__).resolve().parent / "colloquial_zh_en.jsonl"
CATEGORIES = ("ecommerce_review", "internet_slang", "chat", "idiom_exaggeration", "workplace", "food_travel")
WMT22_ENV = "WMT22_ZHEN_DIR"
WMT22_SOURCE = "generaltest2022.zh-en.src.zh"
WMT22_REFERENCES = "generaltest2022.zh-en.ref.*.en"  # ref.A, ref.B: sorted by name

_OUTPUT_FORMAT = ("Think it over inside <Thought> and </Thought>, then write only the English "
                  "translation inside <Output> and </Output>.")
INSTRUCTION = {
    "colloquial": ("Translate the Chinese below into natural, everyday English. It is informal: it may use "
                   "internet slang, online-shopping talk, chat style or playful exaggeration. Carry over what "
                   "the speaker means and the tone, the way a native English speaker would put it, rather "
                   "than translating word for word. " + _OUTPUT_FORMAT),
    "wmt22": ("Translate the Chinese below into fluent, natural English that keeps its meaning, tone and "
              "every detail. " + _OUTPUT_FORMAT),
}


# --- data ----------------------------------------------------------------------------

def read_colloquial(path: Path = COLLOQUIAL_PATH) -> list[dict]:
    """The colloquial set as docs {"id", "category", "zh", "references"}; one-line errors."""
    docs, seen = [], set()
    for number, row in read_jsonl(path, ValueError, '{"id", "category", "zh", "en"} per line'):
        missing = [k for k in ("id", "category", "zh", "en") if not str(row.get(k) or "").strip()]
        if missing:
            raise ValueError(f"{path}:{number}: missing or empty {', '.join(missing)}")
        if row["category"] not in CATEGORIES:
            raise ValueError(f"{path}:{number}: category {row['category']!r} is not one of {', '.join(CATEGORIES)}")
        if row["id"] in seen:
            raise ValueError(f"{path}:{number}: duplicate id {row['id']!r}")
        seen.add(row["id"])
        docs.append({"id": row["id"], "category": row["category"], "zh": row["zh"], "references": [row["en"]]})
    return docs


def read_wmt22_dir(folder: Path) -> list[dict]:
    """WMT22 zh->en from plain-text files: one segment per line, references line-aligned."""
    source = folder / WMT22_SOURCE
    references = sorted(folder.glob(WMT22_REFERENCES))
    if not source.is_file() or not references:
        raise FileNotFoundError(f"{WMT22_ENV}={folder} must hold {WMT22_SOURCE} and {WMT22_REFERENCES}")
    return _segments(source, references)


def _segments(source: Path, references: list[Path]) -> list[dict]:
    sources = source.read_text(encoding="utf-8").splitlines()
    streams = [p.read_text(encoding="utf-8").splitlines() for p in references]
    for path, stream in zip(references, streams):
        if len(stream) != len(sources):
            raise ValueError(f"{path} has {len(stream)} lines, {source} has {len(sources)}: they must be line-aligned")
    return [{"id": i, "category": "wmt22", "zh": zh, "references": [s[i] for s in streams]}
            for i, zh in enumerate(sources)]


def _wmt22_from_sacrebleu() -> list[dict]:
    """Users with a network: sacrebleu's copy of the same data (every reference, not only A)."""
    from sacrebleu.dataset import DATASETS

    data = DATASETS["wmt22"]
    try:
        files, fields = data.get_files("zh-en"), data.fieldnames("zh-en")
    except OSError as e:
        raise ConnectionError(f"downloading WMT22 with sacrebleu failed ({e}); offline, set {WMT22_ENV} "
                              f"to a folder holding {WMT22_SOURCE} and its references") from e
    references = sorted((f, Path(p)) for f, p in zip(fields, files) if f.startswith("ref:"))
    return _segments(Path(files[fields.index("src")]), [p for _, p in references])


def _dataset(docs: list[dict]):
    import datasets

    if os.environ.get(translation.COMET_MODEL_ENV):
        translation.check_comet()  # fail now, not after hours of generation
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(docs)})


def load_colloquial_zh_en(**_ignored):
    return _dataset(read_colloquial())


def load_wmt22_zh_en(**_ignored):
    value = os.environ.get(WMT22_ENV)
    if not value:
        return _dataset(_wmt22_from_sacrebleu())
    folder = Path(value).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{WMT22_ENV}={value} is not a directory; point it at the folder holding {WMT22_SOURCE}")
    return _dataset(read_wmt22_dir(folder))


# --- prompts -------------------------------------------------------------------------

def _prompt(doc: dict, kind: str) -> str:
    return f"{INSTRUCTION[kind]}\n\nChinese: {doc['zh'].strip()}"


def doc_to_text_colloquial(doc: dict) -> str:
    return _prompt(doc, "colloquial")


def doc_to_text_wmt22(doc: dict) -> str:
    return _prompt(doc, "wmt22")


def doc_to_target(doc: dict) -> str:
    return doc["references"][0]


# --- scoring: per sentence an item, per corpus a score (lm-eval's aggregation hook) ---

def process_results(doc: dict, results: list[str]) -> dict:
    """Every metric gets the same (references, hypothesis) item; the aggregations score
    the corpus. The signature entries are strings: lm-eval stores them in the results
    JSON beside the scores and prints them in its table."""
    item = (tuple(doc["references"]), results[0] or "")
    out = {}
    for name in translation.METRICS:
        out[name] = item
        out[f"{name}_signature"] = item
    if os.environ.get(translation.COMET_MODEL_ENV):
        out["comet"] = (doc["zh"], *item)
    return out


def bleu(items):
    return translation.corpus_score("bleu", items)


def chrfpp(items):
    return translation.corpus_score("chrf++", items)


def ter(items):
    return translation.corpus_score("ter", items)


def bleu_signature(items):
    return translation.corpus_signature("bleu", items)


def chrfpp_signature(items):
    return translation.corpus_signature("chrf++", items)


def ter_signature(items):
    return translation.corpus_signature("ter", items)


def comet(items):
    sources, references, hypotheses = zip(*items)
    return translation.comet_score(sources, hypotheses, references)
