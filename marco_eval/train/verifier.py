"""A learned verifier: a value head on the policy's own hidden states, `marco-eval verifier`.

    marco-eval verifier training/configs/verifier_qwen_cpu.yaml [key=value ...]

From a bank of the model's labelled samples (train/bank.py) it caches the policy's hidden
states (verifier_features.py), fits an L2-regularised logistic head for every candidate
(pooling x layer x strength) on the bank's train split, picks by AUROC on the validation
split (within a problem first: that is where a search or a vote picks; pooled second), and
saves the best last-token candidate as a standard checkpoint:

    AutoModelForSequenceClassification (e.g. Qwen2ForSequenceClassification), num_labels=1:
    the policy's first L decoder layers, its final norm, and `score` = the fitted head.

so `from_pretrained` loads it, TRL's RewardTrainer can train it further and vLLM can serve
it as a reward model; its logit is log-odds that the sample's answer is right. The head has
no intercept: the checkpoint's `score` layer has no bias (a constant shift changes no
ranking). training_summary.json beside it records every candidate's validation AUROCs, the
data counts, the command and the versions. The checkpoint is written to OUTPUT_DIR.tmp and
renamed when complete; features are cached, so a killed run resumes.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from marco_eval.errors import ConfigError, need
from marco_eval.structured import load_structured
from marco_eval.train.verifier_features import POOLINGS, Features, extract


@dataclass
class VerifierConfig:
    bank: str = "training/bank/gsm8k_qwen2.5-coder-0.5b.jsonl"  # plain or .gz (marco-eval bank)
    output_dir: str = "checkpoints/verifier-qwen2.5-coder-0.5b"
    # Hidden-state cache, reused by a rerun with the same bank prefix and layers.
    features_dir: str = "checkpoints/verifier-features/qwen2.5-coder-0.5b"
    data: str | None = None  # GSM8K train.jsonl holding the bank's questions (default: as `marco-eval bank`)
    # Candidate layers (1 = after the first decoder layer); middle layers often separate
    # right from wrong better than the last, which is shaped for the next token.
    layers: list[int] = field(default_factory=lambda: [8, 12, 16, 20, 24])
    l2: list[float] = field(default_factory=lambda: [1e-3, 1e-2, 1e-1, 1.0, 10.0])  # ridge strengths tried
    # Appended to every sequence before it is read: its last token is where the head looks
    # (a question about the answer gathers the solution there; the token that ended a
    # sample, </Output> or EOS, says little). The checkpoint records it (config.json,
    # marco_eval_verifier.suffix): a user of the checkpoint appends it too.
    suffix: str = "\n\nIs the answer above correct? Answer yes or no:"
    max_problems: int = 0  # 0: the whole bank; N: its first N problems
    overwrite: bool = False  # replace an existing output_dir

    def __post_init__(self):
        """Every instance is checked (structured.merge builds it once every layer is merged)."""
        need(self.layers and self.l2, "layers and l2 need at least one value each")
        need(all(x > 0 for x in self.l2), f"l2={self.l2}: strengths must be positive")
        need(self.max_problems >= 0, f"max_problems={self.max_problems}: 0 (all) or a positive count")


def load_config(path: str | None, overrides: list[str] = ()) -> VerifierConfig:
    return load_structured(VerifierConfig, path, overrides, what="verifier config", examples="training/configs/",
                           example_override="l2=[0.01]")


# ---------------------------------------------------------------------- the head
def fit_head(x: np.ndarray, y: np.ndarray, l2: float, steps: int = 200) -> np.ndarray:
    """Logistic regression without intercept: w minimising mean log-loss + l2/2 |w|^2 (LBFGS).

    Args:
        x: [n, hidden] features; y: [n] bool labels.
    Returns:
        w: [hidden] float32.
    """
    import torch

    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).float()  # [n, hidden], [n]
    w = torch.zeros(x.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def loss():
        opt.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w, yt) + 0.5 * l2 * (w @ w)
        value.backward()
        return value

    opt.step(loss)
    return w.detach().numpy()


def separation(scores: np.ndarray, f: Features, rows: np.ndarray) -> dict:
    """Pooled and within-problem AUROC, with problem-bootstrap CIs, of `scores` on `rows`."""
    from marco_eval.report.search_stats import aurocs_with_ci

    problems = sorted(set(f.problem[rows].tolist()))
    rewards = [scores[rows][f.problem[rows] == p] for p in problems]
    labels = [f.label[rows][f.problem[rows] == p] for p in problems]
    pooled, within = aurocs_with_ci(rewards, labels)
    return {"pooled": _rounded(pooled), "within": _rounded(within),
            "within_pairs": within.pairs, "within_problems": within.problems}


def _rounded(auroc) -> list:
    """[value, lo, hi] to 4 decimals (None where the Auroc has none)."""
    return [None if v is None else round(float(v), 4) for v in (auroc.value, auroc.lo, auroc.hi)]


def select(f: Features, c: VerifierConfig, log=print) -> tuple[list[dict], dict]:
    """Every candidate's validation separation, and the best last-token one (with its head)."""
    train, val = ~f.validation, f.validation
    need(val.any() and train.any(), "the bank needs problems in both splits; sample more problems")
    candidates, best = [], None
    for pooling in POOLINGS:
        for i, layer in enumerate(f.layers):
            x = f.pooled(pooling)[:, i]  # [n, hidden]
            for l2 in c.l2:
                w = fit_head(x[train], f.label[train], l2)
                row = {"pooling": pooling, "layer": layer, "l2": l2, **separation(x @ w, f, val)}
                candidates.append(row)
                log(f"{pooling} layer {layer} l2 {l2}: within {row['within'][0]}, pooled {row['pooled'][0]}")
                key = (row["within"][0] or 0.0, row["pooled"][0] or 0.0)
                if pooling == "last" and (best is None or key > best[0]):
                    best = (key, row, w)
    return candidates, {**best[1], "weights": best[2]}


