"""The lm-eval model "marco_mcts": lm-eval's requests in, the engine's searches out.

    lm_eval --model marco_mcts \
        --model_args pretrained=qwen2.5-coder-0.5b,config=mcts_step,simulations=8 \
        --tasks mgsm_en

model_args = `pretrained`, `config` (a YAML in model_configs/ or a path) and any key of
SearchConfig / ModelOptions (marco_eval/settings.py) as an override; unknown keys fail fast,
before the model loads. This module only translates: the engine (engine.py) builds the
model, prompts and searches and runs them. lm-eval's TemplateLM does the tokenising of
loglikelihood pairs; the backend scores them. Scale-out: backend=vllm with
data_parallel_size=N (engine replicas on Ray, data_parallel.py), or the transformers
backend under `accelerate launch -m lm_eval` (ranks.py).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences
from tqdm import tqdm

from marco_eval import generation_kwargs, settings
from marco_eval import progress
from marco_eval import store as request_store
from marco_eval.engine import Engine
from marco_eval.errors import ConfigError, install_excepthook
from marco_eval.files import write_json_atomic
from marco_eval.ranks import Ranks
from marco_eval.readers import kind_for_task
from marco_eval.search.export import tree_document

install_excepthook()  # plain `lm_eval`: a UserError prints one line, not a traceback (errors.py)

USE_CACHE_MARKER = "marco_eval_fingerprint"  # key of our fingerprint in lm-eval's --use_cache database
SCORE_CHUNK = 256  # loglikelihood pairs per backend call (vLLM scores a chunk in one engine call)


def _label(req, i: int) -> str:
    """How an error names a request: lm-eval's task and document, else its position."""
    task, doc = getattr(req, "task_name", None), getattr(req, "doc_id", None)
    return f"{task} doc {doc}" if task is not None else f"request {i}"


def repeat_instances(requests) -> list[int]:
    """Which copy each request is: lm-eval hands a task with `repeats: K` the same Instance
    K times in a row (evaluator: `[req] * req.repeats`); copy k gets k, so each copy is its
    own search, seeded apart, and the store keeps the copies apart."""
    seen: dict[int, int] = {}
    out = []
    for req in requests:
        out.append(seen.get(id(req), 0))
        seen[id(req)] = out[-1] + 1
    return out


def merge_lm_eval_args(model_args: dict, lm_eval_args: dict | None) -> dict:
    """lm-eval's own arguments (batch_size, max_batch_size, device from --device, cuda:0
    when none is given) under model_args: a key given in both is the model_args one, where
    TemplateLM's create_from_arg_* would call us with it twice (a TypeError)."""
    extra = {k: v for k, v in (lm_eval_args or {}).items() if v is not None}
    mine, theirs = model_args.get("device"), extra.get("device")
    if mine not in (None, "") and theirs not in (None, "", "cuda:0") and str(theirs) != str(mine):
        print(f"marco_mcts: device={mine} in --model_args overrides --device {theirs}", file=sys.stderr, flush=True)
    return {**extra, **model_args}


