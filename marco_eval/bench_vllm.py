"""`marco-eval bench --backend vllm`: the search on vLLM, streamed and in lock-step, against
plain vLLM sampling of as many tokens from the same prompts.

For each workload and action, one repeat runs three things back to back on one engine:

  streaming  the search in its default schedule: requests join the engine as trees make them
  lockstep   the same search in lock-step rounds (one LLM.generate per search step)
  sampling   plain vLLM sampling, n samples a prompt, exactly as many tokens as streaming made

With `--repeats N` the repeats are interleaved (streaming, lockstep, sampling, then again),
so drift on a shared machine lands on all three alike, and the row gives medians: of each
rate, and of each ratio taken within its own repeat. One run on this project's CPU machine
has been 30% off the next, so a goal is held on the median of several.

Prefill counts the same way on every side. The prefix cache (always on) is emptied before
each of the three runs: with the same seeds the lock-step run makes the streamed run's very
trees, and without the reset it would find every prefix already computed. Within a run the
cache works as in real use (a tree's requests share their prefixes; sampling's n samples
share their prompt). prefill_tokens counts the prompt positions each run computed (prompt
tokens minus the ones the cache served, RequestOutput.num_cached_tokens). mean_in_engine is
the streaming run's mean number of requests in the engine per step, vLLM's counterpart of
the transformers backend's rows busy.
"""

from __future__ import annotations

import json
import statistics
import time

from marco_eval.bench_search import BenchSpec, make_engine, mgsm_prompts, run_search


def run_vllm_sampling(policy, prompts_ids, tokens: int, seed: int) -> dict:
    """Plain vLLM sampling over the same prompts: n samples each, exactly `tokens` in all."""
    vllm = policy._vllm
    per_row = max(8, min(512, -(-tokens // len(prompts_ids))))
    n = max(1, -(-tokens // (per_row * len(prompts_ids))))
    params = vllm.SamplingParams(n=n, temperature=0.7, top_p=0.95, max_tokens=per_row, min_tokens=per_row,
                                 ignore_eos=True, seed=seed)
    start = time.perf_counter()
    outputs = policy.llm.generate([vllm.TokensPrompt(prompt_token_ids=list(p)) for p in prompts_ids], params,
                                  use_tqdm=False)
    seconds = time.perf_counter() - start
    prompt = sum(len(o.prompt_token_ids) for o in outputs)
    return {"generated": sum(len(o.token_ids) for r in outputs for o in r.outputs), "seconds": seconds,
            "prefill": prompt - sum(o.num_cached_tokens or 0 for o in outputs)}


def gpu_name() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - a label only
        return None


def search_from_empty_cache(eng, texts, spec: BenchSpec, action: str, *, lockstep: bool) -> dict:
    """run_search with vLLM's prefix cache emptied first, plus the prompt positions it prefilled."""
    policy = eng.policy
    policy.llm.reset_prefix_cache()
    before = policy.prompt_tokens - policy.cached_prompt_tokens
    run = run_search(eng, texts, spec, action, lockstep=lockstep)
    run["prefill"] = policy.prompt_tokens - policy.cached_prompt_tokens - before
    return run


def median(values: list[float], digits: int) -> float:
    return round(statistics.median(values), digits)


def one_repeat(eng, texts, prompts, spec: BenchSpec, action: str, seed: int) -> dict:
    """Streaming, lock-step and sampling once each, back to back; rates and in-repeat ratios."""
    streaming = search_from_empty_cache(eng, texts, spec, action, lockstep=False)
    lockstep = search_from_empty_cache(eng, texts, spec, action, lockstep=True)
    eng.policy.llm.reset_prefix_cache()
    sampling = run_vllm_sampling(eng.policy, prompts, streaming["generated"], seed)
    tps, lockstep_tps = streaming["generated"] / streaming["seconds"], lockstep["generated"] / lockstep["seconds"]
    sampling_tps = sampling["generated"] / sampling["seconds"]
    return {"runs": (streaming, lockstep, sampling),
            "tokens_per_s": tps, "lockstep_tokens_per_s": lockstep_tps, "sampling_tokens_per_s": sampling_tps,
            "throughput_vs_sampling": tps / sampling_tps,
            "lockstep_throughput_vs_sampling": lockstep_tps / sampling_tps,
            "streaming_vs_lockstep": tps / lockstep_tps}


RATES = ("tokens_per_s", "lockstep_tokens_per_s", "sampling_tokens_per_s")
RATIOS = ("throughput_vs_sampling", "lockstep_throughput_vs_sampling", "streaming_vs_lockstep")


def bench_vllm(spec: BenchSpec, log=print) -> list[dict]:
    from marco_eval.backends.vllm import import_vllm

    import_vllm()  # no vllm: a one-line error now, before an alias is pulled
    eng = make_engine(spec, backend="vllm", tensor_parallel_size=spec.tensor_parallel_size,
                      gpu_memory_utilization=spec.gpu_memory_utilization)
    policy = eng.policy
    out = []
    for workload in spec.workloads:
        texts = mgsm_prompts(spec.problems, few_shot=workload == "few_shot")
        prompts = [policy.encode(eng.prompt_text(t)) for t in texts]
        for action in spec.actions:
            repeats = [one_repeat(eng, texts, prompts, spec, action, spec.seed) for _ in range(spec.repeats)]
            streaming, lockstep, sampling = repeats[0]["runs"]  # counts: the same in every repeat
            row = {
                "backend": "vllm", "workload": workload, "action": action, "model": spec.model, "dtype": policy.dtype,
                "gpu": gpu_name(), "tensor_parallel_size": spec.tensor_parallel_size, "problems": spec.problems,
                "simulations": spec.simulations, "children": spec.children, "tree_batch": spec.tree_batch,
                "repeats": spec.repeats, "settings": spec.settings,
                "prompt_tokens": sum(len(p) for p in prompts), "generated_tokens": streaming["generated"],
                "lockstep_generated_tokens": lockstep["generated"],  # sampled searches may differ (vLLM's batch numerics)
                # prompt positions each run computed, its prefix cache emptied first
                "prefill_tokens": {"streaming": streaming["prefill"], "lockstep": lockstep["prefill"],
                                   "sampling": sampling["prefill"]},
                # streaming: engine steps and the mean number of requests in the engine per step
                "engine_steps": streaming["engine_steps"], "mean_in_engine": streaming["mean_in_engine"],
                "search_steps": streaming["search_steps"],
                "lockstep_engine_calls": lockstep["engine_calls"],  # one LLM.generate per round
                **{k: median([r[k] for r in repeats], 2) for k in RATES},
                **{k: median([r[k] for r in repeats], 3) for k in RATIOS},
                "same_outputs_as_lockstep": streaming["outputs"] == lockstep["outputs"],
                "seconds": {name: median([r["runs"][i]["seconds"] for r in repeats], 2)
                            for i, name in enumerate(("engine", "lockstep", "sampling"))},
                # every repeat's own figures, in the order run (the medians above come from these)
                "per_repeat": {k: [round(r[k], 3) for r in repeats] for k in (*RATES, *RATIOS)},
            }
            log(json.dumps(row))
            out.append(row)
    return out
