"""Tree export: one JSON document per request (schema in the README, "Tree files")."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path

from marco_eval.search.mcts import Search, SearchResult

SCHEMA_VERSION = 1


def tree_document(search: Search, result: SearchResult, request_index: int, prompt: str) -> dict:
    tree, decode = search.tree, search.codec.decode
    return {
        "schema_version": SCHEMA_VERSION,
        "request_index": request_index,
        "prompt": prompt,
        "prompt_token_ids": tree.prompt_ids,
        "config": dataclasses.asdict(search.cfg),
        "max_new_tokens": search.max_new_tokens,
        "until": list(search.until),
        "answer_text": result.text,
        "answer": result.answer,
        "generated_tokens": result.generated_tokens,
        "chosen_path": result.chosen_path,
        "nodes": [
            {
                "id": n.id, "parent": n.parent, "depth": n.depth, "action_text": decode(n.action_ids),
                "token_ids": n.action_ids, "visits": n.visits, "value": n.value,
                "rollout_visits": n.rollout_visits, "terminal": n.terminal, "finish": n.finish,
                "reflections": n.reflections, "children": n.children, "rollout": n.rollout,
            }
            for n in tree.nodes
        ],
        "rollouts": [
            {
                "node": r.node, "token_ids": r.token_ids, "continuation_start": r.continuation_start,
                "token_logprobs": r.logprobs, "top5_logprobs": r.top5, "reward": r.reward,
                "finish": r.finish, "answer": r.answer, "text": decode(r.token_ids),
            }
            for r in tree.rollouts
        ],
    }


def write_json_atomic(path: Path, doc: dict) -> None:
    """Temp file + rename: a killed run never leaves half a tree file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False)
    os.replace(tmp, path)
