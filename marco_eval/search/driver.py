"""Advance many searches in lock-step so one policy call carries several trees' requests.

lm-eval hands `generate_until` every request at once. Keeping `width` trees live and
concatenating their pending requests gives the backend big batches (the rStar-Math
pattern) while each tree still sees exactly the results it asked for, in order.

Two schedules, same results:
- lock-step rounds (any Policy): one `generate` call carries every live tree's pending
  requests; the call lasts as long as its longest row.
- continuous (a `StreamingPolicy`, e.g. the transformers backend): the
  backend pulls requests whenever batch rows free up; a tree advances the moment all of
  its own requests are back and its next requests join the running batch, so no row
  waits for another tree's long rollout.

A search whose reward is a verifier also yields Score requests; the driver hands them to the
policy's Verifier side (policy.Verifier) and sends the values back, in both schedules.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Sequence

from marco_eval.search.mcts import Search, SearchResult
from marco_eval.search.policy import Policy, Score, StreamingPolicy, Verifier


def _values(policy: Policy, requests: list[Score]) -> list[float]:
    """The policy's verifier's values of Score requests."""
    if not isinstance(policy, Verifier):
        raise TypeError(f"a search asked for verifier values, but {type(policy).__name__} has no verifier "
                        f"(build the policy with one: reward=PATH)")
    return policy.value_many([r.sequence for r in requests])


def _answer(policy: Policy, requests: list) -> list:
    """Generations for continuations, values for Score requests (one batch of each kind)."""
    scores = [i for i, r in enumerate(requests) if isinstance(r, Score)]
    if not scores:
        return policy.generate(requests)
    out: list = [None] * len(requests)
    continuations = [i for i, r in enumerate(requests) if not isinstance(r, Score)]
    for i, value in zip(scores, _values(policy, [requests[i] for i in scores])):
        out[i] = value
    if continuations:
        for i, gen in zip(continuations, policy.generate([requests[i] for i in continuations])):
            out[i] = gen
    return out


def run_searches(
    searches: Sequence[Search],
    policy: Policy,
    width: int = 8,
    on_done: Callable[[int, SearchResult], None] | None = None,
    *,
    lockstep: bool = False,
) -> list[SearchResult]:
    """Run every search to the end, `width` trees live at a time.

    Args:
        searches: not started yet.
        policy: answers their requests; a StreamingPolicy gets the continuous schedule.
        width: trees live at once.
        on_done: called with (index, result) the moment each search finishes.
        lockstep: use lock-step rounds even on a StreamingPolicy (benchmarks compare the two
            schedules; the results are the same).
    Returns:
        The results in the order of `searches`.
    """
    if width <= 0:
        raise ValueError(f"width={width}: must be a positive integer")
    if isinstance(policy, StreamingPolicy) and not lockstep:
        return _run_continuous(searches, policy, width, on_done)
    results: list[SearchResult | None] = [None] * len(searches)
    waiting = deque(range(len(searches)))
    live: dict[int, tuple] = {}  # search index -> (generator, its pending requests)

    def finish(i: int, result: SearchResult) -> None:
        results[i] = result
        if on_done is not None:
            on_done(i, result)

    while waiting or live:
        while waiting and len(live) < width:
            i = waiting.popleft()
            gen = searches[i].run()
            try:
                live[i] = (gen, next(gen))
            except StopIteration as stop:
                finish(i, stop.value)
        if not live:
            continue
        batch = [req for _, reqs in live.values() for req in reqs]
        gens = _answer(policy, batch)
        k = 0
        for i, (gen, reqs) in list(live.items()):
            mine, k = gens[k: k + len(reqs)], k + len(reqs)
            try:
                live[i] = (gen, gen.send(mine))
            except StopIteration as stop:
                del live[i]
                finish(i, stop.value)
    return results  # type: ignore[return-value]


def _run_continuous(searches, policy, width, on_done) -> list[SearchResult]:
    results: list[SearchResult | None] = [None] * len(searches)
    waiting = deque(range(len(searches)))
    live: dict[int, list] = {}  # search index -> [generator, its results so far (None = pending)]
    queue: deque = deque()  # ((search index, request index), Continue) not yet pulled

    def advance(i: int, gen, sent) -> None:
        """Send results (or start), queue the next requests, or finish the search."""
        try:
            reqs = next(gen) if sent is None else gen.send(sent)
            while reqs and isinstance(reqs[0], Score):  # valued at once: no batch row needed
                reqs = gen.send(_values(policy, reqs))
        except StopIteration as stop:
            live.pop(i, None)
            results[i] = stop.value
            if on_done is not None:
                on_done(i, stop.value)
            return
        live[i] = [gen, [None] * len(reqs)]
        queue.extend(((i, j), r) for j, r in enumerate(reqs))

    def pull(n: int):
        while len(queue) < n and waiting and len(live) < width:
            i = waiting.popleft()
            advance(i, searches[i].run(), None)
        return [queue.popleft() for _ in range(min(n, len(queue)))]

    def push(key, generation) -> None:
        i, j = key
        gen, got = live[i]
        got[j] = generation
        if all(g is not None for g in got):
            advance(i, gen, got)

    policy.generate_stream(pull, push)
    if waiting or live:
        raise RuntimeError("the policy stopped streaming before every search finished")
    return results  # type: ignore[return-value]
