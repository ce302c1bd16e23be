"""Synthetic CoT rows from our own MCTS: `marco-eval synth`.

For each problem with a known answer the search runs exactly as in evaluation (the same
prompt, chat template, system prompt and search config as `marco_mcts`), many problems in
lock-step. Of all its rollouts we keep the highest-reward ones whose answer is correct:
the answer must be marked (an Output block, \\boxed{} or "the answer is", read by
marco_eval.answers in strict mode) and the rollout must have finished (not cut by a token
cap). A kept path is rewritten into Marco-o1's row shape:

    {"instruction": <the user prompt>, "response": "<Thought>\\n…\\n</Thought>\\n<Output>…</Output>",
     "source": "marco-eval-synth", "problem_id", "lang", "answer", "reward", "rank",
     "rollouts", "correct_rollouts", "model", "config", "seed"}

Rows are appended to OUT one line per kept path as each problem finishes, and every
finished problem (kept or not) gets a line in OUT.progress.jsonl, so a killed run resumes
where it stopped: run the same command again.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from marco_eval.answers import answers_match, extract_answer
from marco_eval.errors import InputError
from marco_eval.search import Search
from marco_eval.jsonl import append_jsonl, read_json_rows, repair_tail
from marco_eval.settings import parse_overrides
from marco_eval.train.problems import Problem, mgsm_module

SOURCE = "marco-eval-synth"
CUT = ("length", "budget")  # a rollout that ran into a token cap never finished its answer


@dataclass
class Candidate:
    text: str  # the completion as the model wrote it (cut before the task's stop string)
    reward: float
    rollout: int  # index in the tree's rollouts


@dataclass
class SynthStats:
    problems: int = 0  # asked for
    already_done: int = 0  # finished in an earlier run (resume)
    searched: int = 0
    solved: int = 0  # problems with at least one kept path
    rows: int = 0
    rollouts: int = 0
    correct_rollouts: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0
    per_problem: list = field(default_factory=list, repr=False)


# ---------------------------------------------------------------------- prompts
def task_prompt(problem: Problem) -> str:
    """The MGSM task's user prompt for this problem: synthetic rows teach the evaluated format."""
    doc = {"question": problem.question}
    mgsm = mgsm_module()
    return mgsm.doc_to_text_zh(doc) if problem.lang == "zh" else mgsm.doc_to_text_en(doc)


# ---------------------------------------------------------------------- choosing paths
def rollout_text(search: Search, index: int) -> str:
    """Everything the model generated on one rollout (its node's path + continuation)."""
    tree = search.tree
    return search.cut_at_until(search.codec.decode(tree.completion_ids(tree.rollouts[index])))


def correct_candidates(search: Search, gold: str) -> list[Candidate]:
    """Finished rollouts whose marked answer equals `gold`, highest reward first."""
    out = []
    for i, r in enumerate(search.tree.rollouts):
        if r.finish in CUT:
            continue
        text = rollout_text(search, i)
        if answers_match(extract_answer(text, "strict"), gold):
            out.append(Candidate(text, r.reward, i))
    return sorted(out, key=lambda c: (-c.reward, c.rollout))


_THOUGHT = re.compile(r"<Thought>(.*?)(?:</Thought>|(?=<Output>)|\Z)", re.S | re.I)
_OUTPUT = re.compile(r"<Output>(.*?)(?:</Output>|\Z)", re.S | re.I)
_TAG = re.compile(r"</?(?:Thought|Output)>", re.I)


def marco_response(text: str, answer: str) -> str | None:
    """The text as "<Thought>\\n…\\n</Thought>\\n<Output>…</Output>", or None if it has no reasoning.

    A model that skipped the tags has its whole text as the thought and the answer as Output."""
    thought_match, outputs = _THOUGHT.search(text), _OUTPUT.findall(text)
    if thought_match:
        thought = thought_match.group(1)
    else:
        thought = text[: text.lower().find("<output>")] if outputs else text
    thought = _TAG.sub("", thought).strip()
    output = _TAG.sub("", outputs[-1]).strip() if outputs else ""
    if not thought:
        return None
    return f"<Thought>\n{thought}\n</Thought>\n<Output>{output or answer}</Output>"


def rows_for(problem: Problem, search: Search, keep: int, provenance: dict) -> tuple[list[dict], int]:
    """Up to `keep` distinct correct paths as rows, and how many rollouts were correct."""
    candidates = correct_candidates(search, problem.answer)
    rows, seen = [], set()
    for c in candidates:
        response = marco_response(c.text, problem.answer)
        if response is None or response in seen:
            continue
        seen.add(response)
        rows.append({"instruction": task_prompt(problem), "response": response, "source": SOURCE,
                     "problem_id": problem.id, "lang": problem.lang, "answer": problem.answer,
                     "reward": round(c.reward, 6), "rank": len(rows), "rollouts": len(search.tree.rollouts),
                     "correct_rollouts": len(candidates), **provenance})
        if len(rows) == keep:
            break
    return rows, len(candidates)


# ---------------------------------------------------------------------- resumable output
def progress_path(out: Path) -> Path:
    return out.with_name(out.name + ".progress.jsonl")


