"""What a verifier head reads: the policy's hidden states on its own bank samples.

For every sample of a bank (train/bank.py) the sequence is exactly what the search scores:
the prompt as the engine formats it (chat template, system prompt, response prefix), the
sample's generated ids, then the verifier's fixed suffix (a question about the answer, so
the last position reads the whole solution rather than whatever token ended it). One
forward of the policy gives, for each candidate layer L, the layer's output passed through
the model's final norm, pooled two ways:

    last  at the suffix's last token: what a transformers sequence-classification
          checkpoint of the first L layers computes before its `score` head, given the
          sequence with the suffix, so a head fitted on it is a loadable checkpoint;
    mean  over the sample's generated tokens: reported for comparison only (no standard
          checkpoint pools so).

Features are cached in parts of PART_PROBLEMS problems (npz, written atomically), so a
killed extraction resumes; the bank's own labels, splits and rewards travel with them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from marco_eval.backends.verifier import layer_outputs, stopped_early
from marco_eval.errors import InputError
from marco_eval.files import write_atomic

PART_PROBLEMS = 25
POOLINGS = ("last", "mean")


@dataclass
class Features:
    problem: np.ndarray  # [n] problem index (bank order) of each sample
    label: np.ndarray  # [n] bool: the sample's answer is right
    validation: np.ndarray  # [n] bool: its problem is in the validation split
    reward: np.ndarray  # [n] the confidence reward the search gave it
    last: np.ndarray  # [n, layers, hidden] float32
    mean: np.ndarray  # [n, layers, hidden] float32
    layers: list[int]

    def pooled(self, pooling: str) -> np.ndarray:
        return self.last if pooling == "last" else self.mean


def sample_features(policy, prompt_ids: list[int], completions: list[list[int]], layers: list[int],
                    suffix_ids: list[int]):
    """(last, mean) features [k, layers, hidden] of k completions of one prompt, one forward."""
    import torch

    seqs = [list(prompt_ids) + list(c) + list(suffix_ids) for c in completions]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), policy.pad_id)  # [k, width], right-padded
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, :len(s)] = torch.tensor(s)
        mask[r, :len(s)] = 1
    model = policy.model
    with torch.inference_mode(), layer_outputs(model, layers) as seen:
        try:
            model.model(input_ids=ids.to(policy.device), attention_mask=mask.to(policy.device), use_cache=False)
        except stopped_early:
            pass
        lengths = mask.sum(-1)  # [k]
        gen = torch.zeros_like(mask, dtype=torch.bool)  # [k, width]: the generated positions
        for r, c in enumerate(completions):
            gen[r, len(prompt_ids): len(prompt_ids) + len(c)] = True
        last, mean = [], []
        for L in layers:
            h = model.model.norm(seen[L]).float().cpu()  # [k, width, hidden]
            last.append(h[torch.arange(len(seqs)), lengths - 1])  # [k, hidden]
            mean.append((h * gen.unsqueeze(-1)).sum(1) / gen.sum(1, keepdim=True).clamp(min=1))  # [k, hidden]
    return torch.stack(last, 1).numpy(), torch.stack(mean, 1).numpy()  # [k, layers, hidden] each


def part_paths(records: list[dict], cache_dir: str | Path) -> list[tuple[int, Path]]:
    """(first record, file) of each cached features part of `records`, PART_PROBLEMS a part."""
    return [(start, Path(cache_dir) / f"part-{start:06d}-{len(records[start: start + PART_PROBLEMS]):03d}.npz")
            for start in range(0, len(records), PART_PROBLEMS)]


def extract(records: list[dict], prompt_ids_of: Callable[[dict], list[int]], policy, layers: list[int],
            suffix_ids: list[int], cache_dir: str | Path, log: Callable[[str], None] = print) -> Features:
    """Features of every sample of `records` (bank problem records, in bank order), from the
    cache where it has them; new parts are written as they are made."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    parts = []
    for start, path in part_paths(records, cache_dir):
        chunk = records[start: start + PART_PROBLEMS]
        if not path.is_file():
            last, mean = [], []
            for record in chunk:
                ids = prompt_ids_of(record)
                a, b = sample_features(policy, ids, [s["token_ids"] for s in record["samples"]], layers, suffix_ids)
                last.append(a)
                mean.append(b)
            buffer = io.BytesIO()
            np.savez(buffer, last=np.concatenate(last).astype(np.float16), mean=np.concatenate(mean).astype(np.float16),
                     layers=np.array(layers), ids=np.array([r["problem_id"] for r in chunk]),
                     suffix=np.array(suffix_ids, dtype=np.int64))
            write_atomic(path, buffer.getvalue())
            log(f"features: {start + len(chunk)}/{len(records)} problems")
        with np.load(path) as part:
            if list(part["layers"]) != list(layers) or list(part["ids"]) != [r["problem_id"] for r in chunk] \
                    or "suffix" not in part or list(part["suffix"]) != list(suffix_ids):
                raise InputError(f"{path} holds other layers, problems or suffix; use another features_dir or delete it")
            parts.append((part["last"].astype(np.float32), part["mean"].astype(np.float32)))
    problem = np.array([p for p, r in enumerate(records) for _ in r["samples"]])
    samples = [s for r in records for s in r["samples"]]
    return Features(problem=problem, label=np.array([s["correct"] for s in samples], dtype=bool),
                    validation=np.array([r["split"] == "validation" for r in records for _ in r["samples"]]),
                    reward=np.array([s["reward"] for s in samples]), last=np.concatenate([p[0] for p in parts]),
                    mean=np.concatenate([p[1] for p in parts]), layers=list(layers))
