"""A learned verifier on the transformers backend: the search's Score requests answered.

A verifier is a sequence-classification checkpoint with one label (train/verifier.py makes
them): the first L decoder layers of a causal LM, its final norm, and `score`, a linear
head whose logit is the log-odds that the sequence's answer is right; value = sigmoid(logit).

When its body is the policy's own first L layers (the usual case: a head fitted on the
policy's hidden states), no second model is loaded: the policy forwards the sequence's
last token on the keys/values its KV tree already holds (the rollout was just generated)
and the head reads layer L's output at that token, through the final norm. Otherwise (or
when asked for another precision than the policy's, verifier_dtype=) the checkpoint is
loaded beside the policy, on its device, and scores whole sequences.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Sequence

import torch

from marco_eval.errors import InputError
from marco_eval.settings import verifier_dtype_for


class _Enough(Exception):
    """Raised by the hook on the deepest layer wanted: the rest of the forward is not needed."""


@contextlib.contextmanager
def layer_outputs(model, layers: list[int]):
    """Collect the hidden states after each of `layers` (1 = after the first decoder layer)
    of a transformers causal LM's forward, which stops after the deepest one: run the
    forward inside `with layer_outputs(...) as seen:` and catch `stopped_early`."""
    blocks = model.model.layers
    if not layers or min(layers) < 1 or max(layers) > len(blocks):
        raise ValueError(f"layers={layers}: this model has decoder layers 1 to {len(blocks)}")
    seen: dict[int, torch.Tensor] = {}

    def hook_for(layer: int):
        def hook(module, args, output):
            seen[layer] = output[0] if isinstance(output, tuple) else output  # [rows, T, hidden]
            if layer == max(layers):
                raise _Enough
        return hook

    handles = [blocks[L - 1].register_forward_hook(hook_for(L)) for L in layers]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


stopped_early = _Enough  # what a forward under layer_outputs raises once it has every layer


def verifier_config(path: str | Path, what: str):
    """(folder, config) of a verifier checkpoint; `what` names where the path came from in
    the one-line InputError for anything else."""
    from transformers import AutoConfig

    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise InputError(f"{what}: not a verifier checkpoint (no config.json); give a folder made by "
                         f"`marco-eval verifier`")
    config = AutoConfig.from_pretrained(folder)
    if getattr(config, "num_labels", None) != 1 or not any(a.endswith("ForSequenceClassification")
                                                          for a in config.architectures or ()):
        raise InputError(f"{what}: a verifier is a sequence-classification checkpoint with one "
                         f"label; this one is {config.architectures} with {config.num_labels} labels")
    return folder, config


def suffix_of(config) -> str:
    """What the verifier expects appended to every sequence (train/verifier.py)."""
    return getattr(config, "marco_eval_verifier", {}).get("suffix", "")


# Tokens per forward of CheckpointVerifier (rows x longest row): a batch of rollouts goes in
# one forward while its activations stay small beside the weights (footprint_bytes counts them).
BATCH_TOKENS = 8192
# What the process that loads a verifier on a GPU spends there before any tensor: torch's
# CUDA context and its kernels (some 300-500 MiB); vLLM's share of the GPU does not count it.
CUDA_CONTEXT_BYTES = 512 * 2**20


def footprint_bytes(path: str | Path, dtype: torch.dtype) -> int:
    """GPU memory a CheckpointVerifier takes once loaded in `dtype` and scoring: its weights
    (counted from the checkpoint's tensor shapes, nothing loaded), one forward's activations
    (BATCH_TOKENS tokens through the widest layer) and the CUDA context."""
    from safetensors import safe_open

    folder, config = verifier_config(path, what=f"reward={path}")
    numel = 0
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():
                numel += int(torch.Size(f.get_slice(name).get_shape()).numel())
    size = torch.tensor([], dtype=dtype).element_size()
    text = config.get_text_config()
    width = 2 * getattr(text, "intermediate_size", 4 * text.hidden_size) + 4 * text.hidden_size  # MLP in, residuals
    return numel * size + BATCH_TOKENS * width * size + CUDA_CONTEXT_BYTES


def stored_dtype(path: str | Path) -> str:
    """The precision the checkpoint's weights are stored in (its config), float32 if unsaid."""
    _, config = verifier_config(path, what=f"reward={path}")
    return str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32").removeprefix("torch.")


class CheckpointVerifier:
    """A verifier checkpoint on its own, with its own tokenizer: search.export.Values for
    `marco-eval tree check`, which recomputes the values a search backed up without the
    policy that made them, and the vLLM backend's verifier (reward=PATH)."""

    def __init__(self, path: str | Path, *, device: str = "auto", dtype: str = "float32"):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from marco_eval.backends.device import resolve_device

        folder, config = verifier_config(path, what=f"verifier {path}")
        self.device = resolve_device(device)
        self.suffix = tuple(AutoTokenizer.from_pretrained(folder).encode(suffix_of(config), add_special_tokens=False))
        self.model = AutoModelForSequenceClassification.from_pretrained(
            folder, dtype=getattr(torch, dtype)).to(self.device).eval()
        self.forwards = 0

    @torch.inference_mode()
    def __call__(self, sequences: Sequence[Sequence[int]]) -> list[float]:
        """Each sequence's value, longest first in batches of at most BATCH_TOKENS tokens,
        left-padded so that every row's last token, the one the head reads, is the last
        position (the model's own pooling would look for a padding id, which a sequence may hold)."""
        from marco_eval.backends.device import to_host

        seqs = [(*seq, *self.suffix) for seq in sequences]
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        out = [0.0] * len(seqs)
        while order:
            width = len(seqs[order[0]])
            n = max(1, BATCH_TOKENS // width)
            rows, order = order[:n], order[n:]
            ids = torch.zeros((len(rows), width), dtype=torch.long)  # [rows, width], built on the host, moved once
            mask = torch.zeros((len(rows), width), dtype=torch.long)  # [rows, width]
            for r, i in enumerate(rows):
                ids[r, width - len(seqs[i]):] = torch.tensor(seqs[i])
                mask[r, width - len(seqs[i]):] = 1
            pos = (mask.cumsum(-1) - 1).clamp(min=0)  # [rows, width]: true positions, padding at 0
            ids, mask, pos = ids.to(self.device), mask.to(self.device), pos.to(self.device)
            hidden = self.model.base_model(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state
            values = torch.sigmoid(self.model.score(hidden[:, -1]).float()[:, 0])  # [rows]
            self.forwards += 1
            for i, value in zip(rows, to_host(values)[0].tolist()):
                out[i] = value
        return out


class VerifierHead:
    """A verifier checkpoint, ready to value sequences for a TransformersPolicy: in `dtype`
    ("auto": the policy's; only then can it share the policy's body and keys/values)."""

    def __init__(self, path: str, policy, *, dtype: str = "auto"):
        folder, config = verifier_config(path, what=f"reward={path}")
        self.path, self.layer = str(folder), config.num_hidden_layers
        self.suffix = tuple(policy.encode(suffix_of(config)))
        self.dtype = getattr(torch, verifier_dtype_for(dtype, str(policy.dtype).removeprefix("torch.")))
        self.weight, self.model = None, None
        if self.dtype == policy.dtype and self._same_body(policy, folder):
            score = self._tensor(folder, "score.weight")  # [1, hidden]
            self.weight = score[0].float().to(policy.device)  # [hidden]
        else:
            from transformers import AutoModelForSequenceClassification

            self.model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=self.dtype).to(
                policy.device).eval()
        self.shares_policy = self.model is None

    @staticmethod
    def _tensor(folder: Path, name: str) -> torch.Tensor | None:
        from safetensors import safe_open

        for file in sorted(folder.glob("*.safetensors")):
            with safe_open(str(file), framework="pt") as f:
                if name in f.keys():
                    return f.get_tensor(name)
        return None

    def _same_body(self, policy, folder: Path) -> bool:
        """Are the checkpoint's embeddings, final norm and every layer norm of its L layers
        the policy's own? (Weights a fine-tune changes; bit-for-bit equal means the head
        was fitted on this very policy.)"""
        body = policy.model.model
        if self.layer > len(body.layers):
            return False
        names = {"model.embed_tokens.weight": body.embed_tokens.weight, "model.norm.weight": body.norm.weight}
        for i in range(self.layer):
            for part in ("input_layernorm", "post_attention_layernorm"):
                names[f"model.layers.{i}.{part}.weight"] = getattr(body.layers[i], part).weight
        for name, mine in names.items():
            theirs = self._tensor(folder, name)
            if theirs is None or theirs.shape != mine.shape or not torch.equal(theirs.to(mine.dtype), mine.cpu()):
                return False
        return True

    @torch.inference_mode()
    def values(self, policy, sequences: Sequence[tuple[int, ...]]) -> list[float]:
        """search.policy.Verifier: each sequence's value, one sequence at a time."""
        out = []
        for seq in sequences:
            seq = tuple(seq) + self.suffix
            policy.check_length(len(seq))
            logit = self._shared_logit(policy, seq) if self.shares_policy else self._own_logit(policy, seq)
            out.append(float(torch.sigmoid(logit)))
        return out

    def _shared_logit(self, policy, seq: tuple[int, ...]) -> torch.Tensor:
        """The policy's layer-L output at seq's last token, from its cached keys/values of seq[:-1]."""
        from marco_eval.backends.hf_cache import prefill_cache

        cached = policy._prefix_cache(seq)  # keys/values of seq[:-1], prefilled where not cached
        kv = policy.kv.materialize(cached.entry) if cached.entry is not None else cached.segments[0]
        ids = torch.tensor([[seq[-1]]], device=policy.device)  # [1, 1]
        pos = torch.tensor([[len(seq) - 1]], device=policy.device)  # [1, 1]
        mask = torch.ones((1, len(seq)), dtype=torch.long, device=policy.device)  # [1, len]
        body = policy.model.model
        with layer_outputs(policy.model, [self.layer]) as seen:
            try:
                body(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                     **{policy._cache_kw: prefill_cache(kv)})
            except stopped_early:
                pass
        policy.forwarded_tokens += 1
        hidden = body.norm(seen[self.layer][0, -1]).float()  # [hidden]
        return hidden @ self.weight

    def _own_logit(self, policy, seq: tuple[int, ...]) -> torch.Tensor:
        ids = torch.tensor([seq], device=policy.device)  # [1, len]
        return self.model(input_ids=ids).logits[0, 0].float()
