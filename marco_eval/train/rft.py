"""Rejection-sampling fine-tuning rows (Yuan et al. 2023) from a bank: `marco-eval bank --rows`.

The model's own correct solutions to GSM8K-train problems (train/bank.py), kept only where
the answer is marked (an Output block, \\boxed{} or "the answer is": answers.extract_answer
in strict mode), the sample finished on its own (not cut by a token cap), and its reasoning
path is new for its problem: two samples that write the same sequence of equations are one
path, however differently they word it (the paper's gains grew with distinct paths, not
with samples). Each kept path becomes a Marco-o1 row, the MGSM-En prompt as instruction:

    {"instruction", "response": "<Thought>…</Thought>\\n<Output>…</Output>", "source": "gsm8k-rft",
     "problem_id", "index", "split", "answer", "reward"}

Rows are written to a file that `marco-eval train` reads with `format: synth`. They quote
GSM8K's questions, so they are made where the data is and never committed.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from marco_eval.answers import answers_match, extract_answer
from marco_eval.jsonl import write_jsonl_atomic
from marco_eval.train.bank import STOP, gsm8k_file, read_bank, read_gsm8k
from marco_eval.train.synth import marco_response, task_prompt

SOURCE = "gsm8k-rft"
CUT = ("length", "budget")  # a sample that ran into a token cap never finished its answer
_NUMBER = r"-?\d[\d,]*(?:\.\d+)?"
_EQUATION = re.compile(rf"({_NUMBER}(?:\s*[-+*/×÷x]\s*{_NUMBER})+)\s*=\s*({_NUMBER})")


def reasoning_path(text: str) -> tuple[str, ...]:
    """The ordered equations a solution writes ("3*4=12", ...), spaces and thousands
    separators dropped; a solution with none is its own words, normalised."""
    steps = tuple(re.sub(r"[\s,]", "", f"{lhs}={rhs}").replace("×", "*").replace("÷", "/")
                  for lhs, rhs in _EQUATION.findall(text))
    return steps or (" ".join(text.lower().split()),)


def rft_rows(bank_path: str | Path, decode, data: str | Path | None = None, per_problem: int = 4,
             splits: tuple[str, ...] = ("train", "validation")) -> tuple[list[dict], Counter]:
    """Rows of distinct correct paths, at most `per_problem` per problem, and counts of why
    samples were dropped.

    Args:
        bank_path: the bank (plain or .gz).
        decode: token ids -> text (the bank's model's tokenizer, special tokens skipped).
        data: GSM8K train.jsonl holding the questions (default as `marco-eval bank`).
        per_problem: paths kept per problem, highest confidence reward first.
        splits: which of the bank's splits to use (the verifier's validation problems can
            be kept out of training by giving ("train",)).
    """
    _, records = read_bank(bank_path)
    problems = {it.index: it.problem for it in read_gsm8k(gsm8k_file(data))}
    rows, counts = [], Counter()
    for record in records:
        if record["split"] not in splits:
            continue
        problem, seen, kept = problems[record["index"]], set(), 0
        for sample in sorted(record["samples"], key=lambda s: -s["reward"]):
            counts["samples"] += 1
            text = decode(sample["token_ids"])
            text = text[: text.index(STOP)] if STOP in text else text
            why = ("wrong" if not answers_match(extract_answer(text, "strict"), problem.answer) else
                   "cut" if sample["finish"] in CUT else None)
            response = marco_response(text, problem.answer) if why is None else None
            if why is None and response is None:
                why = "no reasoning"
            if why is None and (reasoning_path(text) in seen or kept == per_problem):
                why = "same path" if reasoning_path(text) in seen else "enough paths"
            if why is not None:
                counts[why] += 1
                continue
            seen.add(reasoning_path(text))
            kept += 1
            rows.append({"instruction": task_prompt(problem), "response": response, "source": SOURCE,
                         "problem_id": problem.id, "index": record["index"], "split": record["split"],
                         "answer": problem.answer, "reward": sample["reward"]})
        counts["problems with a row"] += kept > 0
    counts["rows"] = len(rows)
    return rows, counts


def write_rows(bank_path: str | Path, out: str | Path, data: str | Path | None = None, per_problem: int = 4) -> Counter:
    """`marco-eval bank --out BANK --rows OUT`: the rows, written atomically; the counts."""
    from transformers import AutoTokenizer

    from marco_eval.models import resolve

    settings, _ = read_bank(bank_path)
    tokenizer = AutoTokenizer.from_pretrained(resolve(settings["model"]))
    rows, counts = rft_rows(bank_path, lambda ids: tokenizer.decode(ids, skip_special_tokens=True), data, per_problem)
    write_jsonl_atomic(out, rows)
    return counts
