"""Render an exported search tree (search/export.py) as indented text.

    [0] root  N=8 Q=0.912
    ├─[1]* N=5 Q=0.930  "First, 16 - 3 - 4 = 9 eggs are left.⏎⏎"
    │ └─[3]* N=2 Q=0.941 T  "<Output>18</Output>"   (terminal)
    └─[2]  N=3 Q=0.884  "Janet eats 3 …"

`*` marks the chosen path, `T` a terminal node, N visits, Q mean reward.
"""

from __future__ import annotations

import json
from pathlib import Path

REQUIRED = ("nodes", "rollouts", "chosen_path")


def load_tree(path: str | Path) -> dict:
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"tree file {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not JSON ({e.msg} at line {e.lineno}); give a file written with tree_dir=") from None
    missing = [k for k in REQUIRED if k not in doc]
    if missing:
        raise ValueError(f"{path} is not a marco-eval tree file (missing {', '.join(missing)})")
    return doc


def _clip(text: str, width: int) -> str:
    text = text.replace("\n", "⏎")
    return text if len(text) <= width else text[: width - 1] + "…"


def render_text(doc: dict, width: int = 100, show_rollouts: bool = False) -> str:
    nodes = {n["id"]: n for n in doc["nodes"]}
    chosen = set(doc["chosen_path"])
    cfg = doc.get("config", {})
    lines = [
        f"request {doc.get('request_index')}  strategy={cfg.get('strategy')} action={cfg.get('action')} "
        f"simulations={cfg.get('simulations')} children={cfg.get('children')}  "
        f"generated_tokens={doc.get('generated_tokens')}",
        f"answer: {doc.get('answer')!r}",
    ]

    def walk(node_id: int, prefix: str, last: bool, is_root: bool) -> None:
        n = nodes[node_id]
        mark = "*" if node_id in chosen else " "
        flags = " T" if n["terminal"] else ""
        head = "" if is_root else prefix + ("└─" if last else "├─")
        label = "root" if is_root else f'"{_clip(n["action_text"], width)}"'
        lines.append(f"{head}[{node_id}]{mark} N={n['visits']} Q={n['value']:.3f}{flags}  {label}")
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
    return "\n".join(lines)
