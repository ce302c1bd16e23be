"""How the transformers backend holds a model's weights on the device: the dtype `auto`
picks (bf16 on GPUs and on CPUs with avx512_bf16/AMX, else fp32) and, on a CPU in bf16, linear
layers packed once for oneDNN (PackedLinear), with the checkpoint's pages of each packed
weight handed back so the model is not held twice while loading."""

from __future__ import annotations

import ctypes
import mmap

import torch

from marco_eval.errors import InputError


class PackedLinear(torch.nn.Module):
    """nn.Linear with its weight reordered once into oneDNN's blocked layout: a bf16
    F.linear on the CPU reorders the weight on every call, a large share of the matmul time
    at decode batch sizes (docs/speed.md), for bit-identical results."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), 8)  # opaque layout
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., in] -> [..., out]
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


@torch.inference_mode()
def pack_linears(model: torch.nn.Module) -> int:
    """Swap the model's bf16 nn.Linear layers for PackedLinear where the results are
    bit-identical on this CPU, probed with random rows and the real weights. F.linear's
    one-row kernel depends on the shape and agrees with oneDNN's on most rows either way
    (qwen2.5's down_proj: 0 to 9 rows in 32 differ, layer by layer), so one differing row in
    any layer of a shape leaves every layer of that shape unpacked (keeping both forms would
    cost its weights twice in memory). A weight shared with another module (tied embeddings)
    stays too. Returns how many were packed."""
    shared = {id(p) for name, m in model.named_modules() if not isinstance(m, torch.nn.Linear)
              for p in m.parameters(recurse=False)}
    gen, swaps, differs, maps = torch.Generator().manual_seed(0), [], set(), _file_maps()
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if not isinstance(child, torch.nn.Linear) or child.weight.dtype != torch.bfloat16 \
                    or child.weight.device.type != "cpu" or id(child.weight) in shared \
                    or tuple(child.weight.shape) in differs:
                continue
            try:
                swap = PackedLinear(child)
            except RuntimeError:  # no oneDNN (or no bf16 support in it) in this torch build
                return 0

            def same(rows: int) -> bool:
                x = torch.randn(1, rows, child.in_features, generator=gen).to(torch.bfloat16)  # [1, rows, in]
                return torch.equal(swap(x), torch.nn.functional.linear(x, child.weight, child.bias))

            if all(same(rows) for rows in (1, 1, 1, 1, 1, 1, 1, 1, 2, 3, 8, 64)):
                swaps.append((module, child_name, child, swap))
            else:
                differs.add(tuple(child.weight.shape))
            _drop_mapped_pages(child.weight, maps)  # read from the file again if it stays in use
    swaps = [s for s in swaps if tuple(s[2].weight.shape) not in differs]
    for module, child_name, child, swap in swaps:
        setattr(module, child_name, swap)
    return len(swaps)


def _file_maps() -> list[tuple[int, int]]:
    """Address ranges of this process's private file mappings of checkpoint files."""
    try:
        lines = open("/proc/self/maps").read().splitlines()
    except OSError:
        return []
    return [tuple(int(x, 16) for x in line.split()[0].split("-")) for line in lines
            if line.endswith((".safetensors", ".bin")) and line.split()[1].endswith("p")]


def _drop_mapped_pages(weight: torch.Tensor, maps: list[tuple[int, int]]) -> None:
    """A packed layer's original weight lies in the memory-mapped checkpoint, whose pages,
    once read, count in RSS until the whole map goes (other weights keep it). Hand back the
    whole pages inside it now (MADV_DONTNEED: a private file map's unwritten pages re-read
    from the file if touched again), so packing does not hold the model twice at its peak."""
    start = weight.data_ptr()
    end = start + weight.numel() * weight.element_size()
    if not any(lo <= start and end <= hi for lo, hi in maps):
        return
    page = mmap.PAGESIZE
    lo, hi = -(-start // page) * page, end // page * page
    if hi > lo:
        ctypes.CDLL(None).madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), 4)  # 4 = MADV_DONTNEED


def cpu_supports_bf16() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype != "auto":
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise InputError(f"dtype={dtype!r}: use auto, bfloat16, float16 or float32")
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        # bf16 where the GPU computes it (compute capability 8.0, Ampere, and later); before
        # that torch only emulates it, several times slower, so fp16 (pass dtype=float32 for
        # a model that overflows in fp16)
        return torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32
