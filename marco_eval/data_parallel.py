"""Data parallelism by whole searches: each replica runs searches on its own engine.

backend=vllm, data_parallel_size=N: the engine's policy is a pool of N engine replicas on
Ray (backends/replicas.py: placement, and a Policy whose calls are split between them).
Sending single requests across processes would cost a round trip per search step, so
problems go out whole instead, the coarsest unit: replica r searches problems r, r+N, ...
with an Engine of its own (engine.EngineReplica: the same search building, driver and
schedule as a single process), and streams each finished search back the moment it ends. The parent tokenises prompts (it holds the
tokenizer, no engine) and sends token ids, the search config and the budget (`SearchJob`).

A replica that dies (killed, out of memory) hands its unfinished problems to the replicas
still alive; with none alive the run stops with one line, and the request store
(store=PATH) keeps every finished problem for the rerun.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol, Sequence, runtime_checkable

from marco_eval.errors import first_line
from marco_eval.search import Origin, Search, SearchConfig, SearchResult


OnDone = Callable[[int, SearchResult], None]


@runtime_checkable
class ReplicaPool(Protocol):
    """Replicas that can each run a streaming method (backends/replicas.RayReplicas)."""

    alive: list[int]  # the replicas still running, by index

    def stream(self, replica: int, method: str, *args) -> Iterator:
        """Yield what the replica's generator method `method(*args)` yields, as it comes."""
        ...

    def lost(self, error: BaseException) -> bool:
        """Whether an error raised by `stream` means its replica died."""
        ...

    def close(self) -> None:
        """Stop every replica."""
        ...


@dataclass(frozen=True)
class SearchJob:
    """A search as it travels to a replica, which builds it around its own engine (a Search
    holds the parent's codec, which stays in the parent)."""
    config: SearchConfig
    prompt_ids: tuple[int, ...]
    max_new_tokens: int
    origin: Origin  # the answer kind, the task's stop strings, the repeat: rebuilt alike

    @classmethod
    def of(cls, search: Search) -> SearchJob:
        return cls(search.config, tuple(search.tree.prompt_ids), search.max_new_tokens, search.origin)


class SearchBuilder(Protocol):
    """What a replica runs jobs with (engine.Engine)."""

    def build_search(self, prompt_ids: Sequence[int], *, max_new_tokens: int, until: Sequence[str],
                     config: SearchConfig | None = None, answer: str | None = None, instance: int = 0) -> Search:
        """A Search around this process's policy (engine.Engine.build_search)."""
        ...

    def run(self, searches: list[Search], on_done: OnDone | None = None, *, width: int | None = None
            ) -> list[SearchResult]:
        """Run them to the end (engine.Engine.run)."""
        ...


def serve_jobs(engine: SearchBuilder, indices: list[int], jobs: list[SearchJob], width: int
               ) -> Iterator[tuple[int, SearchResult]]:
    """A replica's side: build the jobs' searches, run them, and yield (index, result) as each
    finishes (a Ray streaming generator: the parent gets each result while the others run)."""
    done: queue.Queue = queue.Queue()
    searches = [engine.build_search(j.prompt_ids, max_new_tokens=j.max_new_tokens, until=j.origin.task_until,
                                    config=j.config, answer=j.origin.answer, instance=j.origin.instance)
                for j in jobs]

    def drive() -> None:
        try:
            engine.run(searches, on_done=lambda k, r: done.put((indices[k], r)), width=width)
            done.put(None)
        except BaseException as e:  # noqa: BLE001 - re-raised in the generator below
            done.put(e)

    threading.Thread(target=drive, name="marco-eval-replica-driver", daemon=True).start()
    while (item := done.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        yield item


def run_split(pool: ReplicaPool, searches: list[Search], width: int, on_done: OnDone | None = None
              ) -> list[SearchResult]:
    """Run every search on the pool's replicas, whole trees each (module docstring).

    Args:
        pool: the replicas, each serving `search` with `serve_jobs` (engine.EngineReplica).
        searches: built against the pool as their codec.
        width: trees live at once on each replica.
        on_done: called with (index, result) as each search finishes, in any order.
    Returns:
        The results in the order of `searches`; each parent Search gets its replica's tree.
    """
    results: list = [None] * len(searches)
    arrived: queue.Queue = queue.Queue()
    owner = {i: pool.alive[i % len(pool.alive)] for i in range(len(searches))}

    def send(replica: int, indices: list[int]) -> None:
        def stream() -> None:
            try:
                for item in pool.stream(replica, "search", indices, [SearchJob.of(searches[i]) for i in indices],
                                        width):
                    arrived.put(("done", replica, item))
                arrived.put(("finished", replica, None))
            except Exception as e:  # noqa: BLE001 - the main thread decides
                arrived.put(("failed", replica, e))

        threading.Thread(target=stream, name=f"marco-eval-replica-{replica}", daemon=True).start()

    running: dict[int, int] = {}  # replica -> its share lists not finished yet
    for r in pool.alive:
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
        elif not pool.lost(payload):  # a failed search, not a lost replica
            pool.close()
            raise RuntimeError(f"a vLLM replica failed: {type(payload).__name__}: {first_line(payload)}")
        else:  # the replica died: its unfinished problems go to the ones alive
            running.pop(replica, None)
            if replica in pool.alive:
                pool.alive.remove(replica)
            left = [i for i, r in owner.items() if r == replica and results[i] is None]
            if not pool.alive:
                raise RuntimeError(f"every vLLM replica failed (the last: {first_line(payload)}); "
                                   f"{len(left)} problems unfinished: rerun with store=PATH to resume")
            for k, i in enumerate(left):
                owner[i] = pool.alive[k % len(pool.alive)]
            for r in {owner[i] for i in left}:
                running[r] = running.get(r, 0) + 1
                send(r, [i for i in left if owner[i] == r])
    return results
