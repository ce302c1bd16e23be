"""Real-model checks on smollm2-135m (fast, cannot do math): the backend and the lm-eval path.

Marked slow: they load a real model. `make test` runs them; `-m "not slow"` skips them.
MARCO_EVAL_TEST_DEVICE=cuda runs them on a GPU (scripts/gpu_check.sh does); the default is cpu.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest

from marco_eval.search import Continue, rollout_reward
from marco_eval.search.export import check_tree_document

pytestmark = pytest.mark.slow
DEVICE = os.environ.get("MARCO_EVAL_TEST_DEVICE", "cpu")


@pytest.fixture(scope="module")
def policy(smollm_path):
    from marco_eval.backends.hf import TransformersPolicy

    return TransformersPolicy(smollm_path, device=DEVICE, dtype="float32", max_batch=8)


def test_exact_lengths_stops_and_raw_logprobs(policy):
    prompt = tuple(policy.encode("List some fruits, one per line:\n"))
    gens = policy.generate([Continue(prompt, 12), Continue(prompt, 40, stop=("\n",))])
    n_tok, stop = gens
    assert len(n_tok.token_ids) == 12 and n_tok.finish == "length"
    assert stop.finish in ("stop", "eos", "length")
    if stop.finish == "stop":
        text = policy.decode(stop.token_ids)
        assert "\n" in policy.decode(stop.token_ids[-1:]) or text.endswith("\n")
        assert "\n" not in policy.decode(stop.token_ids[:-1])
    for g in gens:
        for lp, top in zip(g.logprobs, g.top_logprobs):
            assert len(top) == 5 and top == sorted(top, reverse=True)
            assert lp == pytest.approx(top[0], abs=1e-5)  # greedy picks the raw top-1
        assert 0 < rollout_reward(g.logprobs, g.top_logprobs) <= 1


def test_greedy_is_independent_of_batch_company(policy):
    a = tuple(policy.encode("The capital of France is"))
    b = tuple(policy.encode("Write a long story about a dragon who learns to count to ten, step by step:"))
    alone_a = policy.generate([Continue(a, 6)])[0]
    alone_b = policy.generate([Continue(b, 24)])[0]
    # a is left-padded and finishes first, so b goes on in a compacted batch and cache
    both = policy.generate([Continue(b, 24), Continue(a, 6)])
    assert both[1].token_ids == alone_a.token_ids
    assert both[0].token_ids == alone_b.token_ids
    assert both[0].logprobs == pytest.approx(alone_b.logprobs, abs=1e-3)


def test_sampling_is_seeded_per_request(policy):
    p = tuple(policy.encode("Once upon a time"))
    one = policy.generate([Continue(p, 10, temperature=1.0, seed=5)])[0]
    two = policy.generate([Continue(p, 10, temperature=1.0, seed=6), Continue(p, 10, temperature=1.0, seed=5)])
    assert two[1].token_ids == one.token_ids
    assert two[0].token_ids != one.token_ids


def test_prompt_longer_than_context_is_a_clear_error(policy, mgsm_data):
    with pytest.raises(ValueError, match="does not fit the model's context"):
        policy.generate([Continue(tuple([1] * (policy.max_length + 5)), 4)])


def _lm_eval(tmp_path, model_args: str, extra=()):
    out = tmp_path / "out"
    cmd = [os.path.join(os.path.dirname(sys.executable), "lm_eval"), "--model", "marco_mcts", "--model_args",
           model_args, "--tasks", "mgsm_en", "--limit", "2", "--gen_kwargs", "max_gen_toks=40",
           "--output_path", str(out), "--log_samples", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, out


@pytest.mark.parametrize("action_args", ["action=step,action_max_tokens=16", "action=mini_step,mini_step_tokens=8"])
def test_lm_eval_cli_writes_results_samples_and_sound_trees(tmp_path, action_args, mgsm_data):
    trees = tmp_path / "trees"
    proc, out = _lm_eval(tmp_path, f"pretrained=smollm2-135m,simulations=3,children=2,dtype=float32,"
                                   f"{action_args},tree_dir={trees},device={DEVICE}")
    assert "exact_match" in proc.stdout and "flexible-extract" in proc.stdout
    results = json.load(open(glob.glob(f"{out}/**/results_*.json", recursive=True)[0]))
    assert "exact_match,flexible-extract" in results["results"]["mgsm_en"]
    assert results["config"]["marco_eval_config"]["simulations"] == 3
    assert results["config"]["marco_eval_config"]["device"] == DEVICE
    samples = glob.glob(f"{out}/**/samples_mgsm_en_*.jsonl", recursive=True)
    lines = [json.loads(line) for line in open(samples[0])]
    assert {d["doc_id"] for d in lines} == {0, 1} and all(d["resps"][0][0] for d in lines)
    files = sorted(trees.glob("*.json"))
    assert len(files) == 2
    for f in files:
        doc = json.loads(f.read_text())
        assert check_tree_document(doc) == []
        assert doc["dtype"] == "float32" and doc["verifier_dtype"] is None  # torch's name less "torch."
        assert doc["nodes"][0]["visits"] >= 3 and len(doc["rollouts"]) >= 2


def _greedy_search_texts(path, kv_reuse):
    from marco_eval.backends.hf import TransformersPolicy

    pol = TransformersPolicy(path, device=DEVICE, dtype="float32", max_batch=8, kv_reuse=kv_reuse)
    return (*greedy_searches(pol), pol)


def greedy_searches(pol):
    """Texts and per-node action ids of a small greedy mini-step search on two prompts."""
    from marco_eval.search import Search, SearchConfig, run_searches

    cfg = SearchConfig(simulations=3, children=2, temperature=0.0, action="mini_step", mini_step_tokens=6,
                       rollout_max_tokens=24)
    prompts = ["Tom has 3 apples and buys 4 more. How many apples?", "What is 12 times 3?"]
    chats = [pol.tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                               add_generation_prompt=True) for p in prompts]
    searches = [Search(cfg, pol.encode(c), pol, max_new_tokens=40) for c in chats]
    results = run_searches(searches, pol, width=2)
    return [r.text for r in results], [[n.action_ids for n in s.tree.nodes] for s in searches]


def test_kv_reuse_gives_identical_greedy_answers_with_fewer_forwarded_tokens(smollm_path):
    texts_on, trees_on, on = _greedy_search_texts(smollm_path, kv_reuse=True)
    texts_off, trees_off, off = _greedy_search_texts(smollm_path, kv_reuse=False)
    assert all(len(t) > 10 for t in texts_on)
    assert texts_on == texts_off and trees_on == trees_off
    assert on.forwarded_tokens < off.forwarded_tokens
    assert on.kv.hits > 0 and len(off.kv) == 0


def test_evicted_cache_recomputes_the_same_answer(smollm_path):
    from marco_eval.backends.hf import TransformersPolicy
    from marco_eval.search import Continue

    pol = TransformersPolicy(smollm_path, device=DEVICE, dtype="float32", kv_cache_mb=0)  # evict everything after each call
    p = tuple(pol.encode("Count: one, two,"))
    first = pol.generate([Continue(p, 5)])[0]
    nxt = p + tuple(first.token_ids)
    after_eviction = pol.generate([Continue(nxt, 5)])[0]
    fresh = TransformersPolicy(smollm_path, device=DEVICE, dtype="float32", kv_reuse=False).generate([Continue(nxt, 5)])[0]
    assert len(pol.kv) == 0 and pol.kv.evictions > 0
    assert after_eviction.token_ids == fresh.token_ids


def test_prompts_sharing_whole_chunks_give_bit_identical_outputs_in_bf16(smollm_path):
    """share_prompts is exact on a real bf16 model: prompts whose first chunks another prompt
    prefilled get the same tokens and log-probs, bit for bit, as with nothing cached and as with
    sharing off, and their shared chunks are not forwarded again. (Before chunk-aligned
    prefill, sharing changed 1 in 3 greedy smollm2 outputs.) Each side runs the same batch:
    in bf16 the batch's make-up moves the rounding of its rows, sharing or not."""
    from marco_eval.backends.hf import TransformersPolicy

    shots = "".join(f"Q: What is {a} plus {b}?\nA: {a} plus {b} is {a + b}.\n\n" for a, b in
                    [(3, 4), (12, 7), (25, 30), (8, 9), (41, 2), (6, 60), (14, 15), (70, 11), (5, 5), (9, 33)])
    make = lambda share: TransformersPolicy(smollm_path, device=DEVICE, dtype="bfloat16", max_batch=4, prefill_chunk=32,  # noqa: E731
                                            share_prompts=share)
    shared, unshared = make(True), make(False)
    first, *later = [tuple(shared.encode(shots + q)) for q in
                     ["Q: What is 17 plus 26?\nA:", "Q: What is 7 plus 8?\nA:", "Q: What is 90 plus 4?\nA:"]]
    assert min(len(p) for p in later) > 4 * 32
    reqs = [Continue(p, 16, temperature=0.0) for p in later] + [Continue(later[0], 16, temperature=1.0, seed=5)]

    def outputs(policy):
        return [(g.token_ids, g.logprobs, g.top_logprobs) for g in policy.generate(reqs)]

    shared.generate([Continue(first, 4, temperature=0.0)])
    before, shared_before = shared.forwarded_tokens, shared.shared_prefill_tokens
    after_first = outputs(shared)  # finds the first prompt's chunks cached
    forwarded = shared.forwarded_tokens - before
    taken = shared.shared_prefill_tokens - shared_before
    shared.kv.clear()
    assert after_first == outputs(shared) == outputs(unshared)
    assert forwarded < unshared.forwarded_tokens - 2 * 4 * 32  # both later prompts skipped >= 4 chunks
    assert forwarded + taken == unshared.forwarded_tokens  # each skipped position is counted as taken


