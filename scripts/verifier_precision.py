"""How much does a verifier's value depend on the precision it is computed in?

    .venv/bin/python scripts/verifier_precision.py TREE_DIR CHECKPOINT

TREE_DIR: MGSM-En tree files of a search made with reward=CHECKPOINT (tree_dir=), e.g. the
bf16 policy reading the value off its own decode-time keys/values. Every rollout is valued
again by the checkpoint alone, in fp32 and in bf16 (one fresh forward each), and the
script prints how far the three lie apart (log-odds) and each one's AUROC (pooled, within a
problem), verifier-weighted vote and best-of-N over the same rollouts. Targets come from
$MGSM_DATA_DIR/mgsm_en.tsv (default ../shared/data/mgsm).
"""
import csv
import glob
import json
import os
import sys
from collections import defaultdict
import numpy as np
from marco_eval.backends.verifier import CheckpointVerifier
from marco_eval.search.export import rollout_sequences
from marco_eval.report.search_stats import aurocs_with_ci

tree_dir, ckpt = sys.argv[1], sys.argv[2]
data = os.environ.get("MGSM_DATA_DIR", "../shared/data/mgsm")
gold = [row[1].replace(",", "") for row in csv.reader(open(f"{data}/mgsm_en.tsv"), delimiter="\t")]
def right(a, g):
    try: return abs(float(str(a).replace(",", "")) - float(g)) < 1e-6
    except Exception: return False
docs = []
for path in sorted(glob.glob(f"{tree_dir}/*.json")):
    doc = json.load(open(path)); doc_id = int(path.rsplit("/", 1)[1].split("_")[2]); docs.append((doc_id, doc))
print("trees", len(docs))
values = {"search": [], "fp32": [], "bf16": [], "confidence": []}
labels, answers = [], []
for dtype in ("float32", "bfloat16"):
    v = CheckpointVerifier(ckpt, device="cpu", dtype=dtype)
    key = "fp32" if dtype == "float32" else "bf16"
    for doc_id, doc in docs:
        values[key].append(np.array(v(rollout_sequences(doc))))
for doc_id, doc in docs:
    values["search"].append(np.array([r["reward"] for r in doc["rollouts"]]))
    labels.append(np.array([right(r["answer"], gold[doc_id]) for r in doc["rollouts"]]))
    answers.append([r["answer"] for r in doc["rollouts"]])
def logit(p): p = np.clip(p, 1e-9, 1 - 1e-9); return np.log(p / (1 - p))
diff = np.concatenate([logit(a) - logit(b) for a, b in zip(values["search"], values["fp32"])])
diff16 = np.concatenate([logit(a) - logit(b) for a, b in zip(values["bf16"], values["fp32"])])
print("search - fp32 log-odds: mean |d| %.3f max %.3f; fresh bf16 - fp32: mean |d| %.3f max %.3f"
      % (np.abs(diff).mean(), np.abs(diff).max(), np.abs(diff16).mean(), np.abs(diff16).max()))
def pick(ans, w):
    d = defaultdict(float)
    for a, x in zip(ans, w):
        if a is not None: d[a] += x
    return max(d, key=d.get) if d else None
n = len(docs)
maj = sum(right(pick(a, np.ones(len(a))), gold[i]) for (i, _), a in zip(docs, answers))
print(f"problems {n}: majority {100 * maj / n:.1f}%, any {100 * sum(l.any() for l in labels) / n:.1f}%")
for key in ("search", "fp32", "bf16"):
    pooled, within = aurocs_with_ci(values[key], labels)
    wv = sum(right(pick(a, v), gold[i]) for (i, _), a, v in zip(docs, answers, values[key]))
    best = sum(right(a[int(np.argmax(v))], gold[i]) for (i, _), a, v in zip(docs, answers, values[key]))
    print(f"{key}: pooled {pooled.value:.3f} within {within.value:.3f} ({within.pairs} pairs); "
          f"weighted vote {100 * wv / n:.1f}%, best-of-N {100 * best / n:.1f}%")
