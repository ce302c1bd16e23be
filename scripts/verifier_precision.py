"""How much does a verifier's value depend on the precision it is computed in?

    .venv/bin/python scripts/verifier_precision.py TREE_DIR CHECKPOINT

TREE_DIR: MGSM-En tree files of a search made with reward=CHECKPOINT (tree_dir=), e.g. the
bf16 policy reading the value off its own decode-time keys/values. Every rollout is valued
again by the checkpoint alone, in fp32 and in bf16 (one fresh forward each), and the
script prints how far the three lie apart (log-odds) and each one's AUROC (pooled, within a
problem), verifier-weighted vote and best-of-N over the same rollouts: the search's own rules
(search/final_answer.py) and the report's answer matching. Targets come from
$MGSM_DATA_DIR/mgsm_en.tsv (default ../shared/data/mgsm).
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from marco_eval.backends.verifier import CheckpointVerifier
from marco_eval.report.search_stats import aurocs_with_ci
from marco_eval.report.statistics import same_answer
from marco_eval.search.export import rollout_sequences
from marco_eval.search.final_answer import best_reward, vote


class Scored(NamedTuple):  # what the flat rules read (final_answer.Scored)
    answer: str | None
    reward: float


def log_odds(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return np.log(p / (1 - p))


def main(tree_dir: str, checkpoint: str) -> None:
    data = Path(os.environ.get("MGSM_DATA_DIR", "../shared/data/mgsm"))
    with open(data / "mgsm_en.tsv", newline="") as f:
        targets = [row[1] for row in csv.reader(f, delimiter="\t")]
    trees = []  # (doc_id, tree document); file names are mgsm_en_<doc_id>_...json
    for path in sorted(Path(tree_dir).glob("*.json")):
        trees.append((int(path.name.split("_")[2]), json.loads(path.read_text())))
    if not trees:
        sys.exit(f"verifier_precision.py: no tree files (*.json) in {tree_dir}; pass a search's tree_dir")
    print("trees", len(trees))
    values = {"search": [np.array([r["reward"] for r in doc["rollouts"]]) for _, doc in trees]}
    for key, dtype in (("fp32", "float32"), ("bf16", "bfloat16")):
        verifier = CheckpointVerifier(checkpoint, device="cpu", dtype=dtype)
        values[key] = [np.array(verifier(rollout_sequences(doc))) for _, doc in trees]
    answers = [[r["answer"] for r in doc["rollouts"]] for _, doc in trees]
    gold = [targets[doc_id] for doc_id, _ in trees]
    labels = [np.array([same_answer(a, g) for a in ans]) for ans, g in zip(answers, gold)]

    def spread(key: str) -> np.ndarray:  # |log-odds of key - log-odds of fp32|, every rollout
        return np.abs(np.concatenate([log_odds(a) - log_odds(b) for a, b in zip(values[key], values["fp32"])]))

    search, fresh = spread("search"), spread("bf16")
    print(f"search - fp32 log-odds: mean |d| {search.mean():.3f} max {search.max():.3f}; "
          f"fresh bf16 - fp32: mean |d| {fresh.mean():.3f} max {fresh.max():.3f}")

    def accuracy(rule, weights: list[np.ndarray]) -> float:
        right = sum(same_answer(rule(None, [Scored(a, float(w)) for a, w in zip(ans, ws)]).answer, g)
                    for ans, ws, g in zip(answers, weights, gold))
        return 100 * right / len(trees)

    majority = accuracy(vote, [np.ones(len(a)) for a in answers])
    print(f"problems {len(trees)}: majority {majority:.1f}%, any {100 * np.mean([l.any() for l in labels]):.1f}%")
    for key in ("search", "fp32", "bf16"):
        pooled, within = aurocs_with_ci(values[key], labels)
        print(f"{key}: pooled {pooled.value:.3f} within {within.value:.3f} ({within.pairs} pairs); "
              f"weighted vote {accuracy(vote, values[key]):.1f}%, best-of-N {accuracy(best_reward, values[key]):.1f}%")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: verifier_precision.py TREE_DIR CHECKPOINT")
    main(sys.argv[1], sys.argv[2])
