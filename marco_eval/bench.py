"""`marco-eval bench`: what KV sharing and lock-step batching buy, measured in one process.

For each workload (MGSM-En prompts, zero-shot or 8-shot) and action (step, mini-step) it
runs the same search three ways on the same model:

  engine    our search with KV reuse across the tree (the default)
  naive     the same search with cache reuse off: every expansion and rollout re-reads
            its whole prefix (what a generate()-per-node implementation does)
  sampling  plain batched `model.generate` at the same batch width, producing the same
            number of tokens: the throughput ceiling of the hardware for this model

and prints one JSON object per workload/action. forwarded_tokens counts every token
position the model processed (prefill and decode, padding included), and
shared_prefill_tokens the prompt positions the backend took from another prompt's prefill
instead of forwarding them (prompt sharing, below); forwarded_per_generated =
(forwarded_tokens + shared_prefill_tokens - prompt_tokens) / generated_tokens, so 1.0 means
that after each prompt's one-time prefill (shared or forwarded) every token was forwarded
exactly once.
time_split_pct splits the engine's and the naive run's wall time into the backend's parts
(prefill and decode forwards, cache handling, token sampling, search bookkeeping; see
`time_split`), so a regression shows where it lands. cpu_speedup_vs_naive and
cpu_throughput_vs_sampling are the same ratios over the process's CPU time, which time slices
lost to other processes on a shared machine do not distort. share_prompts_off reports the engine
once more with the backend's prompt sharing off (on by default: prompts that start alike
prefill their common whole chunks once), with whether the outputs came out the same (they
must: sharing is exact).
The sampling figure is decode only; sampling_prefill_once_tokens_per_s adds one prefill of
each prompt, which the engine's time includes, so throughput_vs_sampling_prefill_once
compares equal work. rows_busy_pct: the share of the batch's rows that decoded, over every
decode step (rows stand idle while a tree waits on a slower sibling and nothing is queued).

`--backend vllm` (a GPU machine with the [vllm] extra, or vLLM's CPU build in .venv-vllm)
runs the search on the vLLM backend, streamed and in lock-step rounds, against plain vLLM
sampling: bench_vllm.py.

`--repeats N` (both backends) runs each cell's search and its sampling N times, interleaved,
and reports medians (of rates, and of ratios taken within each repeat) beside every
repeat's figures (per_repeat); the hf backend's naive and share_prompts_off runs are made once.

`--set KEY=VALUE` (repeatable) passes any other model_arg to the engine, e.g.
`vllm_args.block_size=32` for vLLM's KV block size; each row records them under settings.
"""

from __future__ import annotations

import json
import resource
import statistics
import time
from pathlib import Path

from marco_eval.bench_search import QUICK, BenchSpec, make_engine, mgsm_prompts, run_search
from marco_eval.errors import InputError
from marco_eval.settings import parse_overrides


