"""A run's problems as the view page draws them: its tree files (tree_dir=), else its request
store's rollouts (store=, no texts), with the gold answers of lm-eval's samples.

Where a run folder keeps them, as `lm_eval --output_path RUN --log_samples` with
`tree_dir=RUN/trees,store=RUN/requests.jsonl` leaves them (and the committed runs under
results/ keep their store and samples):

    RUN/trees/{task}_{doc_id}_{repeat}_{index}.json   (or RUN itself, when it is the tree folder)
    RUN/requests.jsonl                                (or --store FILE)
    RUN/samples_<task>_*.jsonl, RUN/*/samples_<task>_*.jsonl   (or --samples FILE_OR_DIR)

Every judgement of right and wrong is `answers_match` against the samples' target, as the
report's "Find or pick" makes it, so the page's counts are the report's.
"""

from __future__ import annotations

from pathlib import Path

from marco_eval.answers import answers_match, normalize_number
from marco_eval.errors import InputError
from marco_eval.jsonl import read_jsonl
from marco_eval.treeview import TREE_NAME, load_tree

STORE_NAME = "requests.jsonl"
NODE_FIELDS = ("id", "parent", "visits", "value")
ROLLOUT_FIELDS = ("node", "reward")
QUESTION_CHARS = 160  # of the prompt's last lines, shown in the problem list


class ViewError(InputError):
    """A run folder the page cannot be made from; the message names the file and the fix."""


def tree_folder(run: Path) -> Path | None:
    """Where the run's tree files are: RUN/trees/, else RUN itself when it holds them."""
    return next((folder for folder in (run / "trees", run) if tree_files(folder)), None)


def tree_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.json") if TREE_NAME.match(p.name))


def samples_files(run: Path, given: Path | None) -> list[Path]:
    """The newest lm-eval samples file of each task: under --samples, else in the run folder or
    one level below it (and beside a tree folder given as the run)."""
    from marco_eval.judge.export import SAMPLES_NAME

    if given is not None:
        if not given.exists():
            raise ViewError(f"--samples {given} does not exist; give a samples_<task>_*.jsonl file or its folder")
        candidates = [given] if given.is_file() else list(given.rglob("samples_*.jsonl"))
    else:
        roots = [run, run.parent] if tree_folder(run) == run else [run]
        candidates = [p for root in roots for pattern in ("samples_*.jsonl", "*/samples_*.jsonl")
                      for p in root.glob(pattern)]
    newest: dict[str, tuple[str, Path]] = {}
    for path in candidates:
        if m := SAMPLES_NAME.match(path.name):
            newest[m["task"]] = max(newest.get(m["task"], ("", path)), (m["stamp"], path))
    return [newest[task][1] for task in sorted(newest)]


def gold_answers(files: list[Path]) -> dict[tuple[str, int], str]:
    """(task, doc_id) -> target, from every samples file (a target is the same under every filter)."""
    from marco_eval.judge.export import SAMPLES_NAME

    gold = {}
    for path in files:
        task = SAMPLES_NAME.match(path.name)["task"]
        for _, row in read_jsonl(path, ViewError, "an lm-eval samples file (--log_samples)"):
            target = row.get("target")
            if isinstance(row.get("doc_id"), int) and target not in (None, ""):
                gold[task, row["doc_id"]] = "\n".join(map(str, target)) if isinstance(target, list) else str(target)
    return gold


def judge(answer: str | None, gold: str | None) -> bool | None:
    """Right or wrong against a numeric gold answer; None when there is no gold or it is text."""
    if gold is None or normalize_number(gold) is None:
        return None
    return answers_match(answer, gold)


def question_of(prompt: str | None) -> str:
    """The prompt's last paragraph (the question sits last, after the instruction and any
    few-shot examples), on one line and clipped."""
    if not prompt:
        return ""
    last = prompt.strip().split("\n\n")[-1]
    text = " ".join(line.strip() for line in last.splitlines() if line.strip())
    return text if len(text) <= QUESTION_CHARS else text[: QUESTION_CHARS - 1] + "…"


