#!/usr/bin/env python
"""Check a run's votes on math answers against math-verify itself, from its tree files.

    python scripts/check_math_votes.py results/runs/math500_sc20/trees

For every tree whose answers were read as math (`answer_kind: math`) and whose final
answer is a vote, each rollout's text (cut at the tree's stop strings) is parsed anew with
math-verify and the rollouts are grouped by `verify`, independently of the keys the
search used. The vote must have picked a rollout of the group with the most reward (the
rule: a reward-weighted majority); the group with the most rollouts is reported beside it.
Prints one line per problem and a summary; exits 1 when any vote disagrees.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from marco_eval.math_answers import math_equal, parse_answer


def rollout_text(rollout: dict, until: list[str]) -> str:
    text = rollout["text"]
    for stop in until:
        text = text.split(stop)[0]
    return text


def groups_of(parsed: list[list]) -> list[list[int]]:
    """Rollout indices grouped by math-verify's equality (first member represents a group)."""
    groups: list[list[int]] = []
    for i, answer in enumerate(parsed):
        if not answer:
            continue
        home = next((g for g in groups if math_equal(parsed[g[0]], answer)), None)
        if home is None:
            groups.append([i])
        else:
            home.append(i)
    return groups


def check(doc: dict) -> tuple[bool, str]:
    rollouts = doc["rollouts"]
    parsed = [parse_answer(rollout_text(r, doc["until"])) for r in rollouts]
    groups = groups_of(parsed)
    if not groups:
        return True, "no rollout has a math answer"
    heaviest = max(groups, key=lambda g: sum(rollouts[i]["reward"] for i in g))
    commonest = max(groups, key=len)
    chosen = parse_answer(doc["answer_text"]) if doc["answer_text"] else []
    ok = bool(chosen) and math_equal(parsed[heaviest[0]], chosen)
    agree = "same" if heaviest == commonest else f"most frequent: {rollouts[commonest[0]]['answer']!r} x{len(commonest)}"
    return ok, (f"vote {doc['answer']!r}; heaviest group {rollouts[heaviest[0]]['answer']!r} x{len(heaviest)} "
                f"of {len(groups)} groups ({agree})")


def main(folder: str) -> int:
    files = sorted(Path(folder).glob("*.json"))
    docs = [(f, json.loads(f.read_text())) for f in files]
    docs = [(f, d) for f, d in docs if d.get("answer_kind") == "math" and d["config"]["final_answer"] == "vote"]
    if not docs:
        print(f"{folder}: no tree with answer_kind math and final_answer vote", file=sys.stderr)
        return 2
    bad = 0
    for f, doc in docs:
        ok, line = check(doc)
        bad += not ok
        print(f"{'ok ' if ok else 'BAD'} {f.name}: {line}")
    print(f"{len(docs) - bad} of {len(docs)} votes pick math-verify's heaviest answer group")
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/check_math_votes.py TREE_DIR")
    sys.exit(main(sys.argv[1]))
