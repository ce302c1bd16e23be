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
runs the same search on the vLLM backend twice, streaming (the default schedule: requests
join the engine as trees make them) and in lock-step rounds (one LLM.generate per search
step), and compares both with plain vLLM sampling of the same number of tokens from the
same prompts. Prefill counts the same way on every side: each prompt is prefilled once
(the search's requests and sampling's n samples share it through vLLM's prefix cache,
which is always on, so there is no naive row). mean_in_engine is the streaming run's mean
number of requests in the engine per step, the vLLM counterpart of rows busy.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from marco_eval.errors import InputError
from marco_eval.paths import TASKS_DIR


@dataclass
class BenchSpec:
    model: str = "qwen2.5-coder-0.5b"
    workloads: tuple[str, ...] = ("zero_shot", "few_shot")
    actions: tuple[str, ...] = ("step", "mini_step")
    problems: int = 4
    simulations: int = 3
    children: int = 2
    mini_step_tokens: int = 32
    max_new_tokens: int = 384
    tree_batch: int = 4  # problems searched at once
    max_batch: int = 8  # rows per forward pass, for the engine and for plain sampling alike
    dtype: str = "auto"
    device: str = "auto"  # hf: auto, cpu, cuda or cuda:N
    seed: int = 1234
    backend: str = "hf"  # or "vllm"
    tensor_parallel_size: int = 1  # vllm: GPUs per engine
    gpu_memory_utilization: float = 0.9  # vllm
    unshared_prompts: bool = True  # hf: also run the engine with share_prompts off (reported apart)


QUICK = dict(model="smollm2-135m", workloads=("zero_shot",), problems=2, simulations=1, max_new_tokens=24,
             tree_batch=2, mini_step_tokens=8)


def mgsm_prompts(n: int, few_shot: bool) -> list[str]:
    if str(TASKS_DIR) not in sys.path:  # the task's own loader and prompt, not a copy
        sys.path.insert(0, str(TASKS_DIR))
    import mgsm_utils

    ds = mgsm_utils.load_mgsm_en()
    shots = ""
    if few_shot:
        shots = "".join(f"{mgsm_utils.doc_to_text_en(d)}\n{mgsm_utils.fewshot_target(d)}\n\n" for d in ds["train"])
    return [shots + mgsm_utils.doc_to_text_en(ds["test"][i]) for i in range(n)]


def make_engine(spec: BenchSpec, **options):
    """The evaluation engine for this spec: the same model loading, prompt formatting and
    search building as `marco_mcts` (engine.py); the search knobs are set per action."""
    from marco_eval.engine import Engine

    return Engine.from_settings(None, pretrained=spec.model, dtype=spec.dtype, device=spec.device,
                                tree_batch=spec.tree_batch,
                                simulations=spec.simulations, children=spec.children,
                                mini_step_tokens=spec.mini_step_tokens, seed=spec.seed, **options)


def run_search(engine, prompts: list[str], spec: BenchSpec, action: str, *, lockstep: bool = False) -> dict:
    """The search over `prompts` with `action`, timed; the backend's counters read after.
    `lockstep`: lock-step rounds instead of the backend's streaming schedule."""
    from marco_eval.backends.hf import TransformersPolicy

    engine.search_config = dataclasses.replace(engine.search_config, action=action)
    policy = engine.policy
    timed = isinstance(policy, TransformersPolicy)
    if timed:  # its own cache, counter and stopwatch start afresh
        policy.forwarded_tokens = policy.shared_prefill_tokens = policy.decode_steps = policy.row_steps = 0
        policy.kv.clear()
        policy.stopwatch.on, policy.stopwatch.seconds = True, {}
    calls_before = getattr(policy, "generate_calls", 0)
    steps_before = (getattr(policy, "engine_steps", 0), getattr(policy, "in_flight_steps", 0))
    searches = [engine.make_search(p, until=("</Output>",), max_gen_toks=spec.max_new_tokens) for p in prompts]
    start, cpu_start = time.perf_counter(), time.process_time()
    results = engine.run(searches, lockstep=lockstep)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    split = None
    if timed:
        policy.stopwatch.on = False
        split = time_split(policy.stopwatch.seconds, seconds)
    generated = sum(r.generated_tokens for r in results)
    busy = round(100 * policy.row_steps / (policy.decode_steps * policy.max_batch), 1) \
        if timed and policy.decode_steps else None
    engine_steps = getattr(policy, "engine_steps", 0) - steps_before[0]
    in_flight = getattr(policy, "in_flight_steps", 0) - steps_before[1]
    return {"rows_busy_pct": busy, "generated": generated, "forwarded": getattr(policy, "forwarded_tokens", None),
            "shared": getattr(policy, "shared_prefill_tokens", 0), "seconds": seconds,
            "cpu_seconds": cpu_seconds, "engine_calls": getattr(policy, "generate_calls", 0) - calls_before,
            "engine_steps": engine_steps, "mean_in_engine": round(in_flight / engine_steps, 2) if engine_steps else None,
            "search_steps": max(r.policy_calls for r in results), "split": split,
            "outputs": [[x.token_ids for x in r.tree.rollouts] for r in results]}


