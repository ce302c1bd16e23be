"""The contract between the search and a model backend.

The search never sees a model. It asks a `Policy` to continue token-id prefixes:

    "continue each of these prefixes, sampling at this temperature/top_p with this seed,
     stop when the generated text contains one of these strings or after N tokens, and give
     me the tokens, each token's log-probability and the top-5 log-probabilities at that
     position, all from the raw (temperature-free) distribution"

Backends (transformers, vLLM, a scripted fake in tests) implement `generate` plus a
tokenizer pair. Token ids are the state; text is derived with `decode` and never
re-tokenised, except for fixed phrases (the reflection prompt) encoded on their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence


@dataclass(frozen=True)
class Continue:
    prefix: tuple[int, ...]  # prompt + path token ids
    max_new_tokens: int
    stop: tuple[str, ...] = ()  # stop after the first token whose text completes one of these
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0  # per-request seed: the sample does not depend on what else is in the batch
    keep_cache: bool = True  # a hint: this continuation will be extended later (cache its state)


@dataclass
class Generation:
    token_ids: list[int]
    logprobs: list[float]  # raw log p of each chosen token
    top_logprobs: list[list[float]]  # raw top-5 log-probs at each position, descending
    finish: str  # "stop" (a stop string), "eos", or "length"
    stop: str | None = None  # which stop string ended it

    def __post_init__(self):
        if not (len(self.token_ids) == len(self.logprobs) == len(self.top_logprobs)):
            raise ValueError("Generation: token_ids, logprobs and top_logprobs must align")


class Policy(Protocol):
    def generate(self, requests: Sequence[Continue]) -> list[Generation]: ...

    def decode(self, token_ids: Sequence[int]) -> str: ...

    def encode(self, text: str) -> list[int]: ...
