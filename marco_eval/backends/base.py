"""What the engine and the lm-eval adapter read of a loaded backend, beyond the search's
Policy (search/policy.py): the tokenizer and context size, and scoring for lm-eval's
loglikelihood requests. Checked with isinstance, never by probing names."""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from marco_eval.search.policy import Codec


@runtime_checkable
class LoadedModel(Codec, Protocol):
    """A model (or, for data parallelism, its tokenizer half) ready to serve requests.

    Attributes:
        name: the model as the user named it (alias resolved to a path, or a hub id).
        tokenizer: the Hugging Face tokenizer (chat template, special tokens).
        max_length: the context size in tokens.
        pad_id: padding, and the token that stands for an empty context.
        dtype: what the weights were loaded as (printable; part of the store fingerprint).
        commit_hash: the hub commit transformers resolved, or None (local paths, vLLM).
    """

    name: str
    tokenizer: object
    max_length: int
    pad_id: int
    dtype: object
    commit_hash: str | None

    def check_length(self, n_prefix: int) -> None:
        """Raise ValueError (one line, with the fix) when a prefix of `n_prefix` tokens
        leaves no room in the context for even one generated token.

        Args:
            n_prefix: prompt length in tokens, plus one for the first generated token.
        Returns:
            None.
        """
        ...


@runtime_checkable
class Scorer(Protocol):
    """Log-likelihoods of continuations (lm-eval's loglikelihood and rolling requests)."""

    def score_many(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """Score every (context ids, continuation ids) pair.

        Args:
            pairs: token ids; a context is never empty (the caller puts pad_id there).
        Returns:
            Per pair: log P(continuation | context) from the raw distribution, and whether
            greedy decoding would have produced the continuation.
        """
        ...
