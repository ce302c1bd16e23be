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
import sys
import time
from pathlib import Path

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from marco_eval import config as run_config
from marco_eval import store as request_store
from marco_eval.backends import build_policy
from marco_eval.errors import InputError, first_line, install_excepthook
from marco_eval.models import ALIASES, ModelError, resolve
from marco_eval.parallel import Ranks
from marco_eval.search import Search, run_searches
from marco_eval.files import write_json_atomic
from marco_eval.search.export import tree_document

install_excepthook()  # plain `lm_eval`: a UserError prints one line, not a traceback (errors.py)


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


USE_CACHE_MARKER = "marco_eval_fingerprint"  # key of our fingerprint in lm-eval's --use_cache database


def _label(req, i: int) -> str:
    """How an error names a request: lm-eval's task and document, else its position."""
    task, doc = getattr(req, "task_name", None), getattr(req, "doc_id", None)
    return f"{task} doc {doc}" if task is not None else f"request {i}"


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
        if o.pretrained not in ALIASES:
            resolve(o.pretrained)  # a missing path or a directory without weights fails now, not after a load
        # A bad store path fails now; under accelerate each rank keeps its own file.
        store_path = o.store if self.ranks.world_size == 1 else f"{o.store}.rank{self.ranks.rank}"
        self.store = request_store.RequestStore(store_path) if o.store else None
        self._fingerprint: str | None = None
        # The model loads on first use, so task and data errors (lm-eval loads tasks after
        # creating the model) are reported before any weights are read.
        self._policy = None
        self._device = o.device
        self._answer_fn = answer_function(o.answer)
        self._templated_by_lm_eval = False
        self.stats: list[dict] = []  # per request: tokens generated, policy calls, seconds

    # ------------------------------------------------------------------ model, fingerprint
    @property
    def policy(self):
        if self._policy is None:
            o = self.options
            try:
                self._policy = make_policy(o)
            except OSError as e:  # transformers: no such hub id, hub unreachable, unreadable files
                raise ModelError(f"could not load pretrained={o.pretrained!r} ({first_line(e)}); give an alias "
                                 f"({', '.join(ALIASES)}), a checkpoint directory or a reachable hub id") from e
            o.device = getattr(self._policy, "device", o.device)  # what is really used (lm-eval passes cuda by default)
            self._device = o.device
        return self._policy

    @property
    def tokenizer(self):
        return self.policy.tokenizer

    def fingerprint(self) -> str:
        """Model identity + every setting that can change an answer (store.py)."""
        if self._fingerprint is None:
            policy, o = self.policy, self.options
            model_config = getattr(getattr(policy, "model", None), "config", None)
            identity = request_store.model_identity(resolve(o.pretrained), o.revision, str(policy.dtype),
                                                    getattr(model_config, "_commit_hash", None))
            settings = run_config.answer_settings(self.search_config, o)
            self._fingerprint = request_store.fingerprint(identity, settings)
        return self._fingerprint

    def set_cache_hook(self, cache_hook) -> None:
        """lm-eval's --use_cache keys answers by request only; tag its database with our
        fingerprint so another model or config never reads answers it did not write."""
        super().set_cache_hook(cache_hook)
        db = getattr(cache_hook, "dbdict", None)
        if db is None:
            return
        found = db.get(USE_CACHE_MARKER)
        if (found is None and len(db)) or (found is not None and found != self.fingerprint()):
            raise run_config.ConfigError(
                f"--use_cache {db.filename} holds answers of another model or config; give a new cache path, "
                "or resume marco_mcts runs with store=PATH in --model_args")
        db[USE_CACHE_MARKER] = self.fingerprint()
        db.commit()

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
    def make_search(self, context: str, gen_kwargs: dict, label: str = "a request") -> Search:
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        prompt_ids = self.policy.encode(self.prompt_text(context))
        asked = gen_kwargs.get("max_gen_toks")
        budget = self.options.max_gen_toks if asked is None else asked
        if isinstance(budget, bool) or not str(budget).isdigit() or int(budget) <= 0:
            raise InputError(f"{label}: max_gen_toks={budget!r} (from the task or --gen_kwargs) must be a positive integer")
        budget = int(budget)
        try:
            self.policy.check_length(len(prompt_ids) + 1)
        except ValueError as e:  # the prompt does not fit the model's context
            raise InputError(f"{label}: {e}") from None
        budget = min(budget, self.policy.max_length - len(prompt_ids))
        return Search(self.search_config, prompt_ids, self.policy, max_new_tokens=budget, until=until,
                      answer_fn=self._answer_fn)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        started = time.perf_counter()
        texts: list[str | None] = [None] * len(requests)
        keys = self._stored_texts(requests, texts)  # fills texts[i] for requests a killed run finished
        todo = [i for i, text in enumerate(texts) if text is None]
        searches = [self.make_search(*requests[i].args, label=_label(requests[i], i)) for i in todo]
        tree_dir = Path(self.options.tree_dir) if self.options.tree_dir else None
        bar = tqdm(total=len(requests), initial=len(requests) - len(todo), disable=disable_tqdm, desc="marco_mcts")

        def on_done(j, result):
            i, req = todo[j], requests[todo[j]]
            texts[i] = result.text
            seconds = round(time.perf_counter() - started, 3)
            self.stats.append({"request": i, "generated_tokens": result.generated_tokens,
                               "policy_calls": result.policy_calls, "candidates": result.candidates,
                               "seconds_since_start": seconds})
            if tree_dir is not None:
                name = f"{getattr(req, 'task_name', 'request')}_{getattr(req, 'doc_id', i)}_{getattr(req, 'repeats', 0)}_{i}.json"
                write_json_atomic(tree_dir / name, tree_document(searches[j], result, i, req.args[0]))
            if self.store is not None:
                self.store.add({"key": keys[i], "fingerprint": self.fingerprint(),
                                "task": getattr(req, "task_name", None), "doc_id": getattr(req, "doc_id", None),
                                "text": result.text, "answer": result.answer, "candidates": result.candidates,
                                "generated_tokens": result.generated_tokens, "policy_calls": result.policy_calls,
                                "seconds": seconds, **request_store.search_record(result)})
            self.cache_hook.add_partial("generate_until", req.args, result.text)
            result.tree = None  # free the tree as soon as its request is done
            searches[j] = None
            bar.update(1)

        if hasattr(self.policy, "run_searches"):  # data parallel: whole trees split across workers
            self.policy.run_searches(searches, width=self.options.tree_batch, on_done=on_done)
        else:
            run_searches(searches, self.policy, width=self.options.tree_batch, on_done=on_done)
        bar.close()
        return texts  # type: ignore[return-value]

    def _stored_texts(self, requests, texts: list) -> list[str | None]:
        """With store=PATH: each request's key, and texts[i] set where the store has it."""
        if self.store is None:
            return [None] * len(requests)
        keys = [request_store.request_key(self.fingerprint(), *req.args) for req in requests]
        for i, key in enumerate(keys):
            if (record := self.store.get(key)) is not None:
                texts[i] = record["text"]
        done = sum(t is not None for t in texts)
        print(f"marco_mcts: store {self.store.path}: {done} of {len(requests)} requests already finished, "
              f"searching {len(requests) - done}", file=sys.stderr, flush=True)
        return keys

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
