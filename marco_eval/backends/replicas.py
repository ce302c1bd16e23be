"""Engine replicas on a Ray cluster: the placement and the pool, for the vLLM backend's
data parallelism (backend=vllm, data_parallel_size=N).

N Ray actors each build one vLLM engine once and keep it for the whole run, on a local Ray
(started here) or the cluster RAY_ADDRESS names, so replicas can sit on several nodes
(lm-eval's own vllm model spreads replicas with Ray too). What runs on them is not decided
here: the pool answers `generate` and `score_many` by splitting the requests between the
replicas (so it is a Policy), and `stream` calls any streaming method of the actor class it
was given; data_parallel.py gives it replicas that run whole searches.

Placement. On GPUs each replica asks Ray for tensor_parallel_size GPUs (Ray sets its
CUDA_VISIBLE_DEVICES). vLLM's CPU build ignores CUDA_VISIBLE_DEVICES and binds its OpenMP
threads itself, so there each replica asks for cores_per_replica CPUs and gets its own
VLLM_CPU_OMP_THREADS_BIND range (replica r: cores r*k .. r*k+k-1), or two engines would
fight over the same cores; more replicas than the cluster has cores is refused.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterator, Sequence

from marco_eval.backends.codec import TokenizerCodec, pad_token_id
from marco_eval.errors import ConfigError, first_line
from marco_eval.search.policy import Continue, Generation
from marco_eval.settings import ModelOptions


class Replica:
    """One engine in a Ray actor (ray.remote wraps it in RayReplicas). Subclasses add what
    else a replica runs; their __init__ takes (options, omp_bind, *more)."""

    def __init__(self, options: ModelOptions, omp_bind: str | None):
        bind_threads(omp_bind)
        from marco_eval.backends import build_policy

        self.policy = build_policy(options)

    def info(self) -> dict:
        return {"pid": os.getpid(), "max_length": self.policy.max_length, "dtype": str(self.policy.dtype),
                "commit_hash": self.policy.commit_hash,
                "omp_bind": os.environ.get("VLLM_CPU_OMP_THREADS_BIND"),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "generate_calls": getattr(self.policy, "generate_calls", None),
                "engine_steps": getattr(self.policy, "engine_steps", None)}

    def generate(self, requests: list[Continue]) -> list[Generation]:
        return self.policy.generate(requests)

    def score_many(self, pairs):
        return self.policy.score_many(pairs)


def bind_threads(omp_bind: str | None) -> None:
    """vLLM's CPU build: this replica's cores, set in the actor's own process before vLLM
    reads it."""
    if omp_bind is not None:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = omp_bind


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
    """The parent's side: a codec (tokenizer, no engine) and a Policy whose calls are split
    between the replicas; `stream` runs a replica's streaming method."""

    def __init__(self, options: ModelOptions, tokenizer, *, on_cpu: bool, actor: type = Replica,
                 actor_args: tuple = ()):
        """Args:
            options: the run's options; each replica builds an engine from them with
                data_parallel_size=1.
            tokenizer: the model's tokenizer (the parent encodes prompts).
            on_cpu: vLLM's CPU build: place replicas on cores (MARCO_EVAL_CORES_PER_REPLICA,
                default 1, each), not GPUs.
            actor: the replica class, Replica or a subclass.
            actor_args: what the subclass takes after (options, omp_bind).
        """
        ray = import_ray()

        self.tokenizer, self.name = tokenizer, options.pretrained
        self.pad_id = pad_token_id(tokenizer)
        self.size = options.data_parallel_size
        if not ray.is_initialized():  # RAY_ADDRESS joins a running cluster; else a local one
            ray.init(include_dashboard=False, log_to_driver=False)
        remote = ray.remote(actor)
        if on_cpu:
            per = max(1, int(os.environ.get("MARCO_EVAL_CORES_PER_REPLICA", "1")))
            binds = omp_binds(self.size, per, int(ray.cluster_resources().get("CPU", 0)))
            handles = [remote.options(num_cpus=per, num_gpus=0) for _ in binds]
        else:
            gpus, need = int(ray.cluster_resources().get("GPU", 0)), self.size * options.tensor_parallel_size
            if gpus < need:  # Ray would wait for GPUs forever
                raise ConfigError(f"data_parallel_size={self.size} x tensor_parallel_size={options.tensor_parallel_size} "
                                  f"needs {need} GPUs but the Ray cluster has {gpus}; lower one of them")
            binds = [None] * self.size
            handles = [remote.options(num_gpus=options.tensor_parallel_size) for _ in binds]
        one = dataclasses.replace(options, data_parallel_size=1)
        self.replicas = [h.remote(one, bind, *actor_args) for h, bind in zip(handles, binds)]
        self.alive = list(range(self.size))
        info = self._get([r.info.remote() for r in self.replicas], "starting")
        self.max_length = min(i["max_length"] for i in info)
        # What the engines loaded (dtype=auto resolved), for the store's fingerprint and the
        # tree files: the same model everywhere, or answers would depend on the replica.
        loaded = {(i["dtype"], i["commit_hash"]) for i in info}
        if len(loaded) > 1:
            self.close()
            raise ConfigError(f"the replicas loaded {options.pretrained} differently (dtype, commit: "
                              f"{sorted(loaded, key=str)}); set dtype= (and revision=) so every replica loads the same")
        (self.dtype, self.commit_hash), = loaded

    def _get(self, refs, doing: str):
        import ray

        try:
            return ray.get(refs)
        except ray.exceptions.RayError as e:
            self.close()
            raise RuntimeError(f"a vLLM replica failed while {doing}: {first_line(e)}") from None

    def info(self) -> list[dict]:
        return self._get([self.replicas[r].info.remote() for r in self.alive], "answering")

    def _split(self, method: str, items: Sequence, doing: str) -> list:
        """Items in one contiguous share per live replica, `method` on each, back in order."""
        share = -(-len(items) // len(self.alive)) if items else 0
        refs = [getattr(self.replicas[r], method).remote(list(items[k * share:(k + 1) * share]))
                for k, r in enumerate(self.alive) if items[k * share:(k + 1) * share]]
        return [out for part in self._get(refs, doing) for out in part]

    def generate(self, requests: Sequence[Continue]) -> list[Generation]:
        """Continuations (search/policy.Policy), split between the replicas."""
        return self._split("generate", requests, "generating")

    def score_many(self, pairs: list) -> list[tuple[float, bool]]:
        """Scores, split between the replicas, back in order."""
        return self._split("score_many", pairs, "scoring")

    def stream(self, replica: int, method: str, *args) -> Iterator:
        """Call a streaming method (a generator) of one replica; yields each item as it
        arrives. If the replica dies meanwhile, the error raised is one `lost` recognises."""
        ray = import_ray()
        for ref in getattr(self.replicas[replica], method).options(num_returns="streaming").remote(*args):
            yield ray.get(ref)

    @staticmethod
    def lost(error: BaseException) -> bool:
        """Whether an error from `stream` means the replica died (killed, out of memory)
        rather than that what it ran failed."""
        return isinstance(error, import_ray().exceptions.ActorDiedError)

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