def test_bench_reports_every_field_and_counts_forwarded_tokens(smollm_path, mgsm_data):
    from marco_eval.bench import BenchSpec, bench

    spec = BenchSpec(model="smollm2-135m", workloads=("zero_shot",), actions=("mini_step",), problems=1,
                     simulations=1, max_new_tokens=12, mini_step_tokens=4, tree_batch=1, max_batch=2, dtype="float32",
                     device=DEVICE)
    lines = []
    (row,) = bench(spec, log=lines.append)
    assert json.loads(lines[0]) == row
    for key in ("workload", "model", "dtype", "prompt_tokens", "generated_tokens", "forwarded_tokens",
                "forwarded_per_generated", "naive_forwarded_per_generated", "tokens_per_s", "naive_tokens_per_s",
                "sampling_tokens_per_s", "speedup_vs_naive", "throughput_vs_sampling", "peak_rss_mb"):
        assert key in row
    # counts, not timings: with reuse every token after the prompt is forwarded about once
    assert row["forwarded_per_generated"] <= 1.10 < row["naive_forwarded_per_generated"]
    # equal work: sampling charged one prefill per prompt is slower than decode-only sampling
    assert 0 < row["sampling_prefill_once_tokens_per_s"] < row["sampling_tokens_per_s"]
    # one tree, two rows: the second row decodes only while the tree has two requests out
    assert 0 < row["rows_busy_pct"]["engine"] <= 100 and 0 < row["rows_busy_pct"]["naive"] <= 100
    assert row["share_prompts_off"]["same_outputs"] is True


