"""The transformers backend's device rule: where tensors live and when they move.

1. The model, its keys/values (kvtree.KVTree, kvtree.BatchKV) and every tensor a forward
   reads (ids, positions, masks) live on `policy.device`, and are made there.
2. A decode step's logits stay there: the reductions over the vocabulary (log-softmax,
   top-5, softmax at each row's temperature, the top-p candidate cut) run on the device,
   batched over the rows (sampling.py).
3. Each row's generator lives on the host: a CPU `torch.Generator` seeded by its request,
   drawing only for that row. So a row's draws depend on nothing else in the batch and are
   the same whatever the device. What they draw from need not be: in bf16, and on a GPU
   (whose kernels change with the row count), a row's logits follow the batch's make-up,
   so a sample is batch-invariant only in float32 on a CPU; the same command and settings
   on the same machine give the same bytes (docs/reliability.md, Determinism).
4. Once per decode step, and never per row, the host takes what it needs in one batch of
   copies (sampling.StepOnHost): per row the top-5 log-probs and greedy token, and what the
   sampled rows draw from (their top-p candidates with those candidates' log-probs, or the
   whole row for plain-temperature rows). A row whose candidates hold less than top_p of
   the mass (rare) fetches its whole row once more.
On a CPU every copy above is the tensor itself, so CPU outputs are what they always were.
"""

from __future__ import annotations

from typing import Callable

import torch

from marco_eval.errors import InputError

HOST = torch.device("cpu")


def resolve_device(device: str) -> str:
    """'auto' -> cuda when available, else cpu; 'cpu', 'cuda' or 'cuda:N' checked against
    this machine. Raises InputError (one line) for a device it does not have."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise InputError(f"device={device!r}: use auto, cpu, cuda or cuda:N") from None
    if parsed.type == "cpu":
        return "cpu"
    if parsed.type != "cuda":
        raise InputError(f"device={device!r}: the transformers backend runs on cpu or cuda[:N]")
    if not torch.cuda.is_available():
        raise InputError(f"device={device}: this machine has no CUDA device that torch can use "
                         f"(torch {torch.__version__}); use device=cpu or device=auto")
    count = torch.cuda.device_count()
    if parsed.index is not None and parsed.index >= count:
        raise InputError(f"device={device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return device


def to_host(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The tensors on the host, with one wait for the device (not one per tensor); on a CPU,
    the tensors themselves."""
    if all(t.device.type == "cpu" for t in tensors):
        return tensors
    copies = tuple(t.to(HOST, non_blocking=True) for t in tensors)  # into pinned memory, queued
    torch.cuda.synchronize(tensors[0].device)
    return copies


def synchronizer(device: str) -> Callable[[], None] | None:
    """What waits for the device's queued work (timing it), None on a CPU."""
    if not device.startswith("cuda"):
        return None
    return lambda: torch.cuda.synchronize(device)


def check_memory(device: str, kv_cache_mb: int) -> None:
    """The KV tree's cap must fit the device memory left once the model is loaded; else a
    one-line error now rather than an out-of-memory error an hour into a run."""
    if not device.startswith("cuda"):
        return
    free, _ = torch.cuda.mem_get_info(device)
    free_mb = free // 2**20
    if kv_cache_mb > free_mb:
        raise InputError(f"kv_cache_mb={kv_cache_mb} is more than the {free_mb} MiB free on {device} after "
                         f"loading the model; lower kv_cache_mb (and max_batch if the batch runs out too)")
