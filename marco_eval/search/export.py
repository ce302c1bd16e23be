"""Tree export: one JSON document per request (schema in the README, "Tree files")."""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

from marco_eval.search.mcts import Search, SearchResult
from marco_eval.search.reward import REWARDS, VERIFIER_PREFIX, reward_name

SCHEMA_VERSION = 1

# A verifier's values of whole sequences (prompt + completion ids), as the search asked them.
Values = Callable[[Sequence[Sequence[int]]], list[float]]


def tree_document(search: Search, result: SearchResult, request_index: int, prompt: str,
                  dtype: str | None = None, verifier_dtype: str | None = None) -> dict:
    """One request's search as a JSON-able document; `dtype` is the policy's and
    `verifier_dtype` the precision of a verifier's values (how closely they recompute), both
    as torch names less "torch." ("bfloat16")."""
    tree, decode = search.tree, search.codec.decode
    return {
        "schema_version": SCHEMA_VERSION,
        "request_index": request_index,
        "prompt": prompt,
        "prompt_token_ids": tree.prompt_ids,
        "config": dataclasses.asdict(search.config),
        "reward": reward_name(search.reward),  # what made every rollout's reward and node value
        "dtype": dtype,
        "verifier_dtype": verifier_dtype,
        "max_new_tokens": search.max_new_tokens,
        "until": list(search.until),
        "answer_kind": search.origin.answer,  # how rollout answers were read (marco_eval/readers.py)
        "instance": search.origin.instance,  # the copy of a request lm-eval repeats
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


def verifier_of(doc: dict) -> str | None:
    """The checkpoint whose values are a tree's rewards, or None when its reward is not a verifier."""
    name = doc.get("reward", "confidence")
    return name[len(VERIFIER_PREFIX):] if name.startswith(VERIFIER_PREFIX) else None


def rollout_sequences(doc: dict) -> list[list[int]]:
    """Each rollout's whole sequence as a verifier valued it: the prompt, the actions on its
    node's path (less the part the rollout itself carries), then the rollout's own ids."""
    nodes = {n["id"]: n for n in doc["nodes"]}
    out = []
    for r in doc["rollouts"]:
        path, node = [], nodes[r["node"]]
        while node["parent"] is not None:
            path[:0] = node["token_ids"]
            node = nodes[node["parent"]]
        out.append([*doc["prompt_token_ids"], *path[: len(path) - r["continuation_start"]], *r["token_ids"]])
    return out


def verifier_logit_tol(doc: dict) -> float:
    """How far (in log-odds) a verifier's value recomputed in fp32 may lie from the search's,
    by the precision the search valued in (the file's verifier_dtype, else its dtype; files
    before verifier_dtype wrote "torch.float32"):
    a float32 search differs in the last bits only. In bf16 the value the search read off its
    own decode-time keys/values lay 0.40 log-odds from the fp32 value on average and up to
    1.43 over 200 rollouts (qwen2.5-coder-0.5b, 40 MGSM-En self-consistency trees,
    results/verifier/README.md); a wrong sequence or layer moves it by several."""
    dtype = doc.get("verifier_dtype") or doc.get("dtype") or ""
    return 0.05 if dtype.removeprefix("torch.") == "float32" else 2.0


def _logit(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))


def check_tree_document(doc: dict, tol: float = 1e-4, values: Values | None = None) -> list[str]:
    """The invariants a tree file must keep; returns the problems found (empty = sound).

    - each rollout's reward lies in [0, 1] and recomputes: the confidence reward (REWARDS;
      files without a "reward" field used it) from the rollout's own token_logprobs and
      top5_logprobs, within `tol`; a verifier's value, when `values` is given, by asking it
      again of the rollout's sequence, within verifier_logit_tol(doc) in log-odds;
    - visits(n) = rollout_visits(n) + sum(visits(children of n));
    - mini_step actions are exactly mini_step_tokens long unless terminal or reflected;
    - step actions end at a delimiter, the end of the thought, a terminal state, a
      reflection, or the action_max_tokens cap ("length").
    """
    problems = []
    cfg = doc["config"]
    recompute = REWARDS.get(doc.get("reward", "confidence"))
    valued = values(rollout_sequences(doc)) if values is not None and verifier_of(doc) is not None else None
    for i, r in enumerate(doc["rollouts"]):
        if not 0.0 <= r["reward"] <= 1.0:
            problems.append(f"rollout {i}: reward {r['reward']} outside [0, 1]")
            continue
        if recompute is not None:
            again = recompute(r["token_logprobs"], r["top5_logprobs"])
            off = abs(again - r["reward"]) > tol
        elif valued is not None:
            again = valued[i]
            off = abs(_logit(again) - _logit(r["reward"])) > verifier_logit_tol(doc)
        else:
            continue
        if off:
            problems.append(f"rollout {i}: reward {r['reward']} but recomputes to {again}")
    nodes = {n["id"]: n for n in doc["nodes"]}
    for n in doc["nodes"]:
        kids = sum(nodes[c]["visits"] for c in n["children"])
        if n["visits"] != n["rollout_visits"] + kids:
            problems.append(f"node {n['id']}: visits {n['visits']} != {n['rollout_visits']} own + {kids} children")
        if n["parent"] is None or cfg["strategy"] != "mcts":
            continue
        special = n["terminal"] or n["finish"] in ("reflection", "budget")
        if cfg["action"] == "mini_step" and not special and len(n["token_ids"]) != cfg["mini_step_tokens"]:
            problems.append(f"node {n['id']}: mini-step of {len(n['token_ids'])} tokens, not {cfg['mini_step_tokens']}")
        if cfg["action"] == "step" and not special:
            ends = (*cfg["step_delimiters"], cfg["thought_end"], "length")
            if n["finish"] not in ends:
                problems.append(f"node {n['id']}: step ended by {n['finish']!r}, not a delimiter")
            elif n["finish"] != "length" and n["finish"] not in n["action_text"][-len(n["finish"]) - 8:]:
                problems.append(f"node {n['id']}: step text does not end at its delimiter {n['finish']!r}")
    return problems
