"""Run folders for the view tests, as `lm_eval --output_path RUN --log_samples` with
tree_dir=RUN/trees and store=RUN/requests.jsonl leave them: trees the real search made with
the scripted fake policy (questions invented for these tests), or hand-built trees of any size."""

import json
from pathlib import Path

from fakes import ScriptedPolicy

from marco_eval.answers import extract_answer
from marco_eval.search import Search, SearchConfig, drive
from marco_eval.search.export import tree_document

STAMP = "2026-01-02T03-04-05.678901"
MARKUP = "<b>bold</b></script>"  # a text that must show as text, never end the page's data block


def question(doc_id: int) -> str:
    return f"Solve the problem.\n\nQuestion: A shelf holds {doc_id + 2} boxes of 3 pens. How many pens? {MARKUP}"


def mixed_script(prefix: str, seed: int) -> str:
    """Two steps, then an answer that depends on the sample's seed: rollouts disagree."""
    done = prefix.count("Step ")
    return "".join(f"Step {i}.\n\n" for i in range(done, 2)) + f"<Output>{(7, 9, 11)[seed % 3]}</Output>\x00"


def searched_doc(doc_id: int, simulations: int = 4) -> dict:
    policy = ScriptedPolicy(mixed_script)
    prompt = question(doc_id)
    search = Search(SearchConfig(simulations=simulations, children=2, seed=doc_id), policy.encode(prompt), policy,
                    max_new_tokens=200, until=("</Output>",), answer_fn=lambda t: extract_answer(t, "flexible"))
    return tree_document(search, drive(search, policy), doc_id, prompt)


def gold_for(doc: dict, kind: str) -> str:
    """A target that makes the tree's pick right, wrong though a rollout found it, or never found."""
    rollout_answers = [r["answer"] for r in doc["rollouts"]]
    if kind == "right":
        return doc["answer"]
    if kind == "found":
        return next(a for a in rollout_answers if a != doc["answer"])
    return "1234"


def write_samples(run: Path, targets: dict[int, str], task: str = "mgsm_en") -> Path:
    path = run / "model" / f"samples_{task}_{STAMP}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"doc_id": d, "target": t, "filter": f, "filtered_resps": ["0"]}
            for d, t in sorted(targets.items()) for f in ("strict-match", "flexible-extract")]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_tree_run(run: Path, kinds: list[str]) -> list[dict]:
    """One searched tree per kind ("right", "found", "never"), doc_ids 0, 1, ..., with samples."""
    docs, targets = [], {}
    (run / "trees").mkdir(parents=True)
    for doc_id, kind in enumerate(kinds):
        doc = searched_doc(doc_id)
        assert kind != "found" or len({r["answer"] for r in doc["rollouts"]}) > 1, "the script must disagree"
        (run / "trees" / f"mgsm_en_{doc_id}_0_0.json").write_text(json.dumps(doc))
        targets[doc_id] = gold_for(doc, kind)
        docs.append(doc)
    write_samples(run, targets)
    return docs


def synthetic_doc(doc_id: int, simulations: int = 8, children: int = 2, text_chars: int = 120) -> dict:
    """A hand-built tree of a given size (no search): each simulation adds `children` nodes
    under the last one it made and a rollout from each; visits and values add up."""
    nodes = [{"id": 0, "parent": None, "depth": 0, "action_text": "", "token_ids": [], "visits": 0, "value": 0.0,
              "rollout_visits": 0, "terminal": False, "finish": "", "reflections": 0, "children": [],
              "rollout": None}]
    rollouts = []
    at = 0
    for s in range(simulations):
        made = []
        for c in range(children):
            node = {"id": len(nodes), "parent": at, "depth": nodes[at]["depth"] + 1,
                    "action_text": f"Step {s}.{c}: " + "x" * text_chars + "\n\n", "token_ids": [1] * 20,
                    "visits": 0, "value": 0.0, "rollout_visits": 0, "terminal": False, "finish": "\n\n",
                    "reflections": 0, "children": [], "rollout": len(rollouts)}
            nodes[at]["children"].append(node["id"])
            nodes.append(node)
            reward = 0.5 + 0.05 * ((doc_id + s + c) % 10)
            rollouts.append({"node": node["id"], "token_ids": [1] * 80, "continuation_start": 20, "token_logprobs": [],
                             "top5_logprobs": [], "reward": reward, "finish": "</Output>",
                             "answer": str((doc_id + c) % 3), "text": "y" * 4 * text_chars})
            for n in [node["id"], *ancestors(nodes, node["id"])]:  # visits: own rollout + children's
                nodes[n]["value"] = (nodes[n]["value"] * nodes[n]["visits"] + reward) / (nodes[n]["visits"] + 1)
                nodes[n]["visits"] += 1
            nodes[node["id"]]["rollout_visits"] = 1
            made.append(node["id"])
        at = made[0]
    return {"schema_version": 1, "request_index": doc_id, "prompt": question(doc_id), "config": {"strategy": "mcts"},
            "answer": rollouts[0]["answer"], "answer_text": "", "generated_tokens": 80 * len(rollouts),
            "chosen_path": [0, *range(1, len(nodes), children)][: simulations + 1], "nodes": nodes,
            "rollouts": rollouts}


def ancestors(nodes: list[dict], n: int) -> list[int]:
    out = []
    while nodes[n]["parent"] is not None:
        n = nodes[n]["parent"]
        out.append(n)
    return out


def write_synthetic_run(run: Path, problems: int, simulations: int = 8) -> None:
    (run / "trees").mkdir(parents=True)
    for doc_id in range(problems):
        doc = synthetic_doc(doc_id, simulations)
        (run / "trees" / f"mgsm_en_{doc_id}_0_0.json").write_text(json.dumps(doc))
    write_samples(run, {d: str(d % 3) for d in range(problems)})