def finished_ids(out: Path, settings: dict) -> set[str]:
    """Problems finished by an earlier run into the same files (made with the same settings)."""
    progress = progress_path(out)
    for path in (out, progress):
        repair_tail(path)
    if not progress.is_file():
        if out.is_file() and out.stat().st_size:
            raise InputError(f"{out} exists but {progress.name} does not; give a new --out (synth appends and resumes)")
        return set()
    lines = read_json_rows(progress)
    if not lines or lines[0].get("settings") != settings:
        raise InputError(f"{out} was made with other settings ({progress.name}, first line); "
                         f"use another --out, or delete both files to start over")
    done = {line["problem_id"] for line in lines[1:]}
    if out.is_file():  # a row written just before a kill, before its progress line
        done |= {row["problem_id"] for row in read_json_rows(out)}
    return done


def synthesize(problems: list[Problem], engine, out: str | Path, *, keep: int = 1, max_gen_toks: int = 1024,
               settings: dict | None = None, log: Callable[[str], None] = print) -> SynthStats:
    """Search every problem not finished yet; append kept rows and progress as each one ends.

    Args:
        problems: questions with known answers.
        engine: the evaluation engine (engine.Engine): prompts, searches and the driver
            (or the data-parallel replicas) exactly as `marco_mcts` evaluates.
        out: the rows file (JSONL, appended); OUT.progress.jsonl beside it.
        keep: correct paths kept per problem, highest reward first.
        max_gen_toks: the token budget of each search.
        settings: what made the files; a resumed run must give the same.
        log: one line per finished problem.
    Returns:
        Counts and per-problem progress lines.
    """
    if keep < 1:
        raise InputError(f"keep={keep}: keep at least one path per problem")
    out, settings = Path(out), dict(settings or {})
    out.parent.mkdir(parents=True, exist_ok=True)
    done = finished_ids(out, settings)
    if not progress_path(out).is_file():
        append_jsonl(progress_path(out), {"settings": settings})
    todo = [p for p in problems if p.id not in done]
    stats = SynthStats(problems=len(problems), already_done=len(problems) - len(todo))
    searches = [engine.make_search(task_prompt(p), until=["</Output>"], max_gen_toks=max_gen_toks) for p in todo]
    started = time.perf_counter()

    def on_done(i: int, result) -> None:
        problem, search = todo[i], searches[i]
        rows, n_correct = rows_for(problem, search, keep, settings)
        for row in rows:
            append_jsonl(out, row)
        line = {"problem_id": problem.id, "rollouts": len(search.tree.rollouts), "correct_rollouts": n_correct,
                "kept": len(rows), "generated_tokens": result.generated_tokens,
                "seconds": round(time.perf_counter() - started, 1)}
        append_jsonl(progress_path(out), line)
        stats.searched += 1
        stats.solved += bool(rows)
        stats.rows += len(rows)
        stats.rollouts += line["rollouts"]
        stats.correct_rollouts += n_correct
        stats.generated_tokens += result.generated_tokens
        stats.per_problem.append(line)
        searches[i], result.tree = None, None  # free the tree
        log(f"[{stats.searched}/{len(todo)}] {problem.id}: {n_correct}/{line['rollouts']} rollouts correct, "
            f"{len(rows)} kept ({stats.rows} rows so far, {line['seconds']} s)")

    engine.run(searches, on_done=on_done)
    stats.seconds = round(time.perf_counter() - started, 1)
    return stats


# ---------------------------------------------------------------------- command line
def load_problems(args) -> list[Problem]:
    from marco_eval.train import problems as gen

    if args.problem_file:
        found = gen.read_problem_file(args.problem_file)
    else:
        found = gen.generate(args.problems, seed=args.problem_seed, langs=tuple(args.langs.split(",")))
    eval_questions = gen.mgsm_questions()
    kept, dropped = gen.drop_eval_overlap(found, eval_questions)
    if eval_questions is None:
        print("marco-eval synth: MGSM_DATA_DIR is not set, so problems were not checked against MGSM", file=sys.stderr)
    else:
        print(f"marco-eval synth: {dropped} of {len(found)} problems equal an MGSM question and were dropped",
              file=sys.stderr)
    if args.write_problems:
        gen.write_problems(kept, args.write_problems)
    return kept


def main(args) -> int:
    import json

    from marco_eval.engine import Engine

    overrides = parse_overrides(args.set or [])
    engine = Engine.from_settings(args.config, pretrained=args.model, **overrides)  # checks settings; loads lazily
    problems = load_problems(args)  # before the model loads: bad input fails in a second
    settings = {"model": args.model, "config": args.config, "overrides": overrides,
                "seed": engine.search_config.seed, "max_gen_toks": args.max_gen_toks, "keep": args.keep}
    stats = synthesize(problems, engine, args.out, keep=args.keep, max_gen_toks=args.max_gen_toks,
                       settings=settings, log=lambda line: print(line, file=sys.stderr, flush=True))
    summary = {k: v for k, v in vars(stats).items() if k != "per_problem"}
    summary.update(out=str(args.out), rows_in_file=len(read_json_rows(args.out)) if Path(args.out).is_file() else 0)
    print(json.dumps(summary))
    return 0
