"""Render an exported search tree (search/export.py) as text: the question, the gold answer
when known, the answer and whether it is right, the chosen path, the tree, and a legend.

    question (the prompt, 3 lines):
      │ Solve the math word problem below. …
      │
      │ Question: A baker makes 20 rolls and sells 12. …
    gold: '8' from results/make_eval/…/samples_mgsm_en_….jsonl
    answer: '8' (correct)
    request 0  strategy=mcts action=step simulations=8 children=2  generated_tokens=412
    chosen path: [0] → [1] → [3]
      [1]  "First, 20 - 12 = 8 rolls are left.⏎⏎"
      [3] T  "<Output>8</Output>"

    [0]* N=8 Q=0.912  root
    ├─[1]* N=5 Q=0.930  "First, 20 - 12 = 8 rolls are left.⏎⏎"
    │ └─[3]* N=2 Q=0.941 T  "<Output>8</Output>"
    └─[2]  N=3 Q=0.884  "The baker sells 12 …"
    legend: …

The gold answer is not in a tree file. It comes from `--gold`, else from lm-eval samples
(`--samples FILE_OR_DIR`, else found beside the tree folder as `--output_path … --log_samples`
and `tree_dir=OUTPUT/trees` leave them): the row of the tree's task and doc_id, which the
tree's file name `{task}_{doc_id}_{repeat}_{index}.json` gives.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from marco_eval.answers import answers_match, normalize_number
from marco_eval.errors import DataError, InputError
from marco_eval.jsonl import read_jsonl

REQUIRED = ("nodes", "rollouts", "chosen_path")
TREE_NAME = re.compile(r"^(?P<task>.+)_(?P<doc_id>\d+)_(?P<repeat>\d+)_(?P<index>\d+)\.json$")
LEGEND = ("legend: [n] node id · * on the chosen path · T terminal (the answer ended: stop string, EOS or a cap) · "
          "R a reflection was inserted here · N visits · Q mean reward (the node's value) · "
          "⏎ a newline in the text · … text clipped (--width)")


def load_tree(path: str | Path) -> dict:
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"tree file {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not JSON ({e.msg} at line {e.lineno}); give a file written with tree_dir=") from None
    missing = [k for k in REQUIRED if k not in doc]
    if missing:
        raise InputError(f"{path} is not a marco-eval tree file (missing {', '.join(missing)})")
    return doc


# --- the gold answer ----------------------------------------------------------------------------

def tree_identity(path: str | Path) -> tuple[str, str] | None:
    """(task, doc_id) from a tree file's name, or None for a name lm.py did not write."""
    m = TREE_NAME.match(Path(path).name)
    return (m["task"], m["doc_id"]) if m else None


def _samples_beside(tree_path: Path, task: str) -> Path | None:
    """The newest samples_<task>_*.jsonl in the tree folder's parent or one level below it
    (lm-eval writes OUTPUT/<model>/samples_…); no deeper search."""
    from marco_eval.judge.export import SAMPLES_NAME

    run = tree_path.resolve().parent.parent
    found = [(m["stamp"], p) for pattern in ("samples_*.jsonl", "*/samples_*.jsonl") for p in run.glob(pattern)
             if (m := SAMPLES_NAME.match(p.name)) and m["task"] == task]
    return max(found)[1] if found else None


def _target_in(samples: Path, doc_id: str) -> str | None:
    for _, row in read_jsonl(samples, InputError, "an lm-eval samples file (--log_samples)"):
        if str(row.get("doc_id")) == doc_id and row.get("target") not in (None, ""):
            target = row["target"]
            return "\n".join(map(str, target)) if isinstance(target, list) else str(target)
    return None


def find_gold(tree_path: str | Path, gold: str | None = None, samples: str | Path | None = None) -> tuple[str | None, str]:
    """(gold answer or None, where it came from or why it is unknown)."""
    if gold is not None:
        return gold, "from --gold"
    tree_path = Path(tree_path)
    identity = tree_identity(tree_path)
    if samples is not None:
        from marco_eval.judge.export import find_samples_file

        if identity is None:
            raise InputError(f"{tree_path.name} is not named {{task}}_{{doc_id}}_{{repeat}}_{{index}}.json, so its "
                             "doc_id is unknown: pass --gold ANSWER instead of --samples")
        task, doc_id = identity
        path = find_samples_file(Path(samples), task)
        target = _target_in(path, doc_id)
        if target is None:
            raise InputError(f"{path} has no target for {task} doc_id {doc_id}: pass the samples of the run "
                             "that wrote this tree, or --gold ANSWER")
        return target, f"from {path}"
    hint = "pass --gold ANSWER or --samples FILE"
    if identity is None:
        return None, f"unknown ({hint})"
    path = _samples_beside(tree_path, identity[0])
    target = _target_in(path, identity[1]) if path else None
    if target is None:
        return None, f"unknown: no lm-eval samples of {identity[0]} doc_id {identity[1]} beside the tree folder ({hint})"
    return target, f"from {path}"


