"""A bank of the model's own solutions to GSM8K-train problems: `marco-eval bank`.

Every problem is sampled through the engine exactly as MGSM is evaluated (the MGSM-En
zero-shot prompt, the model's chat template and system prompt, the config's temperature
and top-p, `</Output>` as the stop string), and every sample is kept, right or wrong:

    {"problem_id", "index", "split", "gold",
     "samples": [{"token_ids", "answer", "correct", "finish", "tokens", "reward"}, ...]}

`token_ids` are the generated ids (the text is `codec.decode(token_ids)`, cut at the stop
string); `answer` is what MGSM's flexible filter reads; `reward` is the search's rollout
reward (the seed's confidence). `index` is the problem's line in the GSM8K file, which
holds its question: the bank does not copy GSM8K's text. `split` is "train" or "validation", fixed per problem by
a hash of its id (VALIDATION_SHARE of problems), so a growing bank never moves a problem
between splits. The verifier (train/verifier.py) and rejection-sampling SFT read it.

The file opens with a settings line; each finished problem is appended as one line, so a
killed run resumes where it stopped with the same command; `--merge PART` appends a bank
sampled elsewhere (another --start slice, the same settings). `--pack` gzips it beside itself
(OUT.gz) for committing; a run whose OUT is missing starts from OUT.gz, so the committed
bank grows across sessions with the same command. GSM8K test problems (MGSM is
their translation) must never enter: problems equal to an MGSM question are dropped.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from marco_eval.answers import answers_match, extract_answer, normalize_number
from marco_eval.errors import InputError
from marco_eval.jsonl import append_jsonl, repair_tail
from marco_eval.train.problems import Problem, drop_eval_overlap, mgsm_questions, problem_id
from marco_eval.train.synth import task_prompt

VALIDATION_SHARE = 0.2
STOP = "</Output>"
DEFAULT_GSM8K = Path(__file__).resolve().parents[3] / "shared" / "data" / "gsm8k" / "train.jsonl"


@dataclass(frozen=True)
class BankProblem:
    problem: Problem
    index: int  # line number in the GSM8K file, from 0: the bank's order


def split_of(pid: str) -> str:
    """'validation' for a fixed VALIDATION_SHARE of problem ids, else 'train'."""
    bucket = int(hashlib.sha256(pid.encode("utf-8")).hexdigest()[:8], 16) / 2**32
    return "validation" if bucket < VALIDATION_SHARE else "train"


def gsm8k_file(path: str | Path | None = None) -> Path:
    """The GSM8K train file: `path`, else $GSM8K_DATA_DIR/train.jsonl, else ../shared beside the checkout."""
    if path is None:
        folder = os.environ.get("GSM8K_DATA_DIR")
        path = Path(folder).expanduser() / "train.jsonl" if folder else DEFAULT_GSM8K
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no GSM8K train file at {path}; pass --data PATH or set GSM8K_DATA_DIR "
                         f"to the folder holding train.jsonl")
    return path


def read_gsm8k(path: str | Path) -> list[BankProblem]:
    """GSM8K rows ({"question", "answer": "... #### N"}) as problems with canonical answers."""
    out = []
    with open(path, encoding="utf-8") as f:
        for index, line in enumerate(f):
            if not line.strip():
                continue
            row = json.loads(line)
            final = row["answer"].rsplit("####", 1)[-1].strip().replace(",", "")
            gold = normalize_number(final)
            if gold is None:
                raise InputError(f"{path}:{index + 1}: final answer {final!r} is not a number")
            question = row["question"].strip()
            out.append(BankProblem(Problem(problem_id("en", "gsm8k", question), "en", question, gold, "gsm8k"), index))
    return out


# ---------------------------------------------------------------------- reading a bank
def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def packed_path(path: str | Path) -> Path:
    """Where `--pack` puts a bank for committing: beside it, .gz added."""
    return Path(path).with_name(Path(path).name + ".gz")


def read_bank(path: str | Path) -> tuple[dict, list[dict]]:
    """(settings, problem records) of a bank file, plain or gzipped (a plain path that is
    missing reads its packed copy); a torn last line is skipped."""
    path = Path(path)
    if not path.is_file() and packed_path(path).is_file():
        path = packed_path(path)
    if not path.is_file():
        raise InputError(f"no bank at {path}; make one with `marco-eval bank --out {path}`")
    with _open_text(path) as f:
        lines = f.read().split("\n")
    if lines and lines[-1]:  # no newline after it: a kill mid-write
        lines = lines[:-1]
    rows = [json.loads(line) for line in lines if line.strip()]
    if not rows or "settings" not in rows[0]:
        raise InputError(f"{path}: the first line must be the bank's settings; is this a bank file?")
    return rows[0]["settings"], rows[1:]


def samples(records: list[dict], split: str | None = None) -> Iterator[tuple[dict, dict]]:
    """(problem record, sample) for every sample, optionally of one split."""
    for record in records:
        if split is None or record["split"] == split:
            for sample in record["samples"]:
                yield record, sample


# ---------------------------------------------------------------------- sampling
def sample_record(item: BankProblem, search, answer_of: Callable[[str], str | None]) -> dict:
    """The bank line of one finished search: its every rollout, labelled."""
    tree, out = search.tree, []
    for rollout in tree.rollouts:
        ids = tree.completion_ids(rollout)
        answer = answer_of(search.cut_at_until(search.codec.decode(ids)))
        out.append({"token_ids": ids, "answer": answer, "correct": answers_match(answer, item.problem.answer),
                    "finish": rollout.finish, "tokens": len(ids), "reward": round(rollout.reward, 6)})
    p = item.problem
    return {"problem_id": p.id, "index": item.index, "split": split_of(p.id), "gold": p.answer, "samples": out}


def build_bank(items: list[BankProblem], engine, out: str | Path, *, settings: dict, max_gen_toks: int = 1024,
               log: Callable[[str], None] = print) -> int:
    """Sample every problem not in `out` yet; append one line per problem as it finishes.

    Args:
        items: problems in bank order.
        engine: the evaluation engine (engine.Engine) with a sampling config.
        out: the bank (JSON lines, appended); created with `settings` as its first line.
        settings: what makes the samples; a resumed bank must have been made with the same.
        max_gen_toks: token budget per sample, as MGSM's task gives.
        log: one line per finished problem.
    Returns:
        How many problems this call sampled.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.is_file() and packed_path(out).is_file():  # a committed bank: go on from it
        from marco_eval.files import write_atomic

        write_atomic(out, gzip.decompress(packed_path(out).read_bytes()))
    repair_tail(out)
    if out.is_file() and out.stat().st_size:
        had, records = read_bank(out)
        if had != settings:
            raise InputError(f"{out} was made with other settings ({had}); use another --out or the same settings")
        done = {r["problem_id"] for r in records}
    else:
        append_jsonl(out, {"settings": settings})
        done = set()
    todo = [it for it in items if it.problem.id not in done]
    searches = [engine.make_search(task_prompt(it.problem), until=[STOP], max_gen_toks=max_gen_toks) for it in todo]
    answer_of = lambda text: extract_answer(text, "flexible")  # noqa: E731: MGSM's reported filter
    started, finished = time.perf_counter(), 0

    def on_done(i: int, result) -> None:
        nonlocal finished
        record = sample_record(todo[i], searches[i], answer_of)
        append_jsonl(out, record)
        finished += 1
        searches[i], result.tree = None, None  # free the tree
        right = sum(s["correct"] for s in record["samples"])
        tokens = sum(s["tokens"] for s in record["samples"])
        log(f"[{len(done) + finished}/{len(items)}] {record['problem_id']}: {right}/{len(record['samples'])} correct, "
            f"{tokens} tokens, {time.perf_counter() - started:.0f} s")

    engine.run(searches, on_done=on_done)
    return finished