def test_think_end_token_returns_the_response_after_the_think_end(policy):
    from tests.thinking_check import check_think_end_token

    check_think_end_token(policy, dtype="float32")


REPEATS_TASK = """task: toy_repeats
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
repeats: 4
generation_kwargs:
  until: ["\\n\\n"]
  max_gen_toks: 24
filter_list:
  - name: maj@4
    filter:
      - function: regex
        regex_pattern: "(-?[0-9.,]+)"
        group_select: -1
      - function: majority_vote
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""


def test_a_repeats_task_samples_4_searches_and_lm_evals_results_carry_the_budget(tmp_path):
    """lm-eval's self-consistency pattern (repeats: 4, majority_vote) on a task of our own
    two problems: four independent samples per document, the same bytes on a rerun, and
    the results JSON's config holds each task's budget."""
    from tests.cli_runs import BIN, run

    data = tmp_path / "toy.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in [
        {"question": "Ann has 2 pens and buys 3 more. How many pens?", "answer": "5"},
        {"question": "A box holds 4 eggs. How many eggs in 2 boxes?", "answer": "8"}]) + "\n")
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "toy_repeats.yaml").write_text(REPEATS_TASK.format(data=data))

    def samples(out):
        proc = run([str(BIN / "lm_eval"), "--model", "marco_mcts", "--model_args",
                    f"pretrained=smollm2-135m,config=self_consistency,samples=1,dtype=float32,device={DEVICE}",
                    "--tasks", "toy_repeats", "--include_path", str(tmp_path / "tasks"),
                    "--output_path", str(out), "--log_samples"])
        assert proc.returncode == 0, proc.stderr[-3000:]
        (path,) = glob.glob(f"{out}/**/samples_toy_repeats_*.jsonl", recursive=True)
        return [json.loads(line) for line in open(path)], json.load(open(glob.glob(f"{out}/**/results_*.json",
                                                                                    recursive=True)[0]))

    first, results = samples(tmp_path / "one")
    copies = [d["resps"][0] for d in first]  # lm-eval logs a document's repeats as one list
    assert len(first) == 2 and all(len(c) == 4 for c in copies), copies
    assert all(len(set(c)) >= 2 for c in copies), copies  # sampled apart, not one search four times
    budget = results["config"]["marco_eval_budget"]
    toy = budget["tasks"]["toy_repeats"]
    assert toy["problems"] == 2 and toy["requests"] == 8 and toy["policy_calls"] == 8
    assert toy["generated_tokens"] > 0 and toy["generated_tokens_per_problem"] == toy["generated_tokens"] / 2
    assert budget["search_seconds"] > 0
    again, _ = samples(tmp_path / "two")
    assert [d["resps"] for d in again] == [d["resps"] for d in first]
