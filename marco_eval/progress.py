"""Live progress of a batch of searches: tokens/s, trees in flight, simulations, batch
rows and an ETA from tokens, refreshed while the model decodes.

A search can run for minutes before its problem counts as done, so the finished-problems
bar alone sits still (and its ETA says nothing) for most of a run. A daemon thread reads
counters the searches and the backend keep anyway — plain ints, read without locks: a
value one step stale is fine for a progress line — and hands a `Snapshot` to a sink
every `interval` seconds: lm.py puts it in lm-eval's tqdm bar on a terminal and prints
one line every LOG_EVERY_S otherwise (logs stay short).
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence, runtime_checkable

from marco_eval.search import Search

RATE_WINDOW_S = 30.0  # tokens/s is measured over the last half minute: steady, yet current
LOG_EVERY_S = 60.0  # stderr is not a terminal: one progress line a minute


@runtime_checkable
class LiveCounters(Protocol):
    """A backend that counts as it decodes (the transformers backend); others are read
    through their searches, which count when each policy call returns."""

    sampled_tokens: int  # tokens sampled since the backend was built, by every caller
    live_rows: int  # rows in the running batch


@dataclass(frozen=True)
class Snapshot:
    elapsed_s: float
    tokens: int  # generated for these searches so far
    tokens_per_s: float  # over the last RATE_WINDOW_S
    in_flight: int  # trees started and not finished
    finished: int
    total: int
    simulations: int  # simulations (sampling: samples) completed, all trees
    total_simulations: int
    rows: int | None  # rows in the backend's batch, when it says
    eta_s: float | None  # remaining tokens / tokens_per_s; None until there is a rate

    def line(self) -> str:
        rows = f" | rows {self.rows}" if self.rows is not None else ""
        return (f"{self.tokens_per_s:.1f} tok/s | trees {self.in_flight} in flight, {self.finished}/{self.total} done"
                f" | simulations {self.simulations}/{self.total_simulations}{rows} | ETA {clock(self.eta_s)}")


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def simulations_of(search: Search) -> int:
    """What a whole search runs: MCTS simulations, or samples for strategy=sampling."""
    return search.config.samples if search.config.strategy == "sampling" else search.config.simulations


class SearchProgress:
    """Counters over one batch of searches (engine.run's), read by `snapshot`.

    It holds a search only until `mark_done`, so a finished tree is freed as soon as its
    caller lets go of it (the memory tests check this)."""

    def __init__(self, searches: Sequence[Search], policy, *, clock_fn: Callable[[], float] = time.monotonic):
        self.searches: list[Search | None] = list(searches)
        self.policy = policy
        self.clock = clock_fn
        self.started = clock_fn()
        self.total_simulations = sum(simulations_of(s) for s in self.searches)
        self.done = self.done_tokens = self.done_simulations = 0
        self._counter_start = policy.sampled_tokens if isinstance(policy, LiveCounters) else 0
        self._samples: list[tuple[float, int]] = []  # (time, tokens) within the rate window

    def mark_done(self, index: int, generated_tokens: int) -> None:
        """Search `index` finished having generated this many tokens (its result's count:
        a search run by a data-parallel replica counts there, not here)."""
        search, self.searches[index] = self.searches[index], None
        self.done += 1
        self.done_tokens += generated_tokens
        self.done_simulations += simulations_of(search)

    def snapshot(self) -> Snapshot:
        now = self.clock()
        live = [s for s in self.searches if s is not None and s.policy_calls > 0]
        if isinstance(self.policy, LiveCounters):  # counted per decode step: smooth
            tokens = self.policy.sampled_tokens - self._counter_start
        else:  # counted when each policy call returns
            tokens = self.done_tokens + sum(s.generated_tokens for s in live)
        self._samples.append((now, tokens))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW_S:
            self._samples.pop(0)
        t0, n0 = self._samples[0]
        rate = (tokens - n0) / (now - t0) if now > t0 else 0.0
        simulations = self.done_simulations + sum(max(s.simulation - 1, 0) for s in live)
        return Snapshot(elapsed_s=now - self.started, tokens=tokens, tokens_per_s=rate, in_flight=len(live),
                        finished=self.done, total=len(self.searches), simulations=simulations,
                        total_simulations=self.total_simulations,
                        rows=self.policy.live_rows if isinstance(self.policy, LiveCounters) else None,
                        eta_s=self._eta(tokens, simulations, rate))

    def _eta(self, tokens: int, simulations: int, rate: float) -> float | None:
        """Remaining tokens / rate: tokens per completed simulation so far, times the
        simulations left. None before a simulation has completed or a rate is known."""
        if rate <= 0 or simulations <= 0:
            return None
        return max(tokens / simulations * (self.total_simulations - simulations), 0.0) / rate


class ProgressThread:
    """Calls `sink(snapshot)` every `interval` seconds until stopped (a context manager),
    and once more on the way out, so the last figures shown are the final ones."""

    def __init__(self, progress: SearchProgress, sink: Callable[[Snapshot], None], interval: float):
        self.progress, self.sink, self.interval = progress, sink, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="marco-eval-progress", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sink(self.progress.snapshot())
            except Exception as e:  # noqa: BLE001 - progress must never stop a run
                print(f"marco-eval: progress display stopped ({e})", file=sys.stderr)
                return

    def __enter__(self) -> ProgressThread:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if exc[0] is None:
            self.sink(self.progress.snapshot())
