"""Advance many searches in lock-step so one policy call carries several trees' requests.

lm-eval hands `generate_until` every request at once. Keeping `width` trees live and
concatenating their pending requests gives the backend big batches (the rStar-Math
pattern) while each tree still sees exactly the results it asked for, in order.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Sequence

from marco_eval.search.mcts import Search, SearchResult


def run_searches(
    searches: Sequence[Search],
    policy,
    width: int = 8,
    on_done: Callable[[int, SearchResult], None] | None = None,
) -> list[SearchResult]:
    if width <= 0:
        raise ValueError(f"width={width}: must be a positive integer")
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
        gens = policy.generate(batch)
        k = 0
        for i, (gen, reqs) in list(live.items()):
            mine, k = gens[k: k + len(reqs)], k + len(reqs)
            try:
                live[i] = (gen, gen.send(mine))
            except StopIteration as stop:
                del live[i]
                finish(i, stop.value)
    return results  # type: ignore[return-value]