@register_model("marco_mcts")
class MarcoMCTSLM(TemplateLM):
    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> MarcoMCTSLM:
        from lm_eval.utils import simple_parse_args_string

        return cls(**merge_lm_eval_args(simple_parse_args_string(arg_string), additional_config))

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> MarcoMCTSLM:
        return cls(**merge_lm_eval_args(dict(arg_dict), additional_config))

    def __init__(self, pretrained: str | None = None, config: str | None = None, **overrides):
        super().__init__()
        if pretrained is not None:
            overrides["pretrained"] = pretrained
        if overrides.get("device") in (None, "", "cuda:0"):
            # lm-eval passes device=cuda:0 when the user named none (its EvaluatorConfig
            # default): let the machine decide (config.ModelOptions.device = auto).
            overrides.pop("device", None)
        # Validate everything before touching the model: a typo costs a second, not a load.
        search_config, options = settings.build(config, **overrides)
        self.config_name = config
        # Under `accelerate launch -m lm_eval` lm-eval shards requests by our rank.
        self.ranks = Ranks.detect()
        self._rank, self._world_size = self.ranks.rank, self.ranks.world_size
        if self.ranks.world_size > 1:
            if options.backend == "vllm":
                raise ConfigError("backend=vllm runs in one process: use data_parallel_size=N "
                                  "instead of accelerate launch")
            options.device = self.ranks.device  # one GPU per rank, as lm-eval's hf model does
        self.engine = Engine(search_config, options)
        # A bad store path fails now; under accelerate each rank keeps its own file.
        store_path = options.store if self.ranks.world_size == 1 else f"{options.store}.rank{self.ranks.rank}"
        self.store = request_store.RequestStore(store_path) if options.store else None
        self._templated_by_lm_eval = False
        self.stats: list[dict] = []  # per request searched: tokens generated, policy calls, seconds
        self._costs: list[dict] = []  # per request answered (searched or from the store): for budget()
        self._search_seconds = 0.0  # wall time of generate_until calls
        self._warned: set[tuple[str, str]] = set()  # (task, what): each warning line once

    # The model loads on first use, so task and data errors (lm-eval loads tasks after
    # creating the model) are reported before any weights are read.
    @property
    def search_config(self):
        return self.engine.search_config

    @property
    def options(self):
        return self.engine.options

    @property
    def policy(self):
        return self.engine.policy

    @property
    def tokenizer(self):
        return self.policy.tokenizer

    def fingerprint(self) -> str:
        return self.engine.fingerprint()

    def set_cache_hook(self, cache_hook) -> None:
        """lm-eval's --use_cache keys answers by request only; tag its database with our
        fingerprint so another model or config never reads answers it did not write."""
        super().set_cache_hook(cache_hook)
        db = getattr(cache_hook, "dbdict", None)
        if db is None:
            return
        found = db.get(USE_CACHE_MARKER)
        if (found is None and len(db)) or (found is not None and found != self.fingerprint()):
            raise ConfigError(
                f"--use_cache {db.filename} holds answers of another model or config; give a new cache path, "
                "or resume marco_mcts runs with store=PATH in --model_args")
        db[USE_CACHE_MARKER] = self.fingerprint()
        db.commit()

    # ------------------------------------------------------------------ TemplateLM's tokenizer half
    @property
    def eot_token_id(self) -> int:
        # lm-eval's name for the token an empty loglikelihood context is conditioned on: the
        # tokenizer's pad token (end-of-text for qwen2.5), else its EOS (codec.pad_token_id)
        return self.policy.pad_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.policy.encode(string)  # never adds BOS: our prompts carry the chat template's own tokens

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
                                                  continue_final_message=not add_generation_prompt,
                                                  **self.engine.chat_template_kwargs())
        return text + (self.options.response_prefix if add_generation_prompt else "")

    # ------------------------------------------------------------------ generation
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        started = time.perf_counter()
        instances = repeat_instances(requests)
        kinds = [self._answer_kind(req) for req in requests]
        texts: list[str | None] = [None] * len(requests)
        keys = self._stored_texts(requests, texts, instances, kinds)  # fills texts[i] for requests a killed run finished
        todo = [i for i, text in enumerate(texts) if text is None]
        searches = [self._search_for(requests[i], i, instances[i], kinds[i]) for i in todo]
        tree_dir = Path(self.options.tree_dir) if self.options.tree_dir else None
        dtype = str(self.policy.dtype).removeprefix("torch.")
        verifier_dtype = None if self.options.reward == "confidence" else \
            settings.verifier_dtype_for(self.options.verifier_dtype, dtype)
        bar = tqdm(total=len(requests), initial=len(requests) - len(todo), disable=disable_tqdm, desc="marco_mcts")

        def on_done(j, result):
            i, req = todo[j], requests[todo[j]]
            texts[i] = self.engine.response_text(result, searches[j].origin.task_until)
            seconds = round(time.perf_counter() - started, 3)
            self._count(req, result.generated_tokens, result.policy_calls, stored=False)
            self.stats.append({"request": i, "generated_tokens": result.generated_tokens,
                               "policy_calls": result.policy_calls, "candidates": result.candidates,
                               "seconds_since_start": seconds})
            if tree_dir is not None:
                name = f"{getattr(req, 'task_name', 'request')}_{getattr(req, 'doc_id', i)}_{instances[i]}_{i}.json"
                write_json_atomic(tree_dir / name, tree_document(searches[j], result, i, req.args[0], dtype=dtype,
                                                                 verifier_dtype=verifier_dtype))
            if self.store is not None:
                self.store.add({"key": keys[i], "fingerprint": self.fingerprint(),
                                "task": getattr(req, "task_name", None), "doc_id": getattr(req, "doc_id", None),
                                "instance": instances[i], "answer_kind": kinds[i],
                                "text": texts[i], "answer": result.answer, "candidates": result.candidates,
                                "generated_tokens": result.generated_tokens, "policy_calls": result.policy_calls,
                                "seconds": seconds, **request_store.search_record(result)})
            self.cache_hook.add_partial("generate_until", req.args, texts[i])
            result.tree = None  # free the tree as soon as its request is done
            searches[j] = None
            bar.update(1)

        if disable_tqdm:
            self.engine.run(searches, on_done=on_done)
        elif sys.stderr.isatty():  # live figures in the bar itself, refreshed every second
            self.engine.run(searches, on_done=on_done, every=1.0,
                            progress=lambda snap: bar.set_postfix_str(snap.line(), refresh=True))
        else:  # a log: one line a minute, not a redrawn bar
            self.engine.run(searches, on_done=on_done, every=progress.LOG_EVERY_S,
                            progress=lambda snap: print(f"marco_mcts: {snap.line()}", file=sys.stderr, flush=True))
        bar.close()
        self._search_seconds += time.perf_counter() - started
        return texts  # type: ignore[return-value]

    def _warn_once(self, task: str, what: str, line: str) -> None:
        if (task, what) not in self._warned:
            self._warned.add((task, what))
            print(line, file=sys.stderr, flush=True)

    def _answer_kind(self, req) -> str:
        """The answer kind of a request: options.answer, or under auto its task's (readers.py)."""
        if self.options.answer != "auto":
            return self.options.answer
        task = getattr(req, "task_name", None)
        kind = kind_for_task(task)
        if kind is None:
            kind = "none"
            if self.search_config.final_answer == "vote":
                self._warn_once(str(task), "answer", (
                    f"marco_mcts: answer=auto does not know how task {task!r} writes its answers, so final_answer=vote "
                    "falls back to the best reward; set answer=number, math, choice or output in --model_args"))
        return kind

    def _search_for(self, req, i: int, instance: int, kind: str):
        context, gen_kwargs = req.args
        task = str(getattr(req, "task_name", None) or "the task")
        if ignored := generation_kwargs.ignored_keys(gen_kwargs, self.search_config):
            self._warn_once(task, "gen_kwargs", generation_kwargs.warning_line(task, ignored, self.search_config))
        if getattr(req, "repeats", 1) > 1 and self.search_config.temperature == 0:
            self._warn_once(task, "repeats", (
                f"marco_mcts: {task} repeats each request {req.repeats} times, but temperature=0 makes every copy "
                "the same greedy search; set temperature (e.g. temperature=0.7) in --model_args to sample them"))
        # lm-eval's normalisation of `until`; EOS is matched by token id in the backends,
        # so its text is not added as a stop string (eos=None).
        until = handle_stop_sequences(gen_kwargs.get("until"), eos=None)
        return self.engine.make_search(context, until=until, max_gen_toks=gen_kwargs.get("max_gen_toks"),
                                       templated=self._templated_by_lm_eval, answer=kind, instance=instance,
                                       label=_label(req, i))

    def _stored_texts(self, requests, texts: list, instances: list[int], kinds: list[str]) -> list[str | None]:
        """With store=PATH: each request's key, and texts[i] set where the store has it."""
        if self.store is None:
            return [None] * len(requests)
        auto = self.options.answer == "auto"  # the kind then comes from the task, so the key names it
        keys = [request_store.request_key(self.fingerprint(), *req.args, instance=instance,
                                          answer_kind=kind if auto else None)
                for req, instance, kind in zip(requests, instances, kinds, strict=True)]
        for i, key in enumerate(keys):
            if (record := self.store.get(key)) is not None:
                texts[i] = record["text"]
                self._count(requests[i], record.get("generated_tokens", 0), record.get("policy_calls", 0), stored=True)
        done = sum(t is not None for t in texts)
        print(f"marco_mcts: store {self.store.path}: {done} of {len(requests)} requests already finished, "
              f"searching {len(requests) - done}", file=sys.stderr, flush=True)
        if other := self.store.other_fingerprints(self.fingerprint()):
            print(f"marco_mcts: store {self.store.path}: {other} record(s) in it were made under another "
                  "fingerprint and are not reused: the model (its path or config.json, which a re-pull with another "
                  "transformers version rewrites), the loaded dtype or an answer-changing setting differs",
                  file=sys.stderr, flush=True)
        return keys

    # ------------------------------------------------------------------ scoring
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        if self.options.enable_thinking:  # lm-eval's hf and vllm models refuse it alike
            raise ConfigError("enable_thinking=true applies to generative tasks only; this task scores "
                              "loglikelihoods: drop enable_thinking from --model_args for it")
        out = []
        with tqdm(total=len(requests), disable=disable_tqdm, desc="loglikelihood") as bar:
            for start in range(0, len(requests), SCORE_CHUNK):
                chunk = requests[start: start + SCORE_CHUNK]
                scores = self.policy.score_many([(ctx, cont) for _, ctx, cont in chunk])
                for (args, _, _), result in zip(chunk, scores, strict=True):
                    self.cache_hook.add_partial("loglikelihood", args, result)
                    out.append(result)
                bar.update(len(chunk))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        out = []
        for req in tqdm(requests, disable=disable_tqdm, desc="loglikelihood_rolling"):
            ids = self.policy.encode(req.args[0])
            windows = map(make_disjoint_window, get_rolling_token_windows(
                token_list=ids, prefix_token=self.policy.pad_id, max_seq_len=self.policy.max_length, context_len=1))
            total = sum(score for score, _ in self.policy.score_many([(list(c), list(t)) for c, t in windows]))
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

    # ------------------------------------------------------------------ the budget
    def _count(self, req, generated_tokens: int, policy_calls: int, *, stored: bool) -> None:
        self._costs.append({"task": getattr(req, "task_name", None), "doc_id": getattr(req, "doc_id", None),
                           "generated_tokens": generated_tokens, "policy_calls": policy_calls, "stored": stored})

    def budget(self) -> dict:
        """Per task, what its answers cost (lm-eval's results JSON carries it: get_model_info).

        Returns:
            {task: {problems, requests, generated_tokens, generated_tokens_per_problem,
            policy_calls, requests_from_store}} plus "search_seconds", the wall time of this
            process's generate_until calls (tasks run together share it; requests read back
            from a store count their recorded tokens and calls, not their time).
        """
        out: dict = {}
        for row in self._costs:
            task = out.setdefault(str(row["task"]), {"docs": set(), "requests": 0, "generated_tokens": 0,
                                                     "policy_calls": 0, "requests_from_store": 0})
            task["docs"].add(row["doc_id"])
            task["requests"] += 1
            task["generated_tokens"] += row["generated_tokens"]
            task["policy_calls"] += row["policy_calls"]
            task["requests_from_store"] += row["stored"]
        for task in out.values():
            task["problems"] = len(task.pop("docs"))
            task["generated_tokens_per_problem"] = round(task["generated_tokens"] / task["problems"], 2)
        return {"tasks": out, "search_seconds": round(self._search_seconds, 3)}

    def get_model_info(self) -> dict:
        return {"marco_eval_config": settings.as_dict(self.search_config, self.options),
                "marco_eval_config_file": self.config_name, "dtype": str(self.policy.dtype),
                "marco_eval_budget": self.budget()}
