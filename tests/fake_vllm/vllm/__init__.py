"""A fake `vllm` for CPU tests: the subset of vLLM's API that marco-eval uses, with vLLM's
semantics (as of vLLM 0.32), running a scripted model (tests/scripted_lm.py) instead of a GPU engine.

Tests put tests/fake_vllm on sys.path; `LLM(model="module:attr")` runs the ScriptedLM at
that import path. Like vLLM: prompts are TokensPrompt dicts (text prompts are refused here,
to prove none are sent); greedy needs n=1; n samples are seeded seed, seed+1, ...;
`logprobs=k` gives per token {id: Logprob} with the top k plus the sampled token; log-probs
are raw (before temperature); the token that completes a stop string, or EOS, is kept in
token_ids (stop strings are searched in the text of whole characters, as vLLM's incremental
detokenizer holds back a character's partial bytes); finish_reason "stop" with stop_reason
= the stop string (the EOS id for EOS), or "length"; temperature above 2 or an empty stop
string is refused, one below 0.01 raised to 0.01; CompletionOutput is built by keyword and
Logprob lives in vllm.logprobs.

`LLM.llm_engine` is the request-level engine (`add_request`, `step`, `abort_request`): at
most max_num_seqs requests run, the rest wait in arrival order; a step makes one token for
each running request, so a short request comes back before a long one that started first.
Only final outputs are given (RequestOutputKind.FINAL_ONLY, which the fake requires).

Prefix caching, counted only: `num_cached_tokens` is the longest run of whole 16-token
blocks a request's prompt shares with an earlier request's (never the last prompt token,
which vLLM always computes); `reset_prefix_cache()` forgets them.
"""

from __future__ import annotations

import importlib
import math
import random
from dataclasses import dataclass, field
from types import SimpleNamespace

from vllm.logprobs import Logprob  # like vLLM: the class lives in vllm.logprobs, not exported here
from vllm.sampling_params import RequestOutputKind

__all__ = ["LLM", "SamplingParams", "TokensPrompt", "CompletionOutput", "RequestOutput"]

@dataclass
class EngineArgs:  # the engine arguments the fake knows (vLLM's has many more)
    model: str = ""
    revision: str | None = None
    trust_remote_code: bool = False
    dtype: str = "auto"
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    kv_cache_memory_bytes: int | None = None
    enable_prefix_caching: bool | None = None
    logprobs_mode: str = "raw_logprobs"
    max_model_len: int | None = None
    seed: int | None = None
    enforce_eager: bool = False
    max_num_seqs: int | None = None
    swap_space: float = 4


ENGINE_ARGS = {f for f in EngineArgs.__dataclass_fields__ if f != "model"}


@dataclass(kw_only=True)  # 0.32 added fields in the middle (routed_experts): build it by keyword
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    routed_experts: object | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    prompt_logprobs: list[dict[int, Logprob] | None] | None
    outputs: list[CompletionOutput] = field(default_factory=list)
    finished: bool = True
    num_cached_tokens: int = 0


def TokensPrompt(*, prompt_token_ids):  # a TypedDict in vLLM
    return {"prompt_token_ids": prompt_token_ids}


class SamplingParams:
    def __init__(self, n=1, temperature=1.0, top_p=1.0, seed=None, max_tokens=16, stop=None,
                 include_stop_str_in_output=False, logprobs=None, prompt_logprobs=None, ignore_eos=False,
                 min_tokens=0, output_kind=RequestOutputKind.CUMULATIVE):
        if temperature < 1e-5 and n > 1:
            raise ValueError(f"n must be 1 when using greedy sampling, got {n}.")
        if temperature > 2.0:
            raise ValueError(f"temperature must be in [0, 2], got {temperature}.")
        if 0 < temperature < 0.01:
            temperature = 0.01  # vLLM raises tiny temperatures silently
        if stop and any(s == "" for s in stop):
            raise ValueError("stop cannot contain an empty string.")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}.")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}.")
        self.n, self.temperature, self.top_p, self.seed, self.max_tokens = n, temperature, top_p, seed, max_tokens
        self.stop = list(stop or [])
        self.include_stop_str_in_output = include_stop_str_in_output
        self.logprobs, self.prompt_logprobs = logprobs, prompt_logprobs
        self.ignore_eos, self.min_tokens = ignore_eos, min_tokens
        self.output_kind = output_kind