def summary(task: str, doc_id: int, source: str, answer, gold, rollout_ok, nodes: int,
            tokens, question: str) -> dict:
    """One row of the problem list: what the filter reads (right, found) and what it shows."""
    right = judge(answer, gold)
    found = None if right is None else any(rollout_ok)
    return {"key": f"{task}/{doc_id}", "task": task, "doc": doc_id, "src": source,
            "gold": gold, "answer": answer, "right": right, "found": found, "rollouts": len(rollout_ok),
            "nodes": nodes, "tokens": tokens, "q": question}


def check_tree(path: Path, doc: dict) -> None:
    """The fields the page draws from, present in every node and rollout (one line if not)."""
    for kind, entries, fields in (("node", doc["nodes"], NODE_FIELDS), ("rollout", doc["rollouts"], ROLLOUT_FIELDS)):
        for i, entry in enumerate(entries):
            missing = [f for f in fields if not isinstance(entry, dict) or f not in entry]
            if missing:
                raise ViewError(f"{path}: {kind} {i} lacks {', '.join(missing)}; give tree files written with "
                                "tree_dir= (marco-eval tree check lists what is wrong)")
    ids = [n["id"] for n in doc["nodes"]]
    if ids != list(range(len(ids))) or any(r["node"] not in range(len(ids)) for r in doc["rollouts"]):
        raise ViewError(f"{path}: node ids are not 0..{len(ids) - 1} in order, or a rollout names no node; "
                        "give tree files written with tree_dir=")


def from_tree(path: Path, gold: dict) -> tuple[dict, dict]:
    """(list row, detail) of one tree file."""
    doc = load_tree(path)
    check_tree(path, doc)
    m = TREE_NAME.match(path.name)
    task, doc_id = m["task"], int(m["doc_id"])
    target = gold.get((task, doc_id))
    nodes, rollouts = doc["nodes"], doc["rollouts"]
    ok = [judge(r.get("answer"), target) for r in rollouts]
    detail = {
        "prompt": doc.get("prompt"), "answer_text": doc.get("answer_text"), "chosen": doc["chosen_path"],
        "parent": [n["parent"] for n in nodes], "visits": [n["visits"] for n in nodes],
        "value": [round(n["value"], 4) for n in nodes], "text": [n.get("action_text") for n in nodes],
        "label": [None] * len(nodes), "terminal": [int(bool(n.get("terminal"))) for n in nodes],
        "finish": [n.get("finish", "") for n in nodes], "reflections": [n.get("reflections", 0) for n in nodes],
        "r_node": [r["node"] for r in rollouts], "r_reward": [round(r["reward"], 4) for r in rollouts],
        "r_answer": [r.get("answer") for r in rollouts], "r_ok": ok, "r_text": [r.get("text") for r in rollouts],
        "r_finish": [r.get("finish", "") for r in rollouts],
        "r_tokens": [len(r.get("token_ids", [])) for r in rollouts],
    }
    row = summary(task, doc_id, "tree", doc.get("answer"), target, [bool(o) for o in ok], len(nodes),
                  doc.get("generated_tokens"), question_of(doc.get("prompt")))
    return row, detail


def from_store_record(record: dict, where: str, gold: dict) -> tuple[dict, dict]:
    """(list row, detail) of one store record: no texts, so the tree is the root, one node per
    simulation (or sample) and that simulation's rollouts under it."""
    task, doc_id = record["task"], record["doc_id"]
    rollouts = record.get("rollouts")
    if rollouts is None:
        raise ViewError(f"{where}: the record of {task} doc_id {doc_id} has no rollouts (a store written before "
                        "they were recorded); rerun with tree_dir= to see its search")
    target = gold.get((task, doc_id))
    simulations = sorted({r.get("simulation", 0) for r in rollouts})
    node_of = {s: i + 1 for i, s in enumerate(simulations)}
    rewards = [[r["reward"] for r in rollouts if r.get("simulation", 0) == s] for s in simulations]
    mean = [sum(rs) / len(rs) for rs in rewards]
    ok = [judge(r.get("answer"), target) for r in rollouts]
    every = [r["reward"] for r in rollouts]
    detail = {
        "prompt": None, "answer_text": None, "chosen": [],
        "parent": [None, *[0] * len(simulations)], "visits": [len(rollouts), *map(len, rewards)],
        "value": [round(sum(every) / len(every), 4) if every else 0.0, *(round(v, 4) for v in mean)],
        "text": [None] * (len(simulations) + 1),
        "label": ["root", *(f"simulation {s}" if s else "rollouts" for s in simulations)],
        "terminal": [0] * (len(simulations) + 1), "finish": [""] * (len(simulations) + 1),
        "reflections": [0] * (len(simulations) + 1),
        "r_node": [node_of[r.get("simulation", 0)] for r in rollouts],
        "r_reward": [round(r["reward"], 4) for r in rollouts], "r_answer": [r.get("answer") for r in rollouts],
        "r_ok": ok, "r_text": [None] * len(rollouts), "r_finish": [r.get("finish", "") for r in rollouts],
        "r_tokens": [r.get("tokens") for r in rollouts],
    }
    row = summary(task, doc_id, "store", record.get("answer"), target, [bool(o) for o in ok],
                  len(simulations) + 1, record.get("generated_tokens"), "")
    return row, detail


