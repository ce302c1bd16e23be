"""Live progress: what the line says while searches run, from counters the search keeps."""

from __future__ import annotations

import gc
import weakref

from fakes import StreamingScriptedPolicy
from marco_eval.progress import SearchProgress, Snapshot, clock
from marco_eval.search import Search, SearchConfig


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _searches(policy, n, **cfg):
    return [Search(SearchConfig(**cfg), policy.encode(f"Q{i}\n"), policy, max_new_tokens=50) for i in range(n)]


def test_snapshot_counts_tokens_trees_simulations_and_eta():
    policy = StreamingScriptedPolicy(lambda p, s: "<Output>1</Output>")
    searches = _searches(policy, 4, simulations=4)
    t = Clock()
    tracker = SearchProgress(searches, policy, clock_fn=t)
    # Two trees under way: one finished 2 of its 4 simulations (now in its 3rd), one in its 1st.
    for s, sim, tokens in ((searches[0], 3, 60), (searches[1], 1, 10)):
        s.simulation, s.generated_tokens, s.policy_calls = sim, tokens, 1
    assert tracker.snapshot().tokens_per_s == 0.0 and tracker.snapshot().eta_s is None
    t.now = 10.0
    searches[0].generated_tokens = 80
    tracker.mark_done(3, generated_tokens=40)  # a fourth tree finished all 4 simulations with 40 tokens
    snap = tracker.snapshot()
    assert (snap.tokens, snap.in_flight, snap.finished, snap.total) == (80 + 10 + 40, 2, 1, 4)
    assert (snap.simulations, snap.total_simulations) == (2 + 0 + 4, 16)
    assert snap.tokens_per_s == (130 - 70) / 10.0
    # 130 tokens over 6 simulations, 10 simulations left -> 216.7 tokens at 6 tok/s.
    assert abs(snap.eta_s - (130 / 6 * 10) / 6.0) < 1e-9
    finished = weakref.ref(searches[3])
    searches[3] = None
    gc.collect()
    assert finished() is None  # the tracker does not keep a finished tree alive


def test_backend_counters_give_the_rate_and_the_batch_rows():
    class Counting(StreamingScriptedPolicy):
        sampled_tokens, live_rows = 1000, 0  # counts from earlier calls do not count here

    policy = Counting(lambda p, s: "<Output>1</Output>")
    t = Clock()
    tracker = SearchProgress(_searches(policy, 2, strategy="sampling", samples=3), policy, clock_fn=t)
    tracker.snapshot()
    t.now, policy.sampled_tokens, policy.live_rows = 5.0, 1050, 6
    snap = tracker.snapshot()
    assert (snap.tokens, snap.tokens_per_s, snap.rows, snap.total_simulations) == (50, 10.0, 6, 6)
    assert "10.0 tok/s" in snap.line() and "rows 6" in snap.line() and "simulations 0/6" in snap.line()


def test_clock_and_line():
    assert (clock(None), clock(75), clock(3725)) == ("?", "1:15", "1:02:05")
    snap = Snapshot(elapsed_s=1, tokens=1, tokens_per_s=2.5, in_flight=3, finished=1, total=5, simulations=7,
                    total_simulations=20, rows=None, eta_s=90)
    assert snap.line() == "2.5 tok/s | trees 3 in flight, 1/5 done | simulations 7/20 | ETA 1:30"


def test_engine_run_reports_progress_while_searching():
    from fakes import fake_lm

    seen = []
    lm = fake_lm(lambda p, s: "Step.\n\n<Output>3</Output>", simulations=2)
    searches = [lm.engine.make_search(f"Q{i}\n", until=["</Output>"]) for i in range(3)]
    lm.engine.run(searches, progress=seen.append, every=0.0005)
    assert seen and all(isinstance(s, Snapshot) and s.total == 3 for s in seen)
    assert (seen[-1].finished, seen[-1].in_flight, seen[-1].simulations) == (3, 0, 6)  # the last call: final
