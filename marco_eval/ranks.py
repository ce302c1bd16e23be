"""Ranks: one process of a multi-process launch, for lm-eval's sharding and collectives.

The transformers backend scales out under `accelerate launch -m lm_eval ...`: lm-eval shards
the requests by rank itself (evaluator: build_all_requests(rank=lm.rank,
world_size=lm.world_size)) and gathers metrics through the model's all_gather /
gather_object / barrier, which Ranks provides from accelerate's PartialState, as lm-eval's
own HF model does. A single process changes nothing.
"""

from __future__ import annotations

import os


class Ranks:
    """rank / world_size / device and lm-eval's collectives for one process of a
    multi-process launch; for a single process, rank 0 of 1 and no-ops."""

    def __init__(self, state=None):
        self.state = state  # accelerate.PartialState when launched with several processes

    @classmethod
    def detect(cls) -> Ranks:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # set by accelerate launch / torchrun
            from accelerate import PartialState

            return cls(PartialState())
        return cls()

    @property
    def rank(self) -> int:
        return self.state.process_index if self.state else 0

    @property
    def world_size(self) -> int:
        return self.state.num_processes if self.state else 1

    @property
    def device(self) -> str | None:
        return str(self.state.device) if self.state else None

    def all_gather(self, tensor):
        if self.world_size == 1:
            return tensor
        from accelerate.utils import gather

        return gather(tensor)

    def gather_object(self, obj, dst: int = 0):
        if self.world_size == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world_size if self.rank == dst else None
        dist.gather_object(obj, out, dst=dst)
        return out

    def barrier(self) -> None:
        if self.world_size > 1:
            self.state.wait_for_everyone()
