"""Model backends behind the search's Policy protocol (search/policy.py).

    hf     TransformersPolicy (hf.py): CPU or GPU, hand-written batched decode loop, KV tree
    vllm   VLLMPolicy (vllm.py): GPU, vLLM engine with prefix caching; optional extra

Each module imports its heavy dependency itself, so importing this package costs nothing.
"""

from __future__ import annotations


def build_policy(options):
    """The Policy that `options` (config.ModelOptions) asks for, on `options.device`."""
    from marco_eval.models import resolve

    o = options
    if o.backend == "vllm":
        from marco_eval.backends.vllm import VLLMPolicy, import_vllm

        import_vllm()  # no vllm: a one-line error now, before an alias is pulled
        return VLLMPolicy(resolve(o.pretrained), dtype=o.dtype, revision=o.revision,
                          trust_remote_code=o.trust_remote_code, tensor_parallel_size=o.tensor_parallel_size,
                          gpu_memory_utilization=o.gpu_memory_utilization, max_model_len=o.max_model_len,
                          kv_cache_mb=o.kv_cache_mb, engine_args=o.vllm_args,
                          verifier=None if o.reward == "confidence" else o.reward, verifier_dtype=o.verifier_dtype)
    from marco_eval.backends.hf import TransformersPolicy

    return TransformersPolicy(resolve(o.pretrained), dtype=o.dtype, device=o.device, max_batch=o.max_batch,
                              revision=o.revision, trust_remote_code=o.trust_remote_code, kv_reuse=o.kv_reuse,
                              kv_cache_mb=o.kv_cache_mb, verifier=None if o.reward == "confidence" else o.reward,
                              verifier_dtype=o.verifier_dtype)
