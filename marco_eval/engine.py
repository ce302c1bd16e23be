"""The engine: a run's options and search config in, finished searches out.

Everything that evaluates with the search goes through here: the lm-eval adapter
(`marco_mcts`, lm.py), `marco-eval synth` and `marco-eval bench`. The engine

- builds the policy on first use: a backend (backends/), or, for backend=vllm with
  data_parallel_size > 1, a pool of engine replicas on Ray, each running whole searches
  with an Engine of its own (EngineReplica, data_parallel.py);
- formats prompts: the model's chat template, the system prompt, the response prefix;
- builds `Search` objects: prompt ids, token budget, stop strings, answer reader, reward;
- runs a batch of searches: through the driver (continuous batching when the backend
  streams), or split whole between the replicas; calling back per finished one;
- fingerprints the model and settings for the request store.

It never imports lm-eval: the adapter translates lm-eval's requests into these calls.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Callable, Sequence

from marco_eval import settings
from marco_eval import store as request_store
from marco_eval.backends.replicas import Replica, bind_threads
from marco_eval.data_parallel import ReplicaPool, SearchJob, run_split, serve_jobs
from marco_eval.errors import ConfigError, InputError, first_line
from marco_eval.models import ALIASES, ModelError, resolve
from marco_eval.progress import ProgressThread, SearchProgress, Snapshot
from marco_eval.readers import answer_reader
from marco_eval.search import Origin, Search, SearchResult, rollout_reward, run_searches
from marco_eval.search.reward import VerifierReward
from marco_eval.thinking import ThinkingSplit

OnDone = Callable[[int, SearchResult], None]


class Engine:
    def __init__(self, search_config: settings.SearchConfig, options: settings.ModelOptions):
        """Args:
            search_config: the search's knobs (search/config.py), validated.
            options: model and run options (config.ModelOptions), validated; `options.reward`
                picks every search's reward: Marco-o1's confidence, or a verifier's value.

        Nothing loads here: a bad path, a device or parallel size this machine lacks, a
        missing vLLM or a bad vLLM engine argument fails now, the weights on first use of
        `policy`.
        """
        self.search_config, self.options = search_config, options
        self.reward = rollout_reward if options.reward == "confidence" else VerifierReward(options.reward)
        if options.backend == "vllm":
            from marco_eval.backends.vllm import check_options

            check_options(options)
        else:
            from marco_eval.backends.device import resolve_device

            resolve_device(options.device)
        if options.pretrained not in ALIASES:
            resolve(options.pretrained)  # a missing path or a folder without weights fails now, not after a load
        if options.reward != "confidence" and not (Path(options.reward).expanduser() / "config.json").is_file():
            raise ConfigError(f"reward={options.reward!r}: use confidence, or the folder of a verifier "
                              f"checkpoint (marco-eval verifier makes one)")
        self._policy = None
        self._fingerprint: str | None = None

    @classmethod
    def from_settings(cls, config: str | None = None, **overrides) -> Engine:
        """Defaults < `config` YAML (model_configs/NAME or a path) < overrides, validated."""
        return cls(*settings.build(config, **overrides))

    # ------------------------------------------------------------------ the model
    @property
    def policy(self):
        """The loaded backend (a LoadedModel and Policy), or the pool of data-parallel replicas
        (a Policy too, whose calls are split between them)."""
        if self._policy is None:
            o = self.options
            try:
                self._policy = self._build_policy()
            except OSError as e:  # transformers: no such hub id, hub unreachable, unreadable files
                raise ModelError(f"could not load pretrained={o.pretrained!r} ({first_line(e)}); give an alias "
                                 f"({', '.join(ALIASES)}), a checkpoint directory or a reachable hub id") from e
            o.device = getattr(self._policy, "device", o.device)  # what is really used
        return self._policy

    def _build_policy(self):
        o = self.options
        if o.backend == "vllm" and o.data_parallel_size > 1:
            from marco_eval.backends.codec import load_tokenizer
            from marco_eval.backends.replicas import RayReplicas
            from marco_eval.backends.vllm import import_vllm, on_cpu

            vllm = import_vllm()  # fail in one line here rather than in every replica
            o = dataclasses.replace(o, pretrained=resolve(o.pretrained))  # pull an alias once, here
            return RayReplicas(o, load_tokenizer(o.pretrained, o.revision, o.trust_remote_code), on_cpu=on_cpu(vllm),
                               actor=EngineReplica, actor_args=(self.search_config,))
        from marco_eval.backends import build_policy

        return build_policy(o)

    def fingerprint(self) -> str:
        """Model identity + every setting that can change an answer (store.py)."""
        if self._fingerprint is None:
            policy, o = self.policy, self.options
            identity = request_store.model_identity(resolve(o.pretrained), o.revision, str(policy.dtype),
                                                    policy.commit_hash)
            if o.reward != "confidence":  # the verifier's weights change every reward, not only its path
                identity["verifier"] = request_store.checkpoint_digest(o.reward)
            self._fingerprint = request_store.fingerprint(identity, settings.answer_settings(self.search_config, o))
        return self._fingerprint

    # ------------------------------------------------------------------ prompts
    def prompt_text(self, context: str, *, templated: bool = False) -> str:
        """A raw task prompt as the model sees it: one user turn (after our system prompt)
        in the model's chat template, then the response prefix; unchanged when `templated`
        (the caller applied a template already) or templating is off (or auto without one)."""
        o, tokenizer = self.options, self.policy.tokenizer
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if templated or o.chat_template == "off" or (o.chat_template == "auto" and not has_template):
            return context
        messages = ([{"role": "system", "content": o.system_prompt}] if o.system_prompt else []) + [
            {"role": "user", "content": context}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                             **self.chat_template_kwargs()) + o.response_prefix

    def chat_template_kwargs(self) -> dict:
        """What goes to the chat template besides the messages: `chat_template_args`, and
        `enable_thinking` when set (over the same key in the dict), as lm-eval's hf model does."""
        o = self.options
        extra = dict(o.chat_template_args)
        if o.enable_thinking is not None:
            extra["enable_thinking"] = o.enable_thinking
        return extra

    def thinking_split(self, until: Sequence[str]) -> ThinkingSplit | None:
        """How a completion's response is cut out under `think_end_token` (thinking.py); None
        without it."""
        if self.options.think_end_token is None:
            return None
        policy = self.policy
        return ThinkingSplit.build(str(self.options.think_end_token), until,
                                   lambda token_id: policy.tokenizer.decode([token_id]))

    def response_text(self, result: SearchResult, until: Sequence[str]) -> str:
        """The text handed back for a finished search: its completion, or under
        `think_end_token` the response after the thinking (thinking.py)."""
        split = self.thinking_split(until)
        return result.text if split is None else split.response(result.text, result.token_ids, self.policy.decode)

    def make_search(self, context: str, *, until: Sequence[str] = (), max_gen_toks=None, templated: bool = False,
                    answer: str | None = None, instance: int = 0, label: str = "a request") -> Search:
        """One search for one prompt.

        Args:
            context: the task's prompt text.
            until: stop strings: the completion ends before the first of them (under
                `think_end_token`, the response does: thinking.py).
            max_gen_toks: the token budget (None: options.max_gen_toks); capped by the context
                and by options.token_cap.
            templated: the prompt already holds a chat template (see prompt_text).
            answer: the answer kind (readers.py) for this request; None: options.answer.
            instance: which copy of a repeated request this is (lm-eval's `repeats`): each
                copy is its own search, seeded apart (0: the seed of an unrepeated request).
            label: how an error names this request ("mgsm_en doc 7").
        Returns:
            A Search ready for `run`.
        """
        budget = self.options.max_gen_toks if max_gen_toks is None else max_gen_toks
        if isinstance(budget, bool) or not str(budget).strip().isdigit() or int(budget) <= 0:
            raise InputError(f"{label}: max_gen_toks={budget!r} (from the task or --gen_kwargs) must be a positive integer")
        budget = int(budget)
        policy = self.policy
        prompt_ids = policy.encode(self.prompt_text(context, templated=templated))
        try:
            policy.check_length(len(prompt_ids) + 1)
        except ValueError as e:  # the prompt does not fit the model's context
            raise InputError(f"{label}: {e}") from None
        budget = min(budget, policy.max_length - len(prompt_ids), self.options.token_cap or budget)
        return self.build_search(prompt_ids, max_new_tokens=budget, until=until, answer=answer, instance=instance)

    def build_search(self, prompt_ids: Sequence[int], *, max_new_tokens: int, until: Sequence[str] = (),
                     config: settings.SearchConfig | None = None, answer: str | None = None,
                     instance: int = 0) -> Search:
        """A Search around this engine's policy, answer reader and reward.

        Args:
            prompt_ids: the prompt as the model sees it, token ids.
            max_new_tokens: the token budget, already capped.
            until: stop strings (empty ones dropped: they would stop at once, and vLLM refuses them).
            config: the search's knobs; None: the engine's.
            answer: the answer kind (readers.py); None: options.answer ("auto" with no task
                to decide: number, what bench, synth and the bank search).
            instance: the copy of a repeated request (make_search).
        Returns:
            A Search ready for `run`.
        """
        task_until = tuple(s for s in until if s)
        kind = answer or self.options.answer
        if kind == "auto":  # a caller with no task to name (bench, synth, bank: word problems)
            kind = "number"
        reader, stops = answer_reader(kind), task_until
        split = self.thinking_split(task_until)
        if split is not None:  # lm-eval's vllm model: stop on EOS only, cut the response afterwards
            stops = ()
            if reader is not None:
                reader = split.reading(reader)
        return Search(config or self.search_config, prompt_ids, self.policy, max_new_tokens=max_new_tokens,
                      until=stops, answer_fn=reader, reward=self.reward,
                      origin=Origin(answer=kind, task_until=task_until, instance=instance))

    # ------------------------------------------------------------------ running
    def run(self, searches: list[Search], on_done: OnDone | None = None, *, width: int | None = None,
            lockstep: bool = False, progress: Callable[[Snapshot], None] | None = None,
            every: float = 1.0) -> list[SearchResult]:
        """Run searches to the end: split whole between the replicas when there are some, else
        through the driver (continuous batching when the backend streams).

        Args:
            searches: from `make_search`.
            on_done: called with (index, result) the moment each search finishes.
            width: trees live at once (per replica); None: options.tree_batch.
            lockstep: lock-step rounds even on a streaming backend (the bench compares them).
            progress: called with a progress.Snapshot every `every` seconds while they run
                (tokens/s, trees in flight, simulations, batch rows, ETA).
            every: seconds between progress calls.
        Returns:
            The results in the order of `searches`.
        """
        width, policy = width or self.options.tree_batch, self.policy
        tracker = SearchProgress(searches, policy)

        def done(i: int, result: SearchResult) -> None:
            tracker.mark_done(i, result.generated_tokens)
            if on_done is not None:
                on_done(i, result)

        with ProgressThread(tracker, progress, every) if progress is not None else contextlib.nullcontext():
            if isinstance(policy, ReplicaPool):
                return run_split(policy, searches, width, done)
            return run_searches(searches, policy, width=width, on_done=done, lockstep=lockstep)


class EngineReplica(Replica):
    """A data-parallel replica (backends/replicas.py) that runs whole searches through an
    Engine of its own (data_parallel.py)."""

    def __init__(self, options: settings.ModelOptions, omp_bind: str | None, search_config: settings.SearchConfig):
        bind_threads(omp_bind)
        self.engine = Engine(search_config, options)
        self.policy = self.engine.policy

    def search(self, indices: list[int], jobs: list[SearchJob], width: int):
        """Run the jobs; yields (index, SearchResult) as each finishes (data_parallel.serve_jobs)."""
        yield from serve_jobs(self.engine, indices, jobs, width)