def _entries(logp: list[float], k: int, chosen: int | None, decode) -> dict[int, Logprob]:
    order = sorted(range(len(logp)), key=lambda t: -logp[t])
    keep = order[:k] + ([chosen] if chosen is not None and chosen not in order[:k] else [])
    return {t: Logprob(logp[t], order.index(t) + 1, decode([t])) for t in keep}


def _sample(logp: list[float], sp: SamplingParams, rng: random.Random) -> int:
    if sp.temperature < 1e-5:
        return max(range(len(logp)), key=lambda t: logp[t])
    scaled = [v / sp.temperature for v in logp]
    m = max(scaled)
    probs = [math.exp(v - m) for v in scaled]
    total = sum(probs)
    order = sorted(range(len(probs)), key=lambda t: -probs[t])
    kept, mass = [], 0.0
    for t in order:  # nucleus: the smallest head reaching top_p
        kept.append(t)
        mass += probs[t] / total
        if mass >= sp.top_p:
            break
    return rng.choices(kept, weights=[probs[t] for t in kept])[0]


class LLM:
    built = 0  # engines constructed in this process

    def __init__(self, model: str, **engine_args):
        unknown = set(engine_args) - ENGINE_ARGS
        if unknown:
            raise TypeError(f"unexpected engine arguments {sorted(unknown)}")
        module, attr = model.split(":")
        self.model = getattr(importlib.import_module(module), attr)
        self.engine_args = engine_args
        max_len = engine_args.get("max_model_len") or self.model.max_length
        self.llm_engine = LLMEngine(self, SimpleNamespace(max_model_len=max_len, dtype="float32"),
                                    engine_args.get("max_num_seqs") or 256)
        self.calls: list[tuple[list[dict], list[SamplingParams]]] = []
        self._cached_blocks: set[tuple[int, ...]] = set()  # prompt prefixes of whole blocks seen
        LLM.built += 1

    def reset_prefix_cache(self, reset_running_requests: bool = False, reset_connector: bool = False) -> bool:
        self._cached_blocks.clear()
        return True

    def _cached_tokens(self, prompt: list[int], block: int = 16) -> int:
        cached = 0
        for end in range(block, len(prompt), block):  # a block ending at the last token is recomputed
            if tuple(prompt[:end]) not in self._cached_blocks:
                break
            cached = end
        self._cached_blocks.update(tuple(prompt[:end]) for end in range(block, len(prompt) + 1, block))
        return cached

    def get_tokenizer(self):
        return self.model.tokenizer

    def generate(self, prompts, sampling_params=None, use_tqdm=True):
        prompts = prompts if isinstance(prompts, list) else [prompts]
        if any(not isinstance(p, dict) or "prompt_token_ids" not in p for p in prompts):
            raise TypeError("fake vllm: prompts must be TokensPrompt (token ids), not text")
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError("the lengths of prompts and sampling_params must be the same")
        if self.llm_engine.has_unfinished_requests():  # vLLM would hand them to this call's caller
            raise AssertionError("fake vllm: LLM.generate while the engine streams other requests")
        self.calls.append((prompts, params))
        return [self._request(str(i), p["prompt_token_ids"], sp) for i, (p, sp) in enumerate(zip(prompts, params))]

    def _request(self, request_id, prompt, sp: SamplingParams) -> RequestOutput:
        if len(prompt) >= self.llm_engine.model_config.max_model_len:
            raise ValueError("prompt is longer than max_model_len")
        decode = self.model.tokenizer.decode
        prompt_lp = None
        if sp.prompt_logprobs is not None:
            prompt_lp = [None] + [_entries(self.model.next_logprobs(prompt[:i]), sp.prompt_logprobs, prompt[i], decode)
                                  for i in range(1, len(prompt))]
        samples = [self._sample(list(prompt), sp, index) for index in range(sp.n)]
        return RequestOutput(request_id, list(prompt), prompt_lp, samples,
                             num_cached_tokens=self._cached_tokens(list(prompt)))

    def _sample(self, prompt, sp: SamplingParams, index: int) -> CompletionOutput:
        rng = random.Random(None if sp.seed is None else sp.seed + index)
        decode = self.model.tokenizer.decode
        ids, lps, finish, reason = [], [], "length", None
        shown = ""  # the output text as vLLM's detokenizer has it: whole characters only
        max_tokens = min(sp.max_tokens, self.llm_engine.model_config.max_model_len - len(prompt))
        while len(ids) < max_tokens:
            logp = self.model.next_logprobs(prompt + ids)
            token = _sample(logp, sp, rng)
            ids.append(token)
            if sp.logprobs is not None:
                lps.append(_entries(logp, sp.logprobs, token, decode))
            if len(ids) < sp.min_tokens:
                continue
            if token in self.model.eos_ids and not sp.ignore_eos:
                finish, reason = "stop", token  # vLLM names a generation-config EOS id; None for the tokenizer's
                break
            text = decode(ids)
            if text.endswith("\ufffd"):  # a character's bytes still arriving: vLLM adds no text yet
                continue
            hit = next((s for s in sp.stop if text.find(s, max(0, len(shown) - len(s) + 1)) != -1), None)
            shown = text
            if hit is not None:
                finish, reason = "stop", hit
                break
        return CompletionOutput(index=index, text=decode(ids), token_ids=ids, cumulative_logprob=None,
                                logprobs=lps if sp.logprobs is not None else None, finish_reason=finish,
                                stop_reason=reason)


