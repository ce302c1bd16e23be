"""The contract between the search and a model backend.

The search never sees a model. It asks a `Policy` to continue token-id prefixes:

    "continue each of these prefixes, sampling at this temperature/top_p with this seed,
     stop when the generated text contains one of these strings or after N tokens, and give
     me the tokens, each token's log-probability and the top-5 log-probabilities at that
     position, all from the raw (temperature-free) distribution"

Backends (transformers, vLLM, a scripted fake in tests) implement `Policy`: `generate`
plus a tokenizer pair (`Codec`); a backend that can batch continuously also implements
`StreamingPolicy`. The driver checks these with isinstance, never by probing names. Token ids are the state; text is derived with `decode` and never
re-tokenised, except for fixed phrases (the reflection prompt) encoded on their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable, Protocol, Sequence, runtime_checkable

TOP_K = 5  # a Generation's top log-probs per position: the confidence reward's top-5 (reward.py)


@dataclass(frozen=True)
class Continue:
    prefix: tuple[int, ...]  # prompt + path token ids
    max_new_tokens: int
    stop: tuple[str, ...] = ()  # stop after the first token whose text completes one of these
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0  # per-request seed: this request's own generator, whatever else is in the batch
    keep_cache: bool = True  # a hint: this continuation will be extended later (cache its state)


@dataclass(frozen=True)
class Score:
    """Ask a verifier for the value of a finished sequence: the prompt and a whole rollout
    (or sample), as token ids. The search yields these only when its reward is a verifier."""
    sequence: tuple[int, ...]


@dataclass
class Generation:
    token_ids: list[int]
    logprobs: list[float]  # raw log p of each chosen token
    top_logprobs: list[list[float]]  # raw top-TOP_K log-probs at each position, descending
    finish: str  # "stop" (a stop string), "eos", or "length"
    stop: str | None = None  # which stop string ended it

    def __post_init__(self):
        if not (len(self.token_ids) == len(self.logprobs) == len(self.top_logprobs)):
            raise ValueError("Generation: token_ids, logprobs and top_logprobs must align")


@runtime_checkable
class Codec(Protocol):
    """Text <-> token ids. The search decodes generated ids (answers, stop strings) and
    encodes fixed phrases on their own (the reflection prompt); it never re-tokenises text
    it generated."""

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without special tokens (no BOS added).

        Args:
            text: any string.
        Returns:
            The ids the model's tokenizer gives for `text` alone.
        """
        ...

    def decode(self, token_ids: Sequence[int]) -> str:
        """The text of `token_ids`, special tokens skipped.

        Args:
            token_ids: ids from `encode` or from a Generation.
        Returns:
            The decoded string.
        """
        ...


@runtime_checkable
class Policy(Codec, Protocol):
    """What the search needs of a model: continue token-id prefixes (module docstring)."""

    def generate(self, requests: Sequence[Continue]) -> list[Generation]:
        """Continue every request; the batch is the backend's business.

        Args:
            requests: prefixes with their token cap, stop strings, temperature, top_p and
                seed. Each request draws from a generator of its own, seeded by its seed
                alone, so its draws never depend on what else is in the call. The logits
                they draw from may: batched kernels round a row by the batch's make-up
                (bf16, any GPU kernel whose choice follows the row count), so only in
                float32 on a CPU is a sample, in practice, the same alone and in company.
                The same command and settings on the same machine give the same bytes
                (docs/reliability.md, Determinism).
        Returns:
            One Generation per request, in request order: generated ids (a stop string's
            tokens and an EOS token included), each token's raw log-prob and the raw top-5
            log-probs at its position, and why it ended.
        """
        ...


@runtime_checkable
class StreamingPolicy(Policy, Protocol):
    """A policy that batches continuously: rows join and leave a running batch.

    The lock-step driver waits for a whole call; with this the driver hands requests over
    as trees produce them and gets each result the moment its row finishes, so no row
    waits for another tree's long rollout (driver.py)."""

    def generate_stream(self, pull: Callable[[int], list[tuple[Hashable, Continue]]],
                        push: Callable[[Hashable, Generation], None]) -> None:
        """Decode until `pull` has nothing more and every row has finished.

        Args:
            pull: called with n free rows; returns up to n (key, request) pairs to start
                (fewer, or none, when nothing is ready yet).
            push: called with (key, generation) as soon as that request finishes.
        Returns:
            None, once no row is live and `pull` returned nothing.
        """
        ...


@runtime_checkable
class Verifier(Protocol):
    """A model that values finished sequences (a learned verifier, train/verifier.py): the
    driver hands it the searches' Score requests."""

    def value_many(self, sequences: Sequence[tuple[int, ...]]) -> list[float]:
        """Value every sequence.

        Args:
            sequences: prompt + completion token ids, each a whole rollout or sample.
        Returns:
            Per sequence, in order, the verifier's probability in [0, 1] that its answer is
            right; a sequence's value depends on nothing else in the call.
        """
        ...
