"""vllm.logprobs in the fake: where vLLM 0.32 keeps Logprob (the top-level package does not export it)."""

from dataclasses import dataclass


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None