def merge(into: str | Path, part: str | Path) -> int:
    """Append the problems of bank `part` that `into` lacks (one process per core, or per
    machine, each sampling its own --start slice, then one bank); returns how many.
    Both must have been made with the same settings."""
    ours, records = read_bank(into)
    theirs, more = read_bank(part)
    if ours != theirs:
        raise InputError(f"{part} was made with other settings ({theirs}) than {into} ({ours}); "
                         f"only banks of the same command (but --start/--problems) merge")
    repair_tail(into)
    have = {r["problem_id"] for r in records}
    new = [r for r in more if r["problem_id"] not in have]
    for record in new:
        append_jsonl(into, record)
    return len(new)


def pack(src: str | Path, dst: str | Path) -> int:
    """Gzip a bank for committing (atomically); returns its problem count."""
    from marco_eval.files import write_atomic

    settings, records = read_bank(src)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in [{"settings": settings}, *records])
    write_atomic(dst, gzip.compress(text.encode("utf-8"), mtime=0))
    return len(records)


def main(args) -> int:
    from marco_eval.engine import Engine
    from marco_eval.settings import parse_overrides

    if args.pack:
        print(f"{pack(args.out, args.pack)} problems packed into {args.pack}")
        return 0
    if args.merge:
        print(f"{merge(args.out, args.merge)} problems of {args.merge} appended to {args.out}")
        return 0
    overrides = parse_overrides(args.set or [])
    engine = Engine.from_settings(args.config, pretrained=args.model, **overrides)
    if engine.search_config.strategy != "sampling":
        raise InputError(f"--config {args.config}: a bank holds independent samples; use a sampling config "
                         f"such as self_consistency")
    items = read_gsm8k(gsm8k_file(args.data))
    eval_questions = mgsm_questions()
    if eval_questions is None:
        raise InputError("MGSM_DATA_DIR is not set, so GSM8K problems cannot be checked against MGSM; "
                         "point it at the folder holding mgsm_en.tsv and mgsm_zh.tsv")
    kept, dropped = drop_eval_overlap([it.problem for it in items], eval_questions)
    kept_ids = {p.id for p in kept}
    items = [it for it in items if it.problem.id in kept_ids][args.start: args.start + args.problems]
    print(f"marco-eval bank: {dropped} GSM8K problems equal an MGSM question and were dropped; "
          f"{len(items)} asked for", file=sys.stderr)
    settings = {"model": args.model, "config": args.config, "overrides": overrides,
                "seed": engine.search_config.seed, "max_gen_toks": args.max_gen_toks}
    n = build_bank(items, engine, args.out, settings=settings, max_gen_toks=args.max_gen_toks,
                   log=lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps({"out": str(args.out), "sampled_now": n, "problems_in_bank": len(read_bank(args.out)[1])}))
    return 0
