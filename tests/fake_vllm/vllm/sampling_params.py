"""vllm.sampling_params in the fake: RequestOutputKind, as vLLM 0.32 has it."""

from enum import Enum


class RequestOutputKind(Enum):
    CUMULATIVE = 0  # every step: the whole output so far
    DELTA = 1  # every step: what is new
    FINAL_ONLY = 2  # once, when the request finishes
