"""SFT data: read each source, filter it (counting every drop), mix by weight, make conversations.

Source formats (one reader each, a local .json/.jsonl/.parquet/.csv file or a hub dataset id):

    marco   {"instruction", "response"}: Marco-o1's CoT rows; response "<Thought>…</Thought><Output>…</Output>"
    openo1  {"instruction", "output"}: Open-O1 CoT rows, the same tags in "output"
    alpaca  {"instruction", "input", "output"}: instruction following; "input" joins the prompt
    synth   {"instruction", "response", ...provenance}: rows written by `marco-eval synth`

Filters, in order, each counted per source: `malformed` (a field missing or empty), `tags`
(CoT sources only: exactly one Thought block then one closed Output block, both non-empty),
`length` (response or instruction outside the character bounds), `duplicate` (the same
normalised instruction, or instruction + response, seen before in any source), and
`overlong` (more tokens than the training sequence length, when sft.py passes a check:
a truncated CoT would teach answers that never reach their Output).

The merged dataset is TRL's conversational prompt/completion shape — prompt = [system?,
user], completion = [assistant] — so the trainer puts the loss on the completion only.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from marco_eval.errors import DataError, InputError, first_line
from marco_eval.jsonl import read_json_rows


@dataclass(frozen=True)
class Format:
    prompt: str  # field holding the instruction
    response: str  # field holding the answer
    extra_input: str | None = None  # Alpaca's optional "input", appended to the prompt
    cot: bool = True  # responses must carry Thought/Output tags


FORMATS = {
    "marco": Format("instruction", "response"),
    "openo1": Format("instruction", "output"),
    "alpaca": Format("instruction", "output", extra_input="input", cot=False),
    "synth": Format("instruction", "response"),
}
DEDUP_MODES = ("instruction", "pair", "off")
LOCAL_SUFFIXES = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


@dataclass
class SourceConfig:
    path: str  # local file, or a Hugging Face dataset id
    format: str = "marco"  # marco | openo1 | alpaca | synth
    name: str | None = None  # label in the counts (default: the file stem or dataset id)
    weight: float = 1.0  # rows used = weight x rows kept: 2.0 repeats each row twice, 0.5 samples half
    split: str = "train"  # hub datasets
    subset: str | None = None  # hub dataset config name
    limit: int | None = None  # read at most this many rows (before filtering)


@dataclass
class FilterConfig:
    require_tags: bool = True  # CoT sources: well-formed <Thought>…</Thought><Output>…</Output>
    min_response_chars: int = 16
    max_response_chars: int = 40000
    max_instruction_chars: int = 8000
    dedup: str = "instruction"  # instruction | pair | off
    drop_overlong: bool = True  # drop rows longer than max_length tokens instead of truncating them (sft.py)


@dataclass
class Row:
    instruction: str
    response: str
    source: str


@dataclass
class SourceCounts:
    read: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: {"malformed": 0, "tags": 0, "length": 0, "duplicate": 0, "overlong": 0})
    kept: int = 0
    used: int = 0  # after the weight


# ---------------------------------------------------------------------- reading
def source_label(src: SourceConfig) -> str:
    return src.name or (Path(src.path).stem if looks_local(src.path) else src.path)


def looks_local(path: str) -> bool:
    p = Path(path).expanduser()
    return p.exists() or path.startswith((".", "/", "~")) or p.suffix in LOCAL_SUFFIXES


def load_records(src: SourceConfig) -> list[dict]:
    """Raw rows of a source: a local file, else a hub dataset (which needs a network)."""
    path = Path(src.path).expanduser()
    if looks_local(src.path):
        if not path.is_file():
            raise DataError(f"data source {src.path} does not exist; fix the path (relative paths start at the current directory)")
        kind = LOCAL_SUFFIXES.get(path.suffix)
        if kind is None:
            raise InputError(f"data source {src.path}: use a .json, .jsonl, .parquet or .csv file")
        if kind == "json":
            rows = read_json_rows(path)
        else:
            import datasets

            rows = datasets.load_dataset(kind, data_files=str(path), split="train").to_list()
    else:
        rows = load_hub(src)
    return rows[: src.limit] if src.limit is not None else rows


def load_hub(src: SourceConfig) -> list[dict]:
    """The rows of a hub dataset. What the user can fix is one line naming the source: no
    network, an unknown or gated id (OSError, datasets' own errors), a subset or split the
    dataset lacks; any other error is a bug and raises as it is."""
    import datasets
    from datasets.exceptions import DatasetsError

    split = src.split if src.limit is None else f"{src.split}[:{src.limit}]"
    try:
        return datasets.load_dataset(src.path, src.subset, split=split).to_list()
    except (OSError, DatasetsError) as e:
        raise InputError(f"data source {src.path!r}: could not load it from the Hugging Face hub ({first_line(e)}); "
                         f"check the id, or download it and give a local file path") from None
    except ValueError:  # how datasets reports a split or subset it lacks; a bug may raise one too
        if (wrong := missing_subset_or_split(src)) is None:
            raise
        raise InputError(f"data source {src.path!r}: {wrong}") from None


def missing_subset_or_split(src: SourceConfig) -> str | None:
    """What is wrong with the source's subset or split, asked of the hub (None: both exist)."""
    import datasets

    subsets = datasets.get_dataset_config_names(src.path)
    if src.subset is not None and src.subset not in subsets:
        return f"subset={src.subset!r} is not one of its subsets ({', '.join(subsets)}); fix `subset:`"
    splits = datasets.get_dataset_split_names(src.path, src.subset)
    if src.split.split("[")[0] not in splits:  # a slice (train[:100]) is datasets' business
        return f"split={src.split!r} is not one of its splits ({', '.join(splits)}); fix `split:`"
    return None


def to_row(record: dict, fmt: Format, label: str) -> Row | None:
    """A source record in our shape, or None when a field is missing or empty."""
    prompt, response = record.get(fmt.prompt), record.get(fmt.response)
    if not isinstance(prompt, str) or not isinstance(response, str) or not prompt.strip() or not response.strip():
        return None
    extra = record.get(fmt.extra_input) if fmt.extra_input else None
    if isinstance(extra, str) and extra.strip():
        prompt = f"{prompt.strip()}\n\n{extra.strip()}"
    return Row(prompt.strip(), response.strip(), label)


# ---------------------------------------------------------------------- filters
_TAGGED = re.compile(r"\A<Thought>(?P<thought>.*?)</Thought>\s*<Output>(?P<output>.*?)</Output>\Z", re.S)


def well_formed(response: str) -> bool:
    """One Thought block, then one closed Output block, both with content, nothing around them."""
    if any(response.count(tag) != 1 for tag in ("<Thought>", "</Thought>", "<Output>", "</Output>")):
        return False
    match = _TAGGED.match(response.strip())
    return bool(match and match["thought"].strip() and match["output"].strip())


def length_ok(row: Row, f: FilterConfig) -> bool:
    return (f.min_response_chars <= len(row.response) <= f.max_response_chars
            and len(row.instruction) <= f.max_instruction_chars)


def dedup_key(row: Row, mode: str) -> str | None:
    if mode == "off":
        return None
    instruction = " ".join(row.instruction.lower().split())
    return instruction if mode == "instruction" else instruction + "\x00" + " ".join(row.response.split())


TooLong = Callable[[Row], bool]


def read_source(src: SourceConfig, filters: FilterConfig, seen: set[str],
                too_long: TooLong | None = None) -> tuple[list[Row], SourceCounts]:
    """Rows of one source that pass every filter; `seen` carries dedup keys across sources."""
    if src.format not in FORMATS:
        raise InputError(f"data source {src.path}: format={src.format!r}; use one of {', '.join(FORMATS)}")
    fmt, label, counts = FORMATS[src.format], source_label(src), SourceCounts()
    records = load_records(src)
    counts.read = len(records)
    rows = []
    for record in records:
        row = to_row(record, fmt, label)
        if row is None:
            counts.dropped["malformed"] += 1
        elif fmt.cot and filters.require_tags and not well_formed(row.response):
            counts.dropped["tags"] += 1
        elif not length_ok(row, filters):
            counts.dropped["length"] += 1
        elif (key := dedup_key(row, filters.dedup)) is not None and key in seen:
            counts.dropped["duplicate"] += 1
        elif too_long is not None and too_long(row):
            counts.dropped["overlong"] += 1
        else:
            if key is not None:
                seen.add(key)
            rows.append(row)
    if records and counts.dropped["malformed"] == len(records):
        raise InputError(f"data source {src.path}: no row has non-empty {fmt.prompt!r} and {fmt.response!r} "
                         f"fields; is format={src.format} right? (formats: {', '.join(FORMATS)})")
    counts.kept = len(rows)
    return rows, counts


# ---------------------------------------------------------------------- mixing
def apply_weight(rows: list[Row], weight: float, rng: random.Random) -> list[Row]:
    """round(weight x len(rows)) rows: whole copies, then a seeded sample for the fraction."""
    if weight < 0:
        raise InputError(f"weight={weight}: must be >= 0")
    target = round(weight * len(rows))
    whole, rest = divmod(target, len(rows)) if rows else (0, 0)
    return rows * whole + rng.sample(rows, rest)


def build_mix(sources: list[SourceConfig], filters: FilterConfig, seed: int,
              too_long: TooLong | None = None) -> tuple[list[Row], dict[str, SourceCounts]]:
    """Every source read, filtered and weighted, then shuffled together (seeded)."""
    if not sources:
        raise InputError("no data sources; list at least one under `data:` in the config")
    if filters.dedup not in DEDUP_MODES:
        raise InputError(f"filters.dedup={filters.dedup!r}: use one of {', '.join(DEDUP_MODES)}")
    rng, seen = random.Random(seed), set()
    mixed, counts = [], {}
    for src in sources:
        label = source_label(src)
        if label in counts:
            raise InputError(f"two data sources are both named {label!r}; give one a `name:`")
        rows, counts[label] = read_source(src, filters, seen, too_long)
        used = apply_weight(rows, src.weight, rng)
        counts[label].used = len(used)
        mixed += used
    rng.shuffle(mixed)
    return mixed, counts


def conversation(row: Row, system_prompt: str) -> dict:
    """TRL's conversational prompt/completion example for one row."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return {"prompt": system + [{"role": "user", "content": row.instruction}],
            "completion": [{"role": "assistant", "content": row.response}]}


def counts_table(counts: dict[str, SourceCounts]) -> str:
    head = (f"{'source':<24} {'read':>7} {'malformed':>9} {'tags':>6} {'length':>6} {'dup':>6} {'overlong':>8} "
            f"{'kept':>7} {'used':>7}")
    lines = [head]
    for label, c in counts.items():
        d = c.dropped
        lines.append(f"{label[:24]:<24} {c.read:>7} {d['malformed']:>9} {d['tags']:>6} {d['length']:>6} "
                     f"{d['duplicate']:>6} {d['overlong']:>8} {c.kept:>7} {c.used:>7}")
    return "\n".join(lines)
