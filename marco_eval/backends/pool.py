"""Data parallelism for the vLLM backend: a pool of persistent engine processes.

WorkerPool (backend=vllm, data_parallel_size=N): N persistent worker processes, each
building its own engine once, on its own GPUs, and keeping it for the whole run (the GPUs
are chosen with CUDA_VISIBLE_DEVICES before the process starts; tensor_parallel_size GPUs
each). Problems are split by whole trees: worker w searches problems w, w+N, w+2N, ...
with the ordinary lock-step driver on its own engine; finished searches stream back and
are put in request order. The parent process tokenises prompts (it holds the tokenizer,
no engine) and so is a Codec with a `run_searches` of its own (engine.SearchRunner).
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing as mp
import os
import weakref
from dataclasses import dataclass
from multiprocessing.connection import wait

from marco_eval.backends.codec import TokenizerCodec, pad_token_id
from marco_eval.config import ConfigError, ModelOptions
from marco_eval.errors import first_line
from marco_eval.search import RewardFn, Search, SearchConfig, rollout_reward, run_searches


# ---------------------------------------------------------------------- worker pool (vLLM)
@dataclass(frozen=True)
class SearchJob:
    """What a worker needs to rebuild a Search around its own engine (a Search holds the
    parent's codec and answer function, which stay in the parent). The reward travels
    pickled, so it must be a module-level function (the default is)."""
    config: SearchConfig
    prompt_ids: tuple[int, ...]
    max_new_tokens: int
    until: tuple[str, ...]
    reward: RewardFn = rollout_reward

    @classmethod
    def of(cls, search: Search) -> SearchJob:
        return cls(search.cfg, tuple(search.tree.prompt_ids), search.max_new_tokens, tuple(search.until),
                   search.reward)


def gpu_groups(workers: int, per_worker: int, visible: str | None = None, available: int | None = None) -> list[str]:
    """CUDA_VISIBLE_DEVICES for each worker: consecutive blocks of `per_worker` GPUs, taken
    from the parent's CUDA_VISIBLE_DEVICES when set, else from the GPUs present."""
    need = workers * per_worker
    if visible:
        ids = [d.strip() for d in visible.split(",") if d.strip()]
    else:
        ids = [str(i) for i in range(available if available else need)]
    if len(ids) < need:
        raise ConfigError(f"data_parallel_size={workers} x tensor_parallel_size={per_worker} needs {need} GPUs "
                          f"but {len(ids)} are visible ({','.join(ids) or 'none'}); lower one of them")
    return [",".join(ids[w * per_worker:(w + 1) * per_worker]) for w in range(workers)]


def visible_gpu_count() -> int | None:
    """GPUs torch can see, or None when it sees none (then no count can be checked here)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.device_count() if torch.cuda.is_available() else None


@contextlib.contextmanager
def _environ(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _worker(options: ModelOptions, answer_kind: str, conn) -> None:
    """A worker's whole life: build the engine once, then serve searches and scores."""
    from marco_eval.answers import answer_reader
    from marco_eval.backends import build_policy

    try:
        policy = build_policy(options)
    except Exception as e:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", f"{type(e).__name__}: {first_line(e)}"))
        return
    conn.send(("ready", {"max_length": policy.max_length}))
    answer_fn = answer_reader(answer_kind)
    while True:
        try:
            msg = conn.recv()
        except EOFError:  # the parent is gone
            return
        if msg[0] == "stop":
            return
        try:
            if msg[0] == "search":
                _serve_search(policy, answer_fn, conn, *msg[1:])
            elif msg[0] == "score":
                conn.send(("scored", policy.score_many(msg[1])))
            elif msg[0] == "info":
                conn.send(("info", {"pid": os.getpid(), "policy": id(policy),
                                    "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                                    "generate_calls": getattr(policy, "generate_calls", None)}))
        except Exception as e:  # noqa: BLE001
            conn.send(("error", f"{type(e).__name__}: {first_line(e)}"))


def _serve_search(policy, answer_fn, conn, indices: list[int], jobs: list[SearchJob], width: int) -> None:
    searches = [Search(j.config, j.prompt_ids, policy, max_new_tokens=j.max_new_tokens, until=j.until,
                       answer_fn=answer_fn, reward=j.reward) for j in jobs]
    run_searches(searches, policy, width=width, on_done=lambda k, result: conn.send(("done", indices[k], result)))
    conn.send(("searched",))


class WorkerPool(TokenizerCodec):
    """The parent's side of data parallelism: a codec (tokenizer, no engine) plus
    `run_searches` / `score_many` that fan out to the workers."""

    def __init__(self, options: ModelOptions, tokenizer, *, start_method: str = "spawn"):
        self.tokenizer, self.name = tokenizer, options.pretrained
        self.pad_id = pad_token_id(tokenizer)
        self.dtype = options.dtype
        self.size = options.data_parallel_size
        groups = gpu_groups(self.size, options.tensor_parallel_size, os.environ.get("CUDA_VISIBLE_DEVICES"),
                            visible_gpu_count())
        ctx = mp.get_context(start_method)
        self.conns, self.procs = [], []
        worker_options = dataclasses.replace(options, data_parallel_size=1)
        for w, gpus in enumerate(groups):
            parent_end, child_end = ctx.Pipe()
            # Not daemonic: vLLM starts its own engine-core processes inside each worker.
            proc = ctx.Process(target=_worker, args=(worker_options, options.answer, child_end),
                               name=f"marco-eval-worker-{w}")
            with _environ(CUDA_VISIBLE_DEVICES=gpus):  # inherited by the child at start
                proc.start()
            child_end.close()
            self.conns.append(parent_end)
            self.procs.append(proc)
        self._finalizer = weakref.finalize(self, _shutdown, self.conns, self.procs)
        ready = [self._recv(w, "ready")[1] for w in range(self.size)]
        self.max_length = min(r["max_length"] for r in ready)

    def _recv(self, w: int, expect: str | tuple[str, ...]):
        conn, proc = self.conns[w], self.procs[w]
        wait([conn, proc.sentinel])
        try:
            msg = conn.recv()
        except EOFError:
            proc.join(timeout=5)
            self._fail(f"data-parallel worker {w} exited (code {proc.exitcode}) without answering")
        if msg[0] == "error":
            self._fail(f"data-parallel worker {w} failed: {msg[1]}")
        if msg[0] not in ((expect,) if isinstance(expect, str) else expect):
            self._fail(f"data-parallel worker {w} answered {msg[0]!r}, expected {expect!r}")
        return msg

    def _fail(self, message: str):
        self.close()  # a worker that failed mid-job leaves the others' answers unread: start over
        raise RuntimeError(message)

    def run_searches(self, searches: list[Search], width: int, on_done=None) -> list:
        """Like search.run_searches, with whole trees split across the workers."""
        results: list = [None] * len(searches)
        busy = {}
        for w in range(self.size):
            mine = list(range(w, len(searches), self.size))
            if mine:
                self.conns[w].send(("search", mine, [SearchJob.of(searches[i]) for i in mine], width))
                busy[self.conns[w]] = w
        while busy:
            for conn in wait(list(busy)):
                w = busy[conn]
                msg = self._recv(w, ("done", "searched"))
                if msg[0] == "searched":  # this worker's share is done
                    del busy[conn]
                    continue
                _, i, result = msg
                searches[i].tree = result.tree  # the parent's Search gets the worker's tree (tree export)
                results[i] = result
                if on_done is not None:
                    on_done(i, result)
        return results

    def score_many(self, pairs: list) -> list[tuple[float, bool]]:
        """Scores, split into one contiguous share per worker, back in order."""
        share = -(-len(pairs) // self.size) if pairs else 0
        sent = []
        for w in range(self.size):
            part = pairs[w * share:(w + 1) * share]
            if part:
                self.conns[w].send(("score", part))
                sent.append(w)
        return [score for w in sent for score in self._recv(w, "scored")[1]]

    def score(self, context, continuation) -> tuple[float, bool]:
        return self.score_many([(context, continuation)])[0]

    def info(self) -> list[dict]:
        for conn in self.conns:
            conn.send(("info",))
        return [self._recv(w, "info")[1] for w in range(self.size)]

    def close(self) -> None:
        self._finalizer()


def _shutdown(conns, procs) -> None:
    for conn in conns:
        with contextlib.suppress(OSError, ValueError):
            conn.send(("stop",))
    for proc in procs:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)
    for conn in conns:
        conn.close()