def verdict(answer: str | None, gold: str) -> str:
    """correct / wrong for a numeric gold answer; nothing to say for a text one (translation)."""
    if normalize_number(gold) is None:
        return ""
    return " (correct)" if answers_match(answer, gold) else " (wrong)"


# --- rendering ----------------------------------------------------------------------------------

def _clip(text: str, width: int) -> str:
    text = text.replace("\n", "⏎")
    return text if len(text) <= width else text[: width - 1] + "…"


def _prompt_lines(prompt: str | None, keep: int) -> list[str]:
    if prompt is None:
        return ["question: (this tree file has no prompt)"]
    lines = prompt.rstrip("\n").split("\n")
    shown = lines if keep <= 0 or len(lines) <= keep else lines[-keep:]
    out = [f"question (the prompt, {len(lines)} lines):"]
    if len(shown) < len(lines):
        out.append(f"  │ … {len(lines) - len(shown)} earlier lines (instruction, few-shot examples; "
                   "--prompt-lines 0 shows all)")
    return out + [f"  │ {line}".rstrip() for line in shown]


def _marks(n: dict) -> str:
    return (" T" if n.get("terminal") else "") + (" R" if n.get("finish") == "reflection" else "")


def render_text(doc: dict, width: int = 100, show_rollouts: bool = False, gold: str | None = None,
                gold_note: str = "", prompt_lines: int = 12) -> str:
    nodes = {n["id"]: n for n in doc["nodes"]}
    path = doc["chosen_path"]
    chosen = set(path)
    cfg = doc.get("config", {})
    answer = doc.get("answer")
    shown_gold = f"{gold!r} {gold_note}".rstrip() if gold is not None else (gold_note or "unknown")
    lines = [
        *_prompt_lines(doc.get("prompt"), prompt_lines),
        f"gold: {shown_gold}",
        f"answer: {answer!r}{verdict(answer, gold) if gold is not None else ''}",
        f"request {doc.get('request_index')}  strategy={cfg.get('strategy')} action={cfg.get('action')} "
        f"simulations={cfg.get('simulations')} children={cfg.get('children')}  "
        f"generated_tokens={doc.get('generated_tokens')}",
        "chosen path: " + (" → ".join(f"[{i}]" for i in path) if path else "(none)"),
    ]
    steps = [nodes[i] for i in path if i in nodes and nodes[i].get("parent") is not None]
    lines += [f"  [{n['id']}]{_marks(n)}  \"{_clip(n['action_text'], width)}\"" for n in steps]
    walked, text = "".join(n["action_text"] for n in steps), doc.get("answer_text")
    if isinstance(text, str) and text.startswith(walked) and len(text) > len(walked):
        lines.append(f"  then its rollout  \"{_clip(text[len(walked):], width)}\"")
    lines.append("")

    def walk(node_id: int, prefix: str, last: bool, is_root: bool) -> None:
        n = nodes[node_id]
        mark = "*" if node_id in chosen else " "
        head = "" if is_root else prefix + ("└─" if last else "├─")
        label = "root" if is_root else f'"{_clip(n["action_text"], width)}"'
        lines.append(f"{head}[{node_id}]{mark} N={n['visits']} Q={n['value']:.3f}{_marks(n)}  {label}")
        kids = n.get("children") or [c["id"] for c in doc["nodes"] if c["parent"] == node_id]
        child_prefix = "" if is_root else prefix + ("  " if last else "│ ")
        for i, c in enumerate(kids):
            walk(c, child_prefix, i == len(kids) - 1, False)

    walk(0, "", True, True)
    if show_rollouts:
        lines.append("")
        for i, r in enumerate(doc["rollouts"]):
            text = r.get("text", "")
            lines.append(f"rollout {i} from node {r['node']}: reward={r['reward']:.4f} answer={r.get('answer')!r}"
                         f"  {_clip(text, width)}")
    lines += ["", LEGEND]
    return "\n".join(lines)


def show(path: str | Path, width: int = 100, show_rollouts: bool = False, gold: str | None = None,
         samples: str | Path | None = None, prompt_lines: int = 12) -> str:
    """`marco-eval tree show`: the tree file rendered, with its gold answer when one is found."""
    doc = load_tree(path)
    found, note = find_gold(path, gold, samples)
    return render_text(doc, width, show_rollouts, found, note, prompt_lines)