def run_sampling(policy, prompts_ids, batch: int, tokens: int, seconds_cap: float) -> dict:
    """Plain `generate` over the same prompts, `batch` rows per call, until `tokens` are made.

    Decode throughput only: each call's prompt prefill is timed separately (a
    max_new_tokens=1 call on the same rows) and subtracted, because the engine prefills
    each prompt once while sampling would prefill every row again. `prefill_once_seconds`
    is the prefill of the calls that first cover every prompt: what sampling would add to
    prefill each prompt once, as the engine must (the engine's time includes it)."""
    import torch

    from marco_eval.backends.device import synchronizer

    model, sync = policy.model, synchronizer(policy.device) or (lambda: None)
    per_row = max(8, min(512, -(-tokens // batch)))
    made, seconds, cpu_seconds, prefill_once, i = 0, 0.0, 0.0, 0.0, 0
    while made < tokens and seconds < seconds_cap:
        rows = [prompts_ids[(i + j) % len(prompts_ids)] for j in range(batch)]
        i += batch
        width = max(len(r) for r in rows)
        ids = torch.tensor([[policy.pad_id] * (width - len(r)) + list(r) for r in rows], device=policy.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=policy.device)
        timed, cpu = [], []
        for n in (1, per_row):
            start, cpu_start = time.perf_counter(), time.process_time()
            with torch.inference_mode():
                out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=0.7,
                                     top_p=0.95, max_new_tokens=n, min_new_tokens=n, pad_token_id=policy.pad_id)
            sync()
            timed.append(time.perf_counter() - start)
            cpu.append(time.process_time() - cpu_start)
        seconds += max(timed[1] - timed[0], 1e-9)
        if i - batch < len(prompts_ids):  # this call prefilled a prompt for the first time
            prefill_once += timed[0]
        cpu_seconds += max(cpu[1] - cpu[0], 1e-9)
        made += (out.shape[1] - width - 1) * batch
    return {"generated": made, "seconds": seconds, "cpu_seconds": cpu_seconds, "prefill_once_seconds": prefill_once}


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def forwarded_per_generated(run: dict, prompt_tokens: int) -> float:
    """Positions forwarded beyond each prompt's one-time prefill, per generated token; a prompt
    position taken from another prompt's prefill counts as prefilled (1.0: each generated
    token forwarded once)."""
    return round((run["forwarded"] + run["shared"] - prompt_tokens) / run["generated"], 4)


def unshared_prompts_run(eng, texts, spec: BenchSpec, action: str, engine: dict,
                        sampling_tps: float, sampling_cpu_tps: float) -> dict:
    """The engine again with share_prompts off (on by default: prompts that start alike take
    their common whole chunks from one prefill): what sharing buys, and whether this run's
    outputs came out the same, as they must (sharing is exact, tests/test_real_model.py)."""
    policy = eng.policy
    policy.share_prompts = False
    try:
        unshared = run_search(eng, texts, spec, action)
    finally:
        policy.share_prompts = True
    tps, cpu_tps = unshared["generated"] / unshared["seconds"], unshared["generated"] / unshared["cpu_seconds"]
    return {"tokens_per_s": round(tps, 2), "throughput_vs_sampling": round(tps / sampling_tps, 3),
            "cpu_throughput_vs_sampling": round(cpu_tps / sampling_cpu_tps, 3),
            "forwarded_tokens": unshared["forwarded"], "generated_tokens": unshared["generated"],
            "seconds": round(unshared["seconds"], 2), "time_split_pct": unshared["split"],
            "same_outputs": unshared["outputs"] == engine["outputs"]}


def engine_vs_sampling(engine: dict, sampling: dict) -> dict[str, float]:
    """One repeat's rates, and its ratios taken within the repeat."""
    tps, sampling_tps = engine["generated"] / engine["seconds"], sampling["generated"] / sampling["seconds"]
    once_tps = sampling["generated"] / (sampling["seconds"] + sampling["prefill_once_seconds"])
    cpu = (engine["generated"] / engine["cpu_seconds"]) / (sampling["generated"] / sampling["cpu_seconds"])
    return {"tokens_per_s": tps, "sampling_tokens_per_s": sampling_tps, "throughput_vs_sampling": tps / sampling_tps,
            "sampling_prefill_once_tokens_per_s": once_tps, "throughput_vs_sampling_prefill_once": tps / once_tps,
            "cpu_throughput_vs_sampling": cpu}


def repeated_engine_vs_sampling(eng, texts, prompts, spec: BenchSpec, action: str, first: tuple) -> dict:
    """spec.repeats - 1 more runs of the engine and of sampling, each pair back to back after
    the first repeat's (whose naive and unshared runs are not repeated): the medians of every
    engine-vs-sampling figure, which replace the first repeat's in the row, and each repeat's own."""
    repeats = [engine_vs_sampling(*first)]
    for _ in range(spec.repeats - 1):
        engine = run_search(eng, texts, spec, action)
        sampling = run_sampling(eng.policy, prompts, spec.max_batch, engine["generated"],
                                seconds_cap=max(30.0, engine["seconds"]))
        repeats.append(engine_vs_sampling(engine, sampling))
    medians = {k: round(statistics.median(r[k] for r in repeats), 2 if k.endswith("_per_s") else 3)
               for k in repeats[0]}
    return {**medians, "repeats": spec.repeats,
            "per_repeat": {k: [round(r[k], 3) for r in repeats] for k in repeats[0]}}


def bench(spec: BenchSpec, log=print) -> list[dict]:
    if spec.backend == "vllm":
        from marco_eval.bench_vllm import bench_vllm

        return bench_vllm(spec, log)
    eng = make_engine(spec, max_batch=spec.max_batch)
    policy = eng.policy
    out = []
    for workload in spec.workloads:
        texts = mgsm_prompts(spec.problems, few_shot=workload == "few_shot")
        prompts = [policy.encode(eng.prompt_text(t)) for t in texts]
        prompt_tokens = sum(len(p) for p in prompts)
        for action in spec.actions:
            rss = {}
            policy.kv_reuse = True
            engine = run_search(eng, texts, spec, action)
            rss["engine"] = peak_rss_mb()
            policy.kv_reuse = False
            naive = run_search(eng, texts, spec, action)
            rss["naive"] = peak_rss_mb()
            policy.kv_reuse = True
            sampling = run_sampling(policy, prompts, spec.max_batch, engine["generated"],
                                    seconds_cap=max(30.0, engine["seconds"]))
            rss["sampling"] = peak_rss_mb()
            tps = engine["generated"] / engine["seconds"]
            naive_tps = naive["generated"] / naive["seconds"]
            sampling_tps = sampling["generated"] / sampling["seconds"]
            # sampling that, like the engine, prefills each prompt once (the line above: none)
            sampling_once_tps = sampling["generated"] / (sampling["seconds"] + sampling["prefill_once_seconds"])
            cpu_tps = {k: r["generated"] / r["cpu_seconds"] for k, r in
                       (("engine", engine), ("naive", naive), ("sampling", sampling))}
            row = {
                "workload": workload, "action": action, "model": spec.model, "dtype": str(policy.dtype).replace("torch.", ""),
                "device": str(policy.device),
                "problems": spec.problems, "simulations": spec.simulations, "children": spec.children,
                "batch_width": spec.max_batch, "tree_batch": spec.tree_batch, "settings": spec.settings,
                "prompt_tokens": prompt_tokens, "generated_tokens": engine["generated"],
                "forwarded_tokens": engine["forwarded"], "shared_prefill_tokens": engine["shared"],
                "forwarded_per_generated": forwarded_per_generated(engine, prompt_tokens),
                "naive_forwarded_per_generated": forwarded_per_generated(naive, prompt_tokens),
                "tokens_per_s": round(tps, 2), "naive_tokens_per_s": round(naive_tps, 2),
                "sampling_tokens_per_s": round(sampling_tps, 2),
                "speedup_vs_naive": round(tps / naive_tps, 3), "throughput_vs_sampling": round(tps / sampling_tps, 3),
                "sampling_prefill_once_tokens_per_s": round(sampling_once_tps, 2),
                "throughput_vs_sampling_prefill_once": round(tps / sampling_once_tps, 3),
                "rows_busy_pct": {"engine": engine["rows_busy_pct"], "naive": naive["rows_busy_pct"]},
                # the same ratios over this process's CPU time: on a shared machine the wall
                # clock also counts time slices lost to other processes, unevenly between phases
                "cpu_speedup_vs_naive": round(cpu_tps["engine"] / cpu_tps["naive"], 3),
                "cpu_throughput_vs_sampling": round(cpu_tps["engine"] / cpu_tps["sampling"], 3),
                "seconds": {"engine": round(engine["seconds"], 2), "naive": round(naive["seconds"], 2),
                            "sampling": round(sampling["seconds"], 2)},
                "cpu_seconds": {k: round(r["cpu_seconds"], 2) for k, r in
                                (("engine", engine), ("naive", naive), ("sampling", sampling))},
                "time_split_pct": {"engine": engine["split"], "naive": naive["split"]},
                "peak_rss_mb_after": rss,
                "peak_rss_mb": peak_rss_mb(),
            }
            if spec.unshared_prompts:
                row["share_prompts_off"] = unshared_prompts_run(eng, texts, spec, action, engine,
                                                                sampling_tps, cpu_tps["sampling"])
            if spec.repeats > 1:
                row.update(repeated_engine_vs_sampling(eng, texts, prompts, spec, action, first=(engine, sampling)))
            log(json.dumps(row))
            out.append(row)
    return out


def main(args) -> int:
    spec = BenchSpec(**(QUICK if args.quick else {}))
    for name in ("model", "problems", "simulations", "children", "tree_batch", "max_new_tokens", "dtype", "max_batch",
                 "backend", "tensor_parallel_size", "device", "repeats"):
        value = getattr(args, name, None)
        if value is not None:
            setattr(spec, name, value)
    spec.settings = parse_overrides(getattr(args, "set", None) or [])
    if args.workloads:
        spec.workloads = tuple(args.workloads.split(","))
    if args.actions:
        spec.actions = tuple(args.actions.split(","))
    bad = [w for w in spec.workloads if w not in ("zero_shot", "few_shot")] + \
          [a for a in spec.actions if a not in ("step", "mini_step")]
    if bad:
        raise InputError(f"unknown workload/action {bad}; workloads: zero_shot,few_shot; actions: step,mini_step")
    if spec.backend not in ("hf", "vllm"):
        raise InputError(f"--backend {spec.backend}: use hf or vllm")
    for name in ("problems", "simulations", "children", "tree_batch", "max_new_tokens", "tensor_parallel_size",
                 "repeats"):
        if getattr(spec, name) <= 0:
            raise InputError(f"--{name.replace('_', '-')} must be a positive integer")
    rows = bench(spec)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{args.out}.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.replace(args.out)  # never half a file
    return 0
