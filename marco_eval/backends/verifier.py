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


class CheckpointVerifier:
    """A verifier checkpoint on its own, with its own tokenizer: search.export.Values for
    `marco-eval tree check`, which recomputes the values a search backed up without the
    policy that made them."""

    def __init__(self, path: str | Path, *, device: str = "auto", dtype: str = "float32"):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from marco_eval.backends.device import resolve_device

        folder, config = verifier_config(path, what=f"verifier {path}")
        self.device = resolve_device(device)
        self.suffix = tuple(AutoTokenizer.from_pretrained(folder).encode(suffix_of(config), add_special_tokens=False))
        self.model = AutoModelForSequenceClassification.from_pretrained(
            folder, dtype=getattr(torch, dtype)).to(self.device).eval()

    @torch.inference_mode()
    def __call__(self, sequences: Sequence[Sequence[int]]) -> list[float]:
        out = []
        for seq in sequences:
            ids = torch.tensor([[*seq, *self.suffix]], device=self.device)  # [1, len]
            out.append(float(torch.sigmoid(self.model(input_ids=ids).logits[0, 0].float())))
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