# ---------------------------------------------------------------------- the checkpoint
def save_checkpoint(base: str, chosen: dict, pad_id: int, tokenizer, out: Path, suffix: str) -> None:
    """The policy's first `layer` decoder layers + final norm + `score` = the head, as a
    sequence-classification checkpoint in `out`; `suffix` is what it expects appended."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(base, num_labels=1, pad_token_id=pad_id)
    config.num_hidden_layers = chosen["layer"]
    if getattr(config, "layer_types", None):  # per-layer attention kinds (Qwen2): the first L
        config.layer_types = config.layer_types[: chosen["layer"]]
    model = AutoModelForSequenceClassification.from_pretrained(base, config=config)
    with torch.no_grad():
        model.score.weight.copy_(torch.from_numpy(chosen["weights"]).to(model.score.weight.dtype).unsqueeze(0))
    model.config.marco_eval_verifier = {"pooling": "last", "layer": chosen["layer"], "l2": chosen["l2"],
                                        "suffix": suffix}
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def train(c: VerifierConfig, log=print, command: str | None = None) -> dict:
    from marco_eval.engine import Engine
    from marco_eval.train import bank as bank_module
    from marco_eval.train.synth import task_prompt

    started = time.time()
    final, staging = Path(c.output_dir), Path(c.output_dir + ".tmp")
    if final.exists() and not c.overwrite:
        raise ConfigError(f"{final} already exists; pass overwrite=true or pick another output_dir")
    settings, records = bank_module.read_bank(c.bank)
    records = records[: c.max_problems or None]
    questions = {it.index: it.problem for it in bank_module.read_gsm8k(bank_module.gsm8k_file(c.data))}
    engine = Engine.from_settings(settings["config"], pretrained=settings["model"], **settings["overrides"])
    policy = engine.policy

    def prompt_ids(record: dict) -> list[int]:
        return policy.encode(engine.prompt_text(task_prompt(questions[record["index"]])))

    f = extract(records, prompt_ids, policy, list(c.layers), policy.encode(c.suffix), c.features_dir, log=log)
    candidates, chosen = select(f, c, log=log)
    confidence = separation(f.reward, f, f.validation)
    shutil.rmtree(staging, ignore_errors=True)
    from marco_eval.models import resolve

    save_checkpoint(resolve(settings["model"]), chosen, policy.pad_id, policy.tokenizer, staging, c.suffix)
    summary = {
        "bank": c.bank, "bank_settings": settings, "problems": len(records),
        "samples": {"train": int((~f.validation).sum()), "validation": int(f.validation.sum())},
        "correct_share": {"train": round(float(f.label[~f.validation].mean()), 4),
                          "validation": round(float(f.label[f.validation].mean()), 4)},
        "chosen": {k: v for k, v in chosen.items() if k != "weights"},
        # the head itself (hidden floats): with the policy, all a checkpoint holds (--assemble)
        "head": [float(x) for x in chosen["weights"]], "pad_id": policy.pad_id, "suffix": c.suffix,
        "confidence_reward_validation": confidence, "candidates": candidates,
        "config": asdict(c), "command": command, "versions": _versions(), "seconds": round(time.time() - started, 1),
    }
    (staging / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    return summary


def assemble(summary_path: str | Path, out: str | Path) -> Path:
    """The checkpoint a training_summary.json describes, rebuilt from its policy and head
    (a summary is small enough to commit; a checkpoint holds a copy of the policy's layers)."""
    from transformers import AutoTokenizer

    from marco_eval.models import resolve

    summary = json.loads(Path(summary_path).read_text(encoding="utf-8"))
    if "head" not in summary:
        raise ConfigError(f"{summary_path}: no head in it; give the training_summary.json of `marco-eval verifier`")
    base = resolve(summary["bank_settings"]["model"])
    chosen = {**summary["chosen"], "weights": np.array(summary["head"], dtype=np.float32)}
    out, staging = Path(out), Path(str(out) + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    save_checkpoint(base, chosen, summary["pad_id"], AutoTokenizer.from_pretrained(base), staging, summary["suffix"])
    shutil.copy(summary_path, staging / "training_summary.json")
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)
    return out


def _versions() -> dict:
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="marco-eval verifier", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="verifier YAML (see training/configs/); defaults without one")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. max_problems=200 layers=[12,16]")
    p.add_argument("--assemble", nargs=2, metavar=("SUMMARY", "OUTPUT_DIR"),
                   help="rebuild the checkpoint a training_summary.json describes (its policy + its head)")
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_intermixed_args(argv)
    if args.assemble:
        print(assemble(*args.assemble))
        return 0
    c = load_config(args.config, args.overrides)
    threads = os.environ.get("OMP_NUM_THREADS")
    command = (f"OMP_NUM_THREADS={threads} " if threads else "") + shlex.join(["marco-eval", "verifier", *argv])
    summary = train(c, command=command)
    print(json.dumps({"output_dir": c.output_dir, "chosen": summary["chosen"],
                      "confidence_reward_validation": summary["confidence_reward_validation"]}))
    return 0