def store_records(path: Path) -> list[tuple[dict, str]]:
    """(record, "path:line") of every request in a store, one per problem."""
    if not path.is_file():
        raise ViewError(f"--store {path} does not exist; give a request store (the store=PATH of a run)")
    seen: dict[tuple, str] = {}
    out = []
    for number, record in read_jsonl(path, ViewError, "one request record per line (a store= file)"):
        where = f"{path}:{number}"
        if not (isinstance(record.get("task"), str) and isinstance(record.get("doc_id"), int)):
            raise ViewError(f"{where}: a record without task and doc_id is not a request store's; give the "
                            "store=PATH file of a run")
        key = (record["task"], record["doc_id"])
        if key in seen:
            raise ViewError(f"{where}: {key[0]} doc_id {key[1]} again (first at {seen[key]}): the store holds "
                            "several runs; give the view a store of one run")
        seen[key] = where
        out.append((record, where))
    return out


def load_run(run: str | Path, store: str | Path | None = None,
             samples: str | Path | None = None) -> tuple[list[dict], list[dict], dict]:
    """Every problem of a run, sorted by task and doc_id.

    Args:
        run: the run folder (or its tree folder).
        store: the request store (default RUN/requests.jsonl when present).
        samples: lm-eval samples file or folder for the gold answers (default: found beside the trees).

    Returns:
        (list rows, details in the same order, what was read: {"trees", "store", "samples"}).
    """
    run = Path(run)
    if not run.is_dir():
        raise ViewError(f"{run} is not a folder; give a run folder (lm_eval --output_path, with tree_dir=RUN/trees "
                        "or store=RUN/requests.jsonl) or a tree folder")
    folder = tree_folder(run)
    trees = tree_files(folder) if folder is not None else []
    store_path = Path(store) if store is not None else (run / STORE_NAME if (run / STORE_NAME).is_file() else None)
    if not trees and store_path is None:
        raise ViewError(f"{run} holds no tree files ({{task}}_{{doc_id}}_{{repeat}}_{{index}}.json in it or in "
                        f"trees/) and no {STORE_NAME}; run with tree_dir={run}/trees, or pass --store FILE")
    found_samples = samples_files(run, Path(samples) if samples is not None else None)
    gold = gold_answers(found_samples)
    problems, files = {}, {}
    for path in trees:
        row, detail = from_tree(path, gold)
        key = row["task"], row["doc"]
        if key in files:
            raise ViewError(f"{path} and {files[key]} are both trees of {key[0]} doc_id {key[1]}: the folder holds "
                            "several runs; give the view one run's tree_dir")
        problems[key], files[key] = (row, detail), path
    for record, where in store_records(store_path) if store_path is not None else []:
        key = record["task"], record["doc_id"]
        if key not in problems:  # a tree says more than its store record
            problems[key] = from_store_record(record, where, gold)
    ordered = [problems[k] for k in sorted(problems)]
    sources = {"trees": len(trees), "store": str(store_path) if store_path else None,
               "samples": [str(p) for p in found_samples]}
    return [r for r, _ in ordered], [d for _, d in ordered], sources
