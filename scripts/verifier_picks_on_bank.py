"""How the verifier's picks do on the bank's own validation problems (GSM8K train, never MGSM).

    .venv/bin/python scripts/verifier_picks_on_bank.py results/verifier/qwen2.5-coder-0.5b-bank1500.json

Reads the summary's head and the cached features `marco-eval verifier` wrote (features_dir of
the summary's config; every part must be there: nothing is recomputed), values every bank
sample as the checkpoint would (head . last-token state of the chosen layer), and prints, per
split, the accuracy of the majority vote, the verifier-weighted vote and verifier best-of-N
over each problem's samples, and any sample right: the search's own rules
(search/final_answer.py), so a sample without an answer can be best-of-N's pick.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from marco_eval.search.final_answer import best_reward, vote
from marco_eval.train import bank as bank_module
from marco_eval.train.verifier_features import extract, part_paths


class Sample:  # what the flat rules read (final_answer.Scored)
    def __init__(self, answer, reward):
        self.answer, self.reward = answer, reward


def main(summary_path: str) -> None:
    summary = json.loads(Path(summary_path).read_text())
    config = summary["config"]
    _, records = bank_module.read_bank(config["bank"] if Path(config["bank"]).exists() else summary["bank"] + ".gz")
    records = records[: summary["problems"]]
    parts = [path for _, path in part_paths(records, config["features_dir"])]
    missing = [p for p in parts if not p.is_file()]  # extract() would compute one, with a policy we lack
    if missing:
        sys.exit(f"verifier_picks_on_bank.py: {len(missing)} features parts are missing (first: {missing[0]}); "
                 f"make them with `{summary['command']} output_dir=/tmp/verifier-again` (it reuses the parts it finds)")
    with np.load(parts[0]) as part:
        suffix_ids = [int(x) for x in part["suffix"]]
    features = extract(records, None, None, list(config["layers"]), suffix_ids, config["features_dir"])
    layer = features.layers.index(summary["chosen"]["layer"])
    logits = features.last[:, layer] @ np.array(summary["head"], dtype=np.float32)  # [samples]
    values = 1 / (1 + np.exp(-logits))
    tally = {"train": Counter(), "validation": Counter()}
    start = 0
    for record in records:
        samples = record["samples"]
        scored = [Sample(s["answer"], float(v)) for s, v in zip(samples, values[start: start + len(samples)])]
        start += len(samples)
        right = {s["answer"]: s["correct"] for s in samples}
        count = tally[record["split"]]
        count["problems"] += 1
        count["any sample right"] += any(s["correct"] for s in samples)
        count["majority vote"] += right[vote(None, [Sample(s.answer, 1.0) for s in scored]).answer]
        count["verifier-weighted vote"] += right[vote(None, scored).answer]
        count["verifier best-of-N"] += right[best_reward(None, scored).answer]
    for split, count in tally.items():
        n = count.pop("problems")
        print(f"{split} ({n} problems): " + ", ".join(f"{k} {100 * v / n:.1f}%" for k, v in count.items()))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: verifier_picks_on_bank.py TRAINING_SUMMARY_JSON")
    main(sys.argv[1])
