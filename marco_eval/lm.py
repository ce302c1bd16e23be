"""The lm-eval model "marco_mcts": generate_until runs the Marco-o1 search.

    lm_eval --model marco_mcts \
        --model_args pretrained=qwen2.5-coder-0.5b,config=mcts_step,simulations=8 \
        --tasks mgsm_en

model_args = `pretrained`, `config` (a YAML in model_configs/ or a path) and any key of
SearchConfig / ModelOptions (marco_eval/config.py) as an override; unknown keys fail fast,
before the model loads. loglikelihood / loglikelihood_rolling are served by the same
backend (transformers, or vLLM with backend=vllm), so multiple-choice and perplexity
tasks work too. Scale-out: backend=vllm with data_parallel_size=N (persistent workers,
parallel.py), or the transformers backend under `accelerate launch -m lm_eval`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from marco_eval import config as run_config
from marco_eval.backends import build_policy
from marco_eval.models import resolve
from marco_eval.parallel import Ranks
from marco_eval.search import Search, run_searches
from marco_eval.search.export import tree_document, write_json_atomic


def answer_function(kind: str):
    from marco_eval.answers import extract_answer, extract_output_text

    if kind == "number":
        return lambda text: extract_answer(text, "flexible")
    if kind == "output":  # free text (translation): what the task's filter scores
        return lambda text: extract_output_text(text) or None
    return None


def make_policy(o: run_config.ModelOptions):
    """The backend for these options; with backend=vllm and data_parallel_size > 1, a pool of
    persistent worker processes (one engine each) behind a tokenizer-only codec."""
    if o.backend == "vllm" and o.data_parallel_size > 1:
        from marco_eval.backends.codec import load_tokenizer
        from marco_eval.backends.vllm import import_vllm
        from marco_eval.parallel import WorkerPool

        import_vllm()  # fail in one line here rather than in every worker

        o = dataclasses.replace(o, pretrained=resolve(o.pretrained))  # pull an alias once, here
        return WorkerPool(o, load_tokenizer(o.pretrained, o.revision, o.trust_remote_code))
    return build_policy(o)


@register_model("marco_mcts")
class MarcoMCTSLM(LM):
    def __init__(self, pretrained: str | None = None, config: str | None = None, **overrides):
        super().__init__()
        if pretrained is not None:
            overrides["pretrained"] = pretrained
        if overrides.get("device") in (None, ""):
            overrides.pop("device", None)
        # Validate everything before touching the model: a typo costs a second, not a load.
        self.search_config, self.options = run_config.build(config, **overrides)
        self.config_name = config
        o = self.options
        # Under `accelerate launch -m lm_eval` lm-eval shards requests by our rank (parallel.py).
        self.ranks = Ranks.detect()
        self._rank, self._world_size = self.ranks.rank, self.ranks.world_size
        if self.ranks.world_size > 1:
            if o.backend == "vllm":
                raise run_config.ConfigError("backend=vllm runs in one process: use data_parallel_size=N "
                                             "instead of accelerate launch")
            o.device = self.ranks.device  # one GPU per rank, as lm-eval's hf model does
        self.policy = make_policy(o)
        o.device = getattr(self.policy, "device", o.device)  # what is really used (lm-eval passes cuda by default)
        self._device = o.device
        self.tokenizer = self.policy.tokenizer
        self._answer_fn = answer_function(o.answer)
        self._templated_by_lm_eval = False
        self.stats: list[dict] = []  # per request: tokens generated, policy calls, seconds

    # ------------------------------------------------------------------ prompts
    @property
    def tokenizer_name(self) -> str:
        return self.policy.name.replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return getattr(self.tokenizer, "chat_template", None) or ""

    def apply_chat_template(self, chat_history, add_generation_prompt: bool = True) -> str:
        """Called by lm-eval under --apply_chat_template: the prompt arrives templated."""
        self._templated_by_lm_eval = True
        text = self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt,
                                                  continue_final_message=not add_generation_prompt)
        return text + (self.options.response_prefix if add_generation_prompt else "")

    def prompt_text(self, context: str) -> str:
        """A raw task prompt becomes one user turn (plus our system prompt) in the model's
        chat template, unless lm-eval templated it already or templating is off."""
        o = self.options
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        if self._templated_by_lm_eval or o.chat_template == "off" or (o.chat_template == "auto" and not has_template):
            return context
        messages = ([{"role": "system", "content": o.system_prompt}] if o.system_prompt else []) + [
            {"role": "user", "content": context}]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text + o.response_prefix

    # ------------------------------------------------------------------ generation
    def make_search(self, context: str, gen_kwargs: dict) -> Search:
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        prompt_ids = self.policy.encode(self.prompt_text(context))
        self.policy.check_length(len(prompt_ids) + 1)
        budget = int(gen_kwargs.get("max_gen_toks") or self.options.max_gen_toks)
        budget = min(budget, self.policy.max_length - len(prompt_ids))
        return Search(self.search_config, prompt_ids, self.policy, max_new_tokens=budget, until=until,
                      answer_fn=self._answer_fn)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        searches = [self.make_search(*req.args) for req in requests]
        tree_dir = Path(self.options.tree_dir) if self.options.tree_dir else None
        bar = tqdm(total=len(requests), disable=disable_tqdm, desc="marco_mcts")
        started = time.perf_counter()
        texts: list[str | None] = [None] * len(requests)

        def on_done(i, result):
            req = requests[i]
            texts[i] = result.text
            self.stats.append({"request": i, "generated_tokens": result.generated_tokens,
                               "policy_calls": result.policy_calls, "candidates": result.candidates,
                               "seconds_since_start": round(time.perf_counter() - started, 3)})
            if tree_dir is not None:
                name = f"{getattr(req, 'task_name', 'request')}_{getattr(req, 'doc_id', i)}_{getattr(req, 'repeats', 0)}_{i}.json"
                write_json_atomic(tree_dir / name, tree_document(searches[i], result, i, req.args[0]))
            self.cache_hook.add_partial("generate_until", req.args, result.text)
            result.tree = None  # free the tree as soon as its request is done
            searches[i] = None
            bar.update(1)

        if hasattr(self.policy, "run_searches"):  # data parallel: whole trees split across workers
            self.policy.run_searches(searches, width=self.options.tree_batch, on_done=on_done)
        else:
            run_searches(searches, self.policy, width=self.options.tree_batch, on_done=on_done)
        bar.close()
        return texts  # type: ignore[return-value]

    # ------------------------------------------------------------------ scoring
    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        # Trailing whitespace of the context belongs to the continuation (lm-eval's convention).
        n_space = len(context) - len(context.rstrip())
        if n_space:
            context, continuation = context[:-n_space], context[-n_space:] + continuation
        whole = self.policy.encode(context + continuation)
        ctx = self.policy.encode(context)
        if not ctx:  # empty context: condition on end-of-text
            return [self.policy.pad_id], whole
        return ctx, whole[len(ctx):]

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        out = []
        # vLLM scores a chunk in one engine call; the transformers backend one pair at a time.
        chunk = 256 if hasattr(self.policy, "score_many") else 1
        with tqdm(total=len(requests), disable=disable_tqdm, desc="loglikelihood") as bar:
            for start in range(0, len(requests), chunk):
                reqs = requests[start: start + chunk]
                pairs = [self._encode_pair(*req.args) for req in reqs]
                scores = self.policy.score_many(pairs) if chunk > 1 else [self.policy.score(*pairs[0])]
                for req, result in zip(reqs, scores, strict=True):
                    self.cache_hook.add_partial("loglikelihood", req.args, result)
                    out.append(result)
                bar.update(len(reqs))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        out = []
        for req in tqdm(requests, disable=disable_tqdm, desc="loglikelihood_rolling"):
            ids = self.policy.encode(req.args[0])
            windows = map(make_disjoint_window, get_rolling_token_windows(
                token_list=ids, prefix_token=self.policy.pad_id, max_seq_len=self.policy.max_length, context_len=1))
            total = sum(self.policy.score(list(ctx), list(cont))[0] for ctx, cont in windows)
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
            out.append(total)
        return out

    # ------------------------------------------------------------------ ranks (lm-eval's collectives)
    def all_gather(self, tensor):
        return self.ranks.all_gather(tensor)

    def gather_object(self, obj, dst=0):
        return self.ranks.gather_object(obj, dst)

    def barrier(self) -> None:
        self.ranks.barrier()

    def get_model_info(self) -> dict:
        return {"marco_eval_config": run_config.as_dict(self.search_config, self.options),
                "marco_eval_config_file": self.config_name, "dtype": str(self.policy.dtype)}
