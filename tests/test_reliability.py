"""Reliability: resume after a kill (store=PATH), a model that never finishes a step or an
answer, determinism, and memory (trees freed, the KV cap).

The model-free tests drive MarcoMCTSLM with the scripted fake (tests/fakes.py); the ones
marked slow run smollm2-135m, one of them through `lm_eval` killed with SIGKILL.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest
from fakes import ScriptedPolicy, fake_lm
from test_real_model import greedy_searches

from marco_eval.search import Search, SearchConfig, drive
from marco_eval.store import RequestStore, StoreError

GEN = {"until": ["</Output>"], "max_gen_toks": 200}
RECORD_FIELDS = ["key", "fingerprint", "task", "doc_id", "instance", "answer_kind", "text", "answer", "candidates",
                 "generated_tokens", "policy_calls", "seconds", "rollouts", "trace"]


class Req:
    """What lm-eval hands generate_until: args plus the task and document it came from."""

    def __init__(self, doc_id: int, task_name: str = "toy", gen_kwargs=GEN):
        self.args = (f"Question {doc_id}: what is {doc_id} plus {doc_id}?\n", dict(gen_kwargs))
        self.task_name, self.doc_id, self.repeats = task_name, doc_id, 1


def varied(prefix: str, seed: int) -> str:
    """Different seeds write different steps and answers (so a reused answer is visible)."""
    return f"Think {seed % 89}.\n\n<Output>{seed % 10}</Output>"


REQS = [Req(i) for i in range(5)]


def read_store(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


class Killed(Exception):
    pass


# ---------------------------------------------------------------- resume
def test_store_records_every_finished_request(tmp_path):
    lm = fake_lm(varied, simulations=2, store=str(tmp_path / "s.jsonl"))
    texts = lm.generate_until(REQS, True)
    records = read_store(tmp_path / "s.jsonl")
    assert len(records) == 5 and all(list(r) == RECORD_FIELDS for r in records)
    by_doc = {r["doc_id"]: r for r in records}
    assert [by_doc[i]["text"] for i in range(5)] == texts
    assert {r["task"] for r in records} == {"toy"} and len({r["fingerprint"] for r in records}) == 1
    assert all(len(r["candidates"]) == 4 and r["policy_calls"] > 0 and r["seconds"] >= 0 for r in records)
    for r in records:  # per-rollout data and the anytime trace (one point per simulation)
        assert [x["answer"] for x in r["rollouts"]] == r["candidates"]
        assert all(set(x) == {"answer", "reward", "tokens", "finish", "simulation", "reflections",
                                     "confidence"} for x in r["rollouts"])
        assert len(r["trace"]) == 2 and r["trace"][-1] == {"answer": r["answer"], "tokens": r["generated_tokens"]}


def test_killed_run_resumes_computing_only_unfinished_requests(tmp_path, capfd):
    store = tmp_path / "s.jsonl"
    uninterrupted = fake_lm(varied, simulations=2, tree_batch=2).generate_until(REQS, True)

    lm = fake_lm(varied, simulations=2, tree_batch=2, store=str(store))
    add = lm.store.add

    def add_then_die(record):  # the process dies right after its second record is on disk
        add(record)
        if len(lm.store) == 2:
            raise Killed

    lm.store.add = add_then_die
    with pytest.raises(Killed):
        lm.generate_until(REQS, True)
    lm.store.close()  # the OS releases the lock of a killed process
    finished = {r["doc_id"]: r for r in read_store(store)}
    assert len(finished) == 2
    with open(store, "a") as f:  # a kill during the next write leaves a torn line
        f.write('{"key": "deadbeef", "text": "half a rec')

    again = fake_lm(varied, simulations=2, tree_batch=2, store=str(store))
    capfd.readouterr()
    assert again.generate_until(REQS, True) == uninterrupted
    assert "2 of 5 requests already finished, searching 3" in capfd.readouterr().err
    searched = {s["request"] for s in again.stats}
    assert searched == set(range(5)) - set(finished)  # nothing that had finished was searched again
    records = read_store(store)  # the torn line was cut away; each request appears once
    assert len(records) == 5 and sorted(r["doc_id"] for r in records) == list(range(5))
    assert records[:2] == list(finished.values())


def test_a_store_made_under_another_fingerprint_is_named_not_silently_ignored(tmp_path, capfd):
    """Resuming after something that changes the fingerprint (here a setting; in practice often
    a model re-pulled with another transformers version, whose config.json then differs)
    must say why nothing was reused rather than only '0 of N finished'."""
    store = tmp_path / "s.jsonl"
    first = fake_lm(varied, simulations=2, tree_batch=2, store=str(store))
    first.generate_until(REQS[:2], True)
    first.store.close()
    capfd.readouterr()
    again = fake_lm(varied, simulations=3, tree_batch=2, store=str(store))
    again.generate_until(REQS[:2], True)
    err = capfd.readouterr().err
    assert "0 of 2 requests already finished, searching 2" in err
    assert "2 record(s) in it were made under another fingerprint and are not reused" in err
    capfd.readouterr()
    same = fake_lm(varied, simulations=2, tree_batch=2, store=str(store.with_name("t.jsonl")))
    same.generate_until(REQS[:2], True)
    assert "another fingerprint" not in capfd.readouterr().err  # a store of one fingerprint says nothing more


def test_a_different_seed_or_config_never_reuses_an_answer(tmp_path):
    store = str(tmp_path / "s.jsonl")
    first = fake_lm(varied, simulations=2, seed=1, store=store)
    texts = first.generate_until(REQS[:2], True)
    first.store.close()
    same = fake_lm(varied, simulations=2, seed=1, store=store, tree_dir=str(tmp_path / "trees"))
    assert same.generate_until(REQS[:2], True) == texts and same.stats == []  # output-only options don't matter
    same.store.close()
    for changed in ({"seed": 2}, {"simulations": 3}, {"temperature": 0.5}):
        other = fake_lm(varied, store=store, **{"simulations": 2, "seed": 1, **changed})
        other.generate_until(REQS[:2], True)
        assert len(other.stats) == 2, changed  # both searched again
        other.store.close()
    assert len(read_store(store)) == 2 + 3 * 2


def test_store_ignores_and_cuts_a_torn_last_line(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"key": "a", "text": "x"}\n{"key": "b", "te')
    store = RequestStore(path)
    assert list(store.records) == ["a"] and path.read_text() == '{"key": "a", "text": "x"}\n'
    store.add({"key": "c", "text": "z"})
    store.close()
    assert [r["key"] for r in read_store(path)] == ["a", "c"]


def test_store_corrupt_middle_line_is_an_error(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"key": "a", "text": "x"}\n[1, 2]\n')
    with pytest.raises(StoreError, match="line 2 is not a request record"):
        RequestStore(path)


def test_use_cache_of_the_same_config_is_reused(tmp_path):
    """lm-eval's own --use_cache: allowed when our fingerprint matches the database's."""
    from lm_eval.api.model import CachingLM

    db = str(tmp_path / "cache.db")
    first = CachingLM(fake_lm(varied, simulations=2), db)
    texts = first.generate_until(REQS[:3])
    first.dbdict.close()
    second_lm = fake_lm(varied, simulations=2)
    second = CachingLM(second_lm, db)
    assert second.generate_until(REQS[:3]) == texts and second_lm.stats == []


# ---------------------------------------------------------------- a model that never finishes
@pytest.mark.parametrize("action", ["step", "mini_step"])
def test_model_that_never_writes_a_delimiter_or_an_answer_is_bounded(action):
    policy = ScriptedPolicy(lambda prefix, seed: "a" * 10_000)  # no blank line, no </Output>, no EOS
    cfg = SearchConfig(simulations=6, children=2, action=action, action_max_tokens=7, mini_step_tokens=5,
                       max_depth=3, rollout_max_tokens=20)
    search = Search(cfg, policy.encode("Q?\n"), policy, max_new_tokens=50, until=("</Output>",),
                    answer_fn=lambda text: None)
    result = drive(search, policy)
    assert result.text and set(result.text) == {"a"} and result.answer is None
    nodes = search.tree.nodes
    assert max(n.depth for n in nodes) <= 3
    assert all(len(n.action_ids) <= (7 if action == "step" else 5) for n in nodes)
    assert all(len(r.token_ids) - r.continuation_start <= 20 for r in search.tree.rollouts)
    assert len(result.token_ids) <= 50
    # no request ever asks for more than the budget left on its path
    assert all(len(r.prefix) - 3 + r.max_new_tokens <= 50 for call in policy.calls for r in call)
    assert result.generated_tokens == sum(len(g.token_ids) for g in policy.outputs)


def test_unanswered_text_is_returned_and_scored_as_invalid():
    import mgsm_utils

    from marco_eval.answers import extract_answer

    lm = fake_lm(lambda prefix, seed: "b" * 10_000, simulations=2, action_max_tokens=4, max_depth=2)
    (text,) = lm.generate_until([Req(0, gen_kwargs={"until": ["</Output>"], "max_gen_toks": 12})], True)
    assert text == "b" * 12  # the whole budget, returned as text
    for response in (text, "", "<Output></Output>", "<Output>many</Output>", "I don't know."):
        assert extract_answer(response, "strict") is None and extract_answer(response, "flexible") is None
    resps = [[text], [""], ["<Output>many</Output>"]]
    assert mgsm_utils.strict_filter(resps, [{}] * 3) == mgsm_utils.flexible_filter(resps, [{}] * 3) == [["[invalid]"]] * 3


@pytest.fixture(autouse=True)
def tasks_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "tasks"))


# ---------------------------------------------------------------- memory
def test_trees_are_freed_when_their_request_completes():
    lm = fake_lm(varied, simulations=3, tree_batch=1)
    made: list[tuple[weakref.ref, weakref.ref]] = []
    make_search = lm.engine.make_search

    def tracked(*args, **kw):
        search = make_search(*args, **kw)
        made.append((weakref.ref(search), weakref.ref(search.tree)))
        return search

    lm.engine.make_search = tracked
    checked = []
    pull_original = lm.policy.generate_stream

    def generate_stream(pull, push):
        def checking_pull(n):
            done = {s["request"] for s in lm.stats}
            for i in done:  # every finished request's search and tree are gone already (refcounting: no gc run)
                assert made[i][0]() is None and made[i][1]() is None, f"request {i} still held"
            checked.append(len(done))
            return pull(n)
        return pull_original(checking_pull, push)

    lm.policy.generate_stream = generate_stream
    lm.generate_until(REQS, True)
    assert 4 in checked  # also checked while the last request was still running


# ---------------------------------------------------------------- real model (smollm2-135m)
# One torch thread: on a shared 2-core machine two threads that get preempted are 5-25x
# slower (measured: a 150-token prefill of smollm2 takes 1.1 s on one thread, 3.6-12.5 s on two).
ONE_THREAD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _tree_files(folder: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(folder.glob("*.json"))}


@pytest.mark.slow
def test_same_seed_gives_byte_identical_texts_and_trees(smollm_path, tmp_path, one_thread):
    """Two fresh models and a second call on a warm KV cache: the same bytes."""
    from marco_eval.lm import MarcoMCTSLM

    args = dict(pretrained=smollm_path, dtype="float32", simulations=3, children=2, action="mini_step",
                mini_step_tokens=6, max_batch=4, tree_batch=2, seed=7)
    reqs = [Req(i, gen_kwargs={"until": ["</Output>"], "max_gen_toks": 24}) for i in range(2)]
    first = MarcoMCTSLM(**args, tree_dir=str(tmp_path / "a"))
    texts = first.generate_until(reqs, True)
    first.options.tree_dir = str(tmp_path / "warm")
    assert first.generate_until(reqs, True) == texts
    second = MarcoMCTSLM(**args, tree_dir=str(tmp_path / "b"))
    assert second.generate_until(reqs, True) == texts
    trees = _tree_files(tmp_path / "a")
    assert len(trees) == 2 and all(len(json.loads(b)["rollouts"]) >= 4 for b in trees.values())
    assert _tree_files(tmp_path / "b") == trees
    assert _tree_files(tmp_path / "warm") == trees
    other_seed = MarcoMCTSLM(**{**args, "seed": 8})
    assert other_seed.generate_until(reqs, True) != texts  # the seed is what fixes the samples


def _pinned_closure(kv, pinned) -> set[int]:
    """Entries live rows hold (pinned) and their ancestors: what eviction may not drop."""
    held = set()
    for entry in kv.entries.values():
        if id(entry) in pinned:
            while entry is not None:
                held.add(id(entry))
                entry = entry.parent
    return held


@pytest.mark.slow
def test_kv_cache_cap_holds_and_changes_no_answer(smollm_path, one_thread):
    from marco_eval.backends.hf import TransformersPolicy

    capped = TransformersPolicy(smollm_path, dtype="float32", max_batch=4, kv_cache_mb=1)
    kv, passes = capped.kv, []
    evict = kv.evict_to_cap

    def checked_evict(pinned=frozenset()):
        evict(pinned)
        held = _pinned_closure(kv, pinned)
        passes.append((kv.nbytes, kv.nbytes <= kv.max_bytes or all(id(e) in held for e in kv.entries.values())))

    kv.evict_to_cap = checked_evict
    uncapped = TransformersPolicy(smollm_path, dtype="float32", max_batch=4)
    assert greedy_searches(capped) == greedy_searches(uncapped)
    # After every eviction pass the cache is under its cap, or holds only what live rows use.
    assert passes and all(ok for _, ok in passes)
    assert kv.evictions > 0 and uncapped.kv.nbytes > kv.max_bytes  # the cap did bind
    assert kv.nbytes <= kv.max_bytes  # no row is live at the end: the cap holds exactly


@pytest.mark.slow
def test_sigkill_part_way_then_rerun_recomputes_only_unfinished(smollm_path, tmp_path, mgsm_data):
    """A real `lm_eval` run killed with SIGKILL after 2 of 4 problems; the same command again
    searches only the other 2 and ends with the results of an uninterrupted run."""
    def command(name: str, store: Path) -> list[str]:
        return [str(Path(sys.executable).parent / "lm_eval"), "--model", "marco_mcts", "--model_args",
                f"pretrained={smollm_path},dtype=float32,simulations=2,children=2,tree_batch=1,max_batch=4,"
                f"store={store},tree_dir={tmp_path / name / 'trees'}",
                "--tasks", "mgsm_en", "--limit", "4", "--gen_kwargs", "max_gen_toks=12",
                "--output_path", str(tmp_path / name / "out"), "--log_samples"]

    def run(cmd):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=ONE_THREAD_ENV)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    whole, resumed = tmp_path / "whole.jsonl", tmp_path / "resumed.jsonl"
    run(command("whole", whole))

    victim = subprocess.Popen(command("resumed", resumed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=ONE_THREAD_ENV)
    deadline = time.monotonic() + 1200
    while (not resumed.exists() or resumed.read_text().count("\n") < 2) and victim.poll() is None:
        assert time.monotonic() < deadline, "the run wrote no records"
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    before = read_store(resumed)
    assert victim.returncode == -signal.SIGKILL and 2 <= len(before) < 4, len(before)
    assert not glob.glob(str(tmp_path / "resumed" / "out" / "**" / "results_*.json"), recursive=True)

    proc = run(command("resumed", resumed))
    assert f"{len(before)} of 4 requests already finished, searching {4 - len(before)}" in proc.stderr
    after = read_store(resumed)
    assert after[: len(before)] == before and len(after) == 4  # appended only the unfinished ones
    assert {r["doc_id"] for r in after[len(before):]}.isdisjoint(r["doc_id"] for r in before)
    assert {r["key"]: r["text"] for r in after} == {r["key"]: r["text"] for r in read_store(whole)}

    def outputs(name):
        samples = glob.glob(str(tmp_path / name / "out" / "**" / "samples_mgsm_en_*.jsonl"), recursive=True)
        rows = sorted((json.loads(line) for line in open(samples[0])), key=lambda d: d["doc_id"])
        results = json.load(open(glob.glob(str(tmp_path / name / "out" / "**" / "results_*.json"), recursive=True)[0]))
        return [(d["doc_id"], d["resps"], d["filtered_resps"]) for d in rows], results["results"]["mgsm_en"]

    assert outputs("resumed") == outputs("whole")
    assert _tree_files(tmp_path / "resumed" / "trees") == _tree_files(tmp_path / "whole" / "trees")


# ---------------------------------------------------------------- redacted stores: commit a long run's progress
def test_a_redacted_store_resumes_with_the_same_scores(tmp_path):
    """`marco-eval store redact`: completions (which may quote the question) become stand-ins
    that the MGSM filters read as the same answers, so the resumed run scores the same."""
    from marco_eval.answers import extract_answer
    from marco_eval.cli import main

    texts = iter(["Think.\n\nSo 3 + 4 = 7.\n\n<Output>7</Output>", "Counting 12 eggs, I get 15 then 16",
                  "Janet has some ducks.", "The answer is 1,250.", "<Output>\\boxed{3/4}</Output>"])
    fixed = {i: next(texts) for i in range(5)}
    lm = fake_lm(lambda prefix, seed: fixed[int(prefix.split()[1].rstrip(":"))], simulations=1,
                 store=str(tmp_path / "s.jsonl"))
    reqs = [Req(i, task_name="mgsm_en") for i in range(5)]
    original = lm.generate_until(reqs, True)
    lm.store.close()
    assert main(["store", "redact", str(tmp_path / "s.jsonl"), str(tmp_path / "r.jsonl")]) == 0
    copy = read_store(tmp_path / "r.jsonl")
    assert all(r["redacted"] for r in copy) and "Janet" not in (tmp_path / "r.jsonl").read_text()
    again = fake_lm(lambda prefix, seed: "never asked", simulations=1, store=str(tmp_path / "r.jsonl"))
    resumed = again.generate_until(reqs, True)
    for mode in ("strict", "flexible"):
        assert [extract_answer(t, mode) for t in resumed] == [extract_answer(t, mode) for t in original]
    assert [extract_answer(t, "strict") for t in resumed] == ["7", None, None, "1250", "0.75"]


def test_redact_refuses_text_scored_tasks_and_overwriting_the_store(tmp_path, capsys):
    from marco_eval.cli import main

    lm = fake_lm(varied, simulations=1, store=str(tmp_path / "s.jsonl"))
    lm.generate_until([Req(0, task_name="colloquial_zh_en")], True)
    lm.store.close()
    assert main(["store", "redact", str(tmp_path / "s.jsonl"), str(tmp_path / "r.jsonl")]) == 2
    assert "task 'colloquial_zh_en' is scored on the whole text" in capsys.readouterr().err
    assert not (tmp_path / "r.jsonl").exists()
    assert main(["store", "redact", str(tmp_path / "s.jsonl"), str(tmp_path / "s.jsonl")]) == 2
    assert "is the store itself" in capsys.readouterr().err