TIME_PARTS = ("prefill", "decode", "cache", "sample", "search")


def time_split(parts: dict[str, float], total: float) -> dict[str, float]:
    """Percent of a run's wall time per part of the backend's loop (Stopwatch): prefill and
    decode are model forwards, cache the KV tree and batch cache, sample token choice and
    stop strings, search the searches' bookkeeping between results and requests; other is
    what no part caught (the driver outside the loop, starting the searches)."""
    split = {p: round(100 * parts.get(p, 0.0) / total, 1) for p in TIME_PARTS}
    split["other"] = round(100 - sum(split.values()), 1)
    return split


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
    return {"generated": sum(len(o.token_ids) for r in outputs for o in r.outputs), "seconds": seconds}


def gpu_name() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - a label only
        return None


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
            engine = run_search(eng, texts, spec, action)
            lockstep = run_search(eng, texts, spec, action, lockstep=True)
            sampling = run_vllm_sampling(policy, prompts, engine["generated"], spec.seed)
            tps, sampling_tps = engine["generated"] / engine["seconds"], sampling["generated"] / sampling["seconds"]
            lockstep_tps = lockstep["generated"] / lockstep["seconds"]
            row = {
                "backend": "vllm", "workload": workload, "action": action, "model": spec.model, "dtype": policy.dtype,
                "gpu": gpu_name(), "tensor_parallel_size": spec.tensor_parallel_size, "problems": spec.problems,
                "simulations": spec.simulations, "children": spec.children, "tree_batch": spec.tree_batch,
                "prompt_tokens": sum(len(p) for p in prompts), "generated_tokens": engine["generated"],
                "lockstep_generated_tokens": lockstep["generated"],  # sampled searches may differ (vLLM's batch numerics)
                # streaming: engine steps and the mean number of requests in the engine per step
                "engine_steps": engine["engine_steps"], "mean_in_engine": engine["mean_in_engine"],
                "search_steps": engine["search_steps"],
                "lockstep_engine_calls": lockstep["engine_calls"],  # one LLM.generate per round
                "tokens_per_s": round(tps, 2), "lockstep_tokens_per_s": round(lockstep_tps, 2),
                "sampling_tokens_per_s": round(sampling_tps, 2),
                "throughput_vs_sampling": round(tps / sampling_tps, 3),
                "lockstep_throughput_vs_sampling": round(lockstep_tps / sampling_tps, 3),
                "streaming_vs_lockstep": round(tps / lockstep_tps, 3),
                "same_outputs_as_lockstep": engine["outputs"] == lockstep["outputs"],
                "seconds": {"engine": round(engine["seconds"], 2), "lockstep": round(lockstep["seconds"], 2),
                            "sampling": round(sampling["seconds"], 2)},
            }
            log(json.dumps(row))
            out.append(row)
    return out


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


def bench(spec: BenchSpec, log=print) -> list[dict]:
    if spec.backend == "vllm":
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
                "batch_width": spec.max_batch, "tree_batch": spec.tree_batch,
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
            log(json.dumps(row))
            out.append(row)
    return out


def main(args) -> int:
    spec = BenchSpec(**(QUICK if args.quick else {}))
    for name in ("model", "problems", "simulations", "children", "tree_batch", "max_new_tokens", "dtype", "max_batch",
                 "backend", "tensor_parallel_size", "device"):
        value = getattr(args, name, None)
        if value is not None:
            setattr(spec, name, value)
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
    for name in ("problems", "simulations", "children", "tree_batch", "max_new_tokens", "tensor_parallel_size"):
        if getattr(spec, name) <= 0:
            raise InputError(f"--{name.replace('_', '-')} must be a positive integer")
    rows = bench(spec)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{args.out}.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.replace(args.out)  # never half a file
    return 0