class LLMEngine:
    """The request-level engine under LLM (module docstring)."""

    def __init__(self, llm: LLM, model_config, max_num_seqs: int):
        self.llm, self.model_config = llm, model_config
        self.vllm_config = SimpleNamespace(model_config=model_config,
                                           scheduler_config=SimpleNamespace(max_num_seqs=max_num_seqs))
        self.waiting: list[tuple[str, RequestOutput]] = []
        self.running: dict[str, list] = {}  # request id -> [steps left, its output]
        self.steps = 0
        self.added: list[str] = []  # request ids in the order they arrived

    def add_request(self, request_id, prompt, params) -> str:
        if not isinstance(request_id, str):
            raise TypeError(f"request_id must be a string, got {type(request_id)}")
        if not isinstance(prompt, dict) or "prompt_token_ids" not in prompt:
            raise TypeError("fake vllm: prompts must be TokensPrompt (token ids), not text")
        if params.output_kind is not RequestOutputKind.FINAL_ONLY:
            raise AssertionError("fake vllm: the engine streams every step's output unless FINAL_ONLY is asked for")
        if request_id in self.running or any(r == request_id for r, _ in self.waiting):
            raise ValueError(f"request id {request_id} is already in the engine")
        self.waiting.append((request_id, self.llm._request(request_id, prompt["prompt_token_ids"], params)))
        self.added.append(request_id)
        return request_id

    def has_unfinished_requests(self) -> bool:
        return bool(self.waiting or self.running)

    def abort_request(self, request_ids, internal: bool = False) -> None:
        self.waiting = [(r, o) for r, o in self.waiting if r not in request_ids]
        for r in request_ids:
            self.running.pop(r, None)

    def step(self) -> list[RequestOutput]:
        while self.waiting and len(self.running) < self.vllm_config.scheduler_config.max_num_seqs:
            request_id, out = self.waiting.pop(0)
            self.running[request_id] = [max(1, len(out.outputs[0].token_ids)), out]
        self.steps += 1
        done = []
        for request_id, entry in list(self.running.items()):
            entry[0] -= 1
            if entry[0] == 0:
                done.append(self.running.pop(request_id)[1])
        return done
