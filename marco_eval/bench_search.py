"""What every `marco-eval bench` shares: the spec, the MGSM prompts, the engine, and one
timed search with the backend's counters read after it (bench.py: the transformers
backend; bench_vllm.py: vLLM)."""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field

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
    repeats: int = 1  # interleaved repeats of each cell; rows report medians (one run here can be 30% off)
    # more model_args (`--set KEY=VALUE`, e.g. vllm_args.block_size=32), recorded in each row; not the
    # ones the fields above set
    settings: dict = field(default_factory=dict)


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

    own = dict(pretrained=spec.model, dtype=spec.dtype, device=spec.device, tree_batch=spec.tree_batch,
               simulations=spec.simulations, children=spec.children, mini_step_tokens=spec.mini_step_tokens,
               seed=spec.seed, **options)
    if taken := sorted(set(spec.settings) & {*own, "action"}):  # action: run_search sets it per cell
        raise InputError(f"--set {taken[0]}=...: the bench sets {taken[0]} itself; use its own flag "
                         f"(marco-eval bench --help)")
    return Engine.from_settings(None, **own, **spec.settings)


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


