"""A scripted language model that both backends can run on CPU.

One token per character (id = ord(c), 0 = end-of-sequence, 128 ids; with ByteTokenizer one
per UTF-8 byte, 256 ids). The model's next-token distribution is a fixed function of the
ids so far: after the question line (text up to the first newline) it "intends" to write
BODY token by token, then EOS; the
intended token gets logit `intended`, every other token a pseudo-random logit in
[0, noise) that depends on (position, token). So the top 5 differ from step to step, and
with a low `intended` a sampled token is often outside the top 5.

- `ScriptedLM.next_logprobs(ids)` is the model; the fake vLLM (tests/fake_vllm) calls it.
- `torch_model(lm)` wraps it as a transformers-style causal LM for TransformersPolicy: a
  one-layer "KV cache" that stores the token ids themselves, so the backend's real cache
  handling (prefix caches, left padding, rows leaving the batch) decides what it sees.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

EOS = 0
VOCAB = 128
BODY = "Step 1 add.\n\nStep 2 sum.\n\n<Output>7</Output>"


class CharTokenizer:
    eos_token_id = EOS
    pad_token_id = None
    chat_template = None
    name_or_path = "scripted-char"

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids if not (skip_special_tokens and i == EOS))


class ByteTokenizer(CharTokenizer):
    """One token per UTF-8 byte (256 ids; byte 0 is EOS): what byte fallback does to
    characters outside a vocabulary, so a CJK character is three tokens and a prefix of
    them decodes to U+FFFD."""

    name_or_path = "scripted-bytes"
    vocab = 256

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(text.encode("utf-8"))}

    def decode(self, ids, skip_special_tokens=True):
        return bytes(i for i in ids if not (skip_special_tokens and i == EOS)).decode("utf-8", errors="replace")


class ScriptedLM:
    def __init__(self, body: str = BODY, intended: float = 12.0, noise: float = 4.0, max_length: int = 512,
                 question_label: str = "", tokenizer: CharTokenizer | None = None):
        self.body, self.intended, self.noise, self.max_length = body, intended, noise, max_length
        self.tokenizer = tokenizer or CharTokenizer()
        self.vocab = getattr(self.tokenizer, "vocab", VOCAB)
        self.body_ids = self.tokenizer(body)["input_ids"]
        self.eos_ids = (EOS,)
        # The question line starts at this label (the MGSM prompt's "Question:"), else at
        # the first character: instructions above it are not the question.
        self.label = [ord(c) for c in question_label]

    def intended_token(self, ids) -> int:
        start = 0
        for i in range(len(ids) - len(self.label), -1, -1) if self.label else ():
            if list(ids[i: i + len(self.label)]) == self.label:
                start = i
                break
        if 10 not in ids[start:]:  # no newline yet: the question line ends first
            return 10
        k = len(ids) - ids.index(10, start) - 1  # characters written after the question line
        return self.body_ids[k] if k < len(self.body_ids) else EOS

    def logits(self, ids) -> list[float]:
        p = len(ids)
        out = [self.noise * (((p * 7919 + t * 104729) * 2654435761) % 1000) / 1000 for t in range(self.vocab)]
        out[self.intended_token(ids)] = self.intended
        return out

    def next_logprobs(self, ids) -> list[float]:
        z = self.logits(ids)
        m = max(z)
        lse = m + math.log(sum(math.exp(v - m) for v in z))
        return [v - lse for v in z]


MODEL = ScriptedLM()
FLAT = ScriptedLM(intended=1.0, noise=1.5)  # sampling often picks a token outside the top 5
MGSM = ScriptedLM(question_label="Question:", max_length=2048)  # answers 7 to an MGSM-style prompt
# Chinese steps and answer, one token per byte: "答案：" is 9 tokens
CJK = ScriptedLM(body="第一步：三加四。\n\n答案：7", tokenizer=ByteTokenizer())


def torch_model(lm: ScriptedLM):
    """Just enough of a transformers causal LM, running `lm`, for backends/hf.py."""
    import torch

    class ScriptedCausalLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            text = SimpleNamespace(num_key_value_heads=1, num_attention_heads=1, head_dim=1, hidden_size=1,
                                   num_hidden_layers=1)
            self.config = SimpleNamespace(max_position_embeddings=lm.max_length, get_text_config=lambda: text)
            self.generation_config = SimpleNamespace(eos_token_id=EOS)

        def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False,
                    logits_to_keep=0, past_key_values=None):
            if past_key_values is None:  # scoring: left-padded rows, the last `logits_to_keep` positions
                out = []
                for r in range(input_ids.shape[0]):
                    ids = input_ids[r][attention_mask[r].bool()].tolist() if attention_mask is not None else input_ids[r].tolist()
                    per_position = [[0.0] * lm.vocab] * (input_ids.shape[1] - len(ids)) + [
                        lm.logits(ids[: i + 1]) for i in range(len(ids))]
                    out.append(per_position[-logits_to_keep:] if logits_to_keep else per_position)
                return SimpleNamespace(logits=torch.tensor(out, device=input_ids.device))
            rows, n = input_ids.shape
            keys = input_ids.to(torch.float32).view(rows, 1, n, 1)  # the "cache" holds the ids
            history, _ = past_key_values.update(keys, keys.clone(), 0)
            seqs = [history[r, 0, :, 0][attention_mask[r].bool()].long().tolist() for r in range(rows)]
            return SimpleNamespace(logits=torch.tensor([[lm.logits(ids)] for ids in seqs], device=input_ids.device))

    return ScriptedCausalLM()
