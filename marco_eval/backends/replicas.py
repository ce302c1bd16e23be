"""Data parallelism for the vLLM backend: engine replicas on a Ray cluster.

backend=vllm, data_parallel_size=N: N Ray actors, each building one vLLM engine once and
keeping it for the whole run, on a local Ray (started here) or the cluster RAY_ADDRESS
names, so replicas can sit on several nodes (lm-eval's own vllm model spreads replicas
with Ray too). Problems are split by whole trees: replica r searches problems r, r+N, ...
with the ordinary lock-step driver on its own engine, and streams each finished search
back the moment it ends. The parent tokenises prompts (it holds the tokenizer, no
engine), so it is a Codec with a `run_searches` of its own (engine.SearchRunner).

Placement. On GPUs each replica asks Ray for tensor_parallel_size GPUs (Ray sets its
CUDA_VISIBLE_DEVICES). vLLM's CPU build ignores CUDA_VISIBLE_DEVICES and binds its OpenMP
threads itself, so there each replica asks for cores_per_replica CPUs and gets its own
VLLM_CPU_OMP_THREADS_BIND range (replica r: cores r*k .. r*k+k-1), or two engines would
fight over the same cores; more replicas than the cluster has cores is refused.

A replica that dies (killed, out of memory) hands its unfinished problems to the
replicas still alive; with none alive the run stops with one line, and the request store
(store=PATH) keeps every finished problem for the rerun.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
from dataclasses import dataclass

from marco_eval.backends.codec import TokenizerCodec, pad_token_id
from marco_eval.settings import ConfigError, ModelOptions
from marco_eval.errors import first_line
from marco_eval.search import RewardFn, Search, SearchConfig, SearchResult, rollout_reward, run_searches


@dataclass(frozen=True)
class SearchJob:
    """What a replica needs to rebuild a Search around its own engine (a Search holds the
    parent's codec and answer function, which stay in the parent). The reward travels
    pickled, so it must be a module-level function (the default is)."""
    config: SearchConfig
    prompt_ids: tuple[int, ...]
    max_new_tokens: int
    until: tuple[str, ...]
    reward: RewardFn = rollout_reward

    @classmethod
    def of(cls, search: Search) -> SearchJob:
        return cls(search.config, tuple(search.tree.prompt_ids), search.max_new_tokens, tuple(search.until),
                   search.reward)


class Replica:
    """One engine, in a Ray actor (wrapped by ray.remote in RayReplicas)."""

    def __init__(self, options: ModelOptions, answer_kind: str, omp_bind: str | None):
        if omp_bind is not None:  # before vLLM reads it, in this actor's own process
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = omp_bind
        from marco_eval.answers import answer_reader
        from marco_eval.backends import build_policy

        self.policy = build_policy(options)
        self.answer_fn = answer_reader(answer_kind)

    def info(self) -> dict:
        return {"pid": os.getpid(), "max_length": self.policy.max_length,
                "omp_bind": os.environ.get("VLLM_CPU_OMP_THREADS_BIND"),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "generate_calls": getattr(self.policy, "generate_calls", None)}

    def search(self, indices: list[int], jobs: list[SearchJob], width: int):
        """Run the jobs; yields (index, SearchResult) as each finishes (a Ray streaming
        generator: the parent gets each result while the others still run)."""
        done: queue.Queue = queue.Queue()
        searches = [Search(j.config, j.prompt_ids, self.policy, max_new_tokens=j.max_new_tokens, until=j.until,
                           answer_fn=self.answer_fn, reward=j.reward) for j in jobs]

        def drive() -> None:
            try:
                run_searches(searches, self.policy, width=width, on_done=lambda k, r: done.put((indices[k], r)))
                done.put(None)
            except BaseException as e:  # noqa: BLE001 - re-raised in the generator below
                done.put(e)

        threading.Thread(target=drive, name="marco-eval-replica-driver", daemon=True).start()
        while (item := done.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    def score_many(self, pairs):
        return self.policy.score_many(pairs)


def omp_binds(replicas: int, cores_per_replica: int, cores: int) -> list[str]:
    """VLLM_CPU_OMP_THREADS_BIND for each replica: disjoint core ranges, or a one-line error
    when the cores do not go round (two CPU engines on one core each run at a fraction)."""
    need = replicas * cores_per_replica
    if need > cores:
        raise ConfigError(f"data_parallel_size={replicas} on vLLM's CPU build needs {need} CPU cores "
                          f"({cores_per_replica} per engine) but {cores} are available; lower data_parallel_size")
    k = cores_per_replica
    return [f"{r * k}-{(r + 1) * k - 1}" if k > 1 else str(r) for r in range(replicas)]


class RayReplicas(TokenizerCodec):
    """The parent's side: a codec (tokenizer, no engine) plus `run_searches` / `score_many`
    that fan out to the replicas."""

    def __init__(self, options: ModelOptions, tokenizer, *, on_cpu: bool):
        """Args:
            options: the run's options; each replica builds an engine from them with
                data_parallel_size=1.
            tokenizer: the model's tokenizer (the parent encodes prompts).
            on_cpu: vLLM's CPU build: place replicas on cores (MARCO_EVAL_CORES_PER_REPLICA,
                default 1, each), not GPUs.
        """
        ray = import_ray()

        self.tokenizer, self.name = tokenizer, options.pretrained
        self.pad_id = pad_token_id(tokenizer)
        self.dtype = options.dtype
        self.size = options.data_parallel_size
        if not ray.is_initialized():  # RAY_ADDRESS joins a running cluster; else a local one
            ray.init(include_dashboard=False, log_to_driver=False)
        actor = ray.remote(Replica)
        if on_cpu:
            per = max(1, int(os.environ.get("MARCO_EVAL_CORES_PER_REPLICA", "1")))
            binds = omp_binds(self.size, per, int(ray.cluster_resources().get("CPU", 0)))
            handles = [actor.options(num_cpus=per, num_gpus=0) for _ in binds]
        else:
            gpus, need = int(ray.cluster_resources().get("GPU", 0)), self.size * options.tensor_parallel_size
            if gpus < need:  # Ray would wait for GPUs forever
                raise ConfigError(f"data_parallel_size={self.size} x tensor_parallel_size={options.tensor_parallel_size} "
                                  f"needs {need} GPUs but the Ray cluster has {gpus}; lower one of them")
            binds = [None] * self.size
            handles = [actor.options(num_gpus=options.tensor_parallel_size) for _ in binds]
        one = dataclasses.replace(options, data_parallel_size=1)
        self.replicas = [h.remote(one, options.answer, bind) for h, bind in zip(handles, binds)]
        self.alive = list(range(self.size))
        info = self._get([r.info.remote() for r in self.replicas], "starting")
        self.max_length = min(i["max_length"] for i in info)

    def _get(self, refs, doing: str):
        import ray

        try:
            return ray.get(refs)
        except ray.exceptions.RayError as e:
            self.close()
            raise RuntimeError(f"a vLLM replica failed while {doing}: {first_line(e)}") from None

    def info(self) -> list[dict]:
        return self._get([self.replicas[r].info.remote() for r in self.alive], "answering")

    def run_searches(self, searches: list[Search], width: int, on_done=None) -> list[SearchResult]:
        """Like search.run_searches, with whole trees split across the replicas."""
        results: list = [None] * len(searches)
        arrived: queue.Queue = queue.Queue()
        owner = {i: self.alive[i % len(self.alive)] for i in range(len(searches))}

        def send(replica: int, indices: list[int]) -> threading.Thread:
            def stream() -> None:
                try:
                    gen = self.replicas[replica].search.options(num_returns="streaming").remote(
                        indices, [SearchJob.of(searches[i]) for i in indices], width)
                    for ref in gen:
                        arrived.put(("done", replica, import_ray().get(ref)))
                    arrived.put(("finished", replica, None))
                except Exception as e:  # noqa: BLE001 - the main thread decides
                    arrived.put(("failed", replica, e))

            thread = threading.Thread(target=stream, name=f"marco-eval-replica-{replica}", daemon=True)
            thread.start()
            return thread

        running = {}
        for r in self.alive:
            mine = [i for i in range(len(searches)) if owner[i] == r]
            if mine:
                running[r] = 1
                send(r, mine)
        while running:
            kind, replica, payload = arrived.get()
            if kind == "done":
                i, result = payload
                searches[i].tree = result.tree  # the parent's Search gets the replica's tree (tree export)
                results[i] = result
                if on_done is not None:
                    on_done(i, result)
            elif kind == "finished":
                running[replica] -= 1
                if not running[replica]:
                    del running[replica]
            elif not isinstance(payload, import_ray().exceptions.ActorDiedError):  # a failed search, not a lost replica
                self.close()
                raise RuntimeError(f"a vLLM replica failed: {type(payload).__name__}: {first_line(payload)}")
            else:  # the replica died: its unfinished problems go to the ones alive
                running.pop(replica, None)
                if replica in self.alive:
                    self.alive.remove(replica)
                left = [i for i, r in owner.items() if r == replica and results[i] is None]
                if not self.alive:
                    raise RuntimeError(f"every vLLM replica failed (the last: {first_line(payload)}); "
                                       f"{len(left)} problems unfinished: rerun with store=PATH to resume")
                for k, i in enumerate(left):
                    owner[i] = self.alive[k % len(self.alive)]
                for r in {owner[i] for i in left}:
                    running[r] = running.get(r, 0) + 1
                    send(r, [i for i in left if owner[i] == r])
        return results

    def score_many(self, pairs: list) -> list[tuple[float, bool]]:
        """Scores, split into one contiguous share per replica, back in order."""
        share = -(-len(pairs) // len(self.alive)) if pairs else 0
        refs = [self.replicas[r].score_many.remote(pairs[k * share:(k + 1) * share])
                for k, r in enumerate(self.alive) if pairs[k * share:(k + 1) * share]]
        return [score for part in self._get(refs, "scoring") for score in part]

    def close(self) -> None:
        ray = import_ray()
        for replica in self.replicas:
            try:
                ray.kill(replica)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.replicas, self.alive = [], []


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("data_parallel_size > 1 runs vLLM replicas on Ray, which is not installed: "
                          "pip install 'marco-eval[vllm]' (or pip install ray)") from None
    return ray
