"""Both backends on the same scripted model, on CPU.

The transformers backend runs tests/scripted_lm.py as a torch "model" (its real decode
loop, KV tree and sampling); the vLLM backend runs the same model through a fake `vllm`
(tests/fake_vllm) that keeps vLLM's request/response semantics. Same log-probabilities in,
so the same Generations and rewards must come out; plus the vLLM request building, one
engine call per search step, data-parallel workers and accelerate rank sharding.
"""

from __future__ import annotations

import math
import json
import os
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import scripted_lm
from marco_eval.backends.vllm import BackendUnavailable, finish_of, to_generation
from marco_eval.errors import ConfigError
from marco_eval.settings import build
from marco_eval.search import Search, SearchConfig, rollout_reward, run_searches, token_confidence
from marco_eval.search.policy import Continue

FAKE_VLLM = Path(__file__).resolve().parent / "fake_vllm"
PROMPTS = ["Q: one?\n", "Q: two plus two?\n", "Q: three?\n"]


def vllm_policy(model="MODEL", **kw):
    from marco_eval.backends.vllm import VLLMPolicy

    return VLLMPolicy(f"scripted_lm:{model}", **kw)


@pytest.fixture
def hf_loads_scripted(monkeypatch):
    """transformers' from_pretrained hands out the scripted model and tokenizer."""
    import transformers

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: scripted_lm.torch_model(scripted_lm.MODEL))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: scripted_lm.CharTokenizer())


@pytest.fixture
def hf_policy(hf_loads_scripted):
    from marco_eval.backends.hf import TransformersPolicy

    return TransformersPolicy("scripted", dtype="float32", max_batch=4)


def ids(text: str) -> tuple[int, ...]:
    return tuple(ord(c) for c in text)


def assert_same_generation(a, b):
    assert (a.token_ids, a.finish, a.stop) == (b.token_ids, b.finish, b.stop)
    assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)
    for x, y in zip(a.top_logprobs, b.top_logprobs, strict=True):
        assert len(x) == len(y) == 5 and x == pytest.approx(y, abs=1e-5)
    reward_a, reward_b = rollout_reward(a.logprobs, a.top_logprobs), rollout_reward(b.logprobs, b.top_logprobs)
    assert reward_a == pytest.approx(reward_b, abs=1e-6)


# ---------------------------------------------------------------- same log-probs, same results
def test_vllm_and_transformers_backends_give_the_same_generations(fake_vllm, hf_policy):
    body = scripted_lm.BODY
    requests = [
        Continue(ids(PROMPTS[0]), 64, ("\n\n",), temperature=0.0),  # ends at a step delimiter
        Continue(ids(PROMPTS[1] + "Step 1 add.\n\n"), 64, ("</Output>",), temperature=0.0),  # answer end
        # a stop string straddling the prefix is not seen (both backends match stop strings in
        # the generated text only), so this one runs to EOS
        Continue(ids(PROMPTS[2] + body[:-4]), 64, ("</Output>",), temperature=0.0),
        Continue(ids(PROMPTS[0] + body), 64, ("\n\n",), temperature=0.0),  # end-of-sequence
        Continue(ids(PROMPTS[1]), 5, ("\n\n",), temperature=0.0),  # the token limit
    ]
    hf, vl = hf_policy.generate(requests), vllm_policy().generate(requests)
    assert [g.finish for g in vl] == ["stop", "stop", "eos", "eos", "length"]
    assert [g.stop for g in vl] == ["\n\n", "</Output>", None, None, None]
    for a, b in zip(hf, vl, strict=True):
        assert_same_generation(a, b)


def test_a_stop_string_of_multi_token_characters_ends_both_backends_alike(fake_vllm, monkeypatch):
    """One token per UTF-8 byte, as byte fallback splits CJK: the stop string "答案：" is 9
    tokens, more than any window of its 3 characters' worth of tokens could hold."""
    import transformers

    from marco_eval.backends.hf import TransformersPolicy

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: scripted_lm.torch_model(scripted_lm.CJK))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: scripted_lm.ByteTokenizer())
    hf, vl = TransformersPolicy("scripted", dtype="float32", max_batch=4), vllm_policy("CJK")
    prompt = tuple(hf.encode("问：三加四？\n"))
    requests = [Continue(prompt, 64, ("答案：",)), Continue(prompt, 64, ("\n\n", "答案：")),
                Continue(prompt, 64, ("四。",))]
    hf_gens, vl_gens = hf.generate(requests), vl.generate(requests)
    assert [(g.finish, g.stop) for g in hf_gens] == [("stop", "答案："), ("stop", "\n\n"), ("stop", "四。")]
    assert [hf.decode(g.token_ids) for g in hf_gens[:2]] == ["第一步：三加四。\n\n答案：", "第一步：三加四。\n\n"]
    for a, b in zip(hf_gens, vl_gens, strict=True):
        assert_same_generation(a, b)


def test_stop_text_adds_whole_characters_and_finds_the_stop_on_its_last_byte():
    from marco_eval.backends.stops import StopText

    tok = scripted_lm.ByteTokenizer()
    stops = StopText(tok.decode, ("答案：", "7"), prefix=tok("问\n")["input_ids"])
    tokens = tok("第一步。答案：7")["input_ids"]
    hits = [stops.add(t) for t in tokens]
    first = len(tok("第一步。答案：")["input_ids"]) - 1  # the last byte of "："
    assert hits[first] == "答案：" and not any(hits[:first]) and hits[first + 1] == "7"
    # a stop string already in the prompt, or straddling it, is not the completion's
    straddle = StopText(tok.decode, ("答案：",), prefix=tok("问\n答案")["input_ids"])
    assert [straddle.add(t) for t in tok("：7")["input_ids"]] == [None] * 4


def test_stop_text_on_a_real_tokenizer_matches_the_whole_text(smollm_path):
    """smollm2's byte-level BPE splits CJK characters over tokens; the stop is found on the
    token that completes it, as a search of the whole decoded text finds it."""
    from transformers import AutoTokenizer

    from marco_eval.backends.stops import StopText

    tok = AutoTokenizer.from_pretrained(smollm_path)
    decode = lambda ids: tok.decode(ids, skip_special_tokens=True)  # noqa: E731
    stop = "答案："
    tokens = tok.encode(" 第一步：三加四等于七。答案：7", add_special_tokens=False)
    assert len(tok.encode(stop, add_special_tokens=False)) > len(stop) + 2  # what the old window missed
    stops = StopText(decode, (stop,), prefix=tok.encode("问题：", add_special_tokens=False))
    hits = [stops.add(t) for t in tokens]
    first = next(i for i in range(len(tokens)) if stop in decode(tokens[: i + 1]))
    assert hits.index(stop) == first and hits.count(stop) == 1


def test_same_search_on_both_backends(fake_vllm, hf_policy):
    """Greedy MCTS over three problems: the continuous-batching transformers backend and the
    lock-step vLLM backend build the same trees with the same rewards."""
    cfg = SearchConfig(simulations=3, children=2, temperature=0.0)

    def searches(policy):
        return [Search(cfg, policy.encode(p), policy, max_new_tokens=200, until=("</Output>",)) for p in PROMPTS]

    hf_results = run_searches(searches(hf_policy), hf_policy, width=3)
    vl_results = run_searches(searches(vllm_policy()), vllm_policy(), width=3)
    for a, b in zip(hf_results, vl_results, strict=True):
        assert a.text == b.text and a.token_ids == b.token_ids and a.chosen_path == b.chosen_path
        assert [r.token_ids for r in a.tree.rollouts] == [r.token_ids for r in b.tree.rollouts]
        assert [r.reward for r in a.tree.rollouts] == pytest.approx([r.reward for r in b.tree.rollouts], abs=1e-6)
        assert "<Output>7" in a.text


def test_batch_cache_spans_the_longest_live_row_not_the_run(hf_policy, monkeypatch):
    """Continuous batching keeps one batch for the whole call; when a long row leaves, the
    left padding it needed goes too, and the outputs equal a one-request-at-a-time run."""
    from marco_eval.backends import hf

    long_prompt = "Q: " + "x" * 150 + "?\n"
    requests = [Continue(ids(long_prompt), 3, temperature=0.0)] + [
        Continue(ids(p), 40, ("</Output>",), temperature=0.0) for p in PROMPTS]
    widths, step = [], hf._Batch.step

    def checked_step(self):
        logits = step(self)
        widths.append(self.mask.shape[1])
        assert self.mask.shape[1] == max(len(r.req.prefix) + len(r.gen.token_ids) for r in self.rows)
        assert all(layer.keys.shape[2] == self.mask.shape[1] for layer in self.cache.layers)
        return logits

    monkeypatch.setattr(hf._Batch, "step", checked_step)
    queue = list(enumerate(requests))
    done = {}
    hf_policy.generate_stream(lambda n: [queue.pop(0) for _ in range(min(n, len(queue)))],
                              lambda key, gen: done.__setitem__(key, gen))
    assert max(widths) > len(long_prompt) > 2 * widths[-1]  # the long row's width went with it
    for i, request in enumerate(requests):
        assert_same_generation(done[i], hf_policy.generate([request])[0])


def test_chosen_token_outside_top5_joins_the_denominator(fake_vllm):
    """vLLM returns top-5 plus the sampled token; the Generation keeps the five largest
    values, so the reward is what the transformers backend computes from the full
    distribution: chosen / (top-5 + chosen) when the chosen token is not in the top 5."""
    import torch

    policy = vllm_policy("FLAT")
    prompt = ids(PROMPTS[0])
    gens = policy.generate([Continue(prompt, 40, (), temperature=1.0, seed=s) for s in (3, 4)])
    outside = 0
    for gen in gens:
        for k, (token, lp, top5) in enumerate(zip(gen.token_ids, gen.logprobs, gen.top_logprobs)):
            full = torch.tensor(scripted_lm.FLAT.next_logprobs(list(prompt) + gen.token_ids[:k]), dtype=torch.float64)
            hf_top5 = full.topk(5).values.tolist()  # what backends/hf.py keeps
            assert top5 == pytest.approx(hf_top5, abs=1e-9) and lp == pytest.approx(float(full[token]), abs=1e-9)
            if token not in full.topk(5).indices.tolist():
                outside += 1
                expected = math.exp(lp) / (sum(math.exp(t) for t in hf_top5) + math.exp(lp))
                assert token_confidence(lp, top5) == pytest.approx(expected)
    assert outside > 10  # the flat model samples outside the top 5 most of the time


def test_output_conversion_and_finish_mapping(fake_vllm):
    from vllm import CompletionOutput
    from vllm.logprobs import Logprob

    def output(token_ids, logprobs, finish_reason, stop_reason):
        return CompletionOutput(index=0, text="", token_ids=token_ids, cumulative_logprob=None, logprobs=logprobs,
                                finish_reason=finish_reason, stop_reason=stop_reason)

    six = {7: Logprob(-3.0, 9), 1: Logprob(-0.5, 1), 2: Logprob(-1.0, 2), 3: Logprob(-1.5, 3), 4: Logprob(-2.0, 4),
           5: Logprob(-2.5, 5)}
    gen = to_generation(output([7], [six], "stop", "\n\n"))
    assert gen.logprobs == [-3.0] and gen.top_logprobs == [[-0.5, -1.0, -1.5, -2.0, -2.5]]
    assert (gen.finish, gen.stop) == ("stop", "\n\n")
    assert token_confidence(-3.0, gen.top_logprobs[0]) < token_confidence(-2.5, gen.top_logprobs[0])
    out = output([], [], "stop", None)
    assert finish_of(out) == ("eos", None)
    out.stop_reason = 151645  # a generation-config EOS id
    assert finish_of(out) == ("eos", None)
    out.finish_reason = "length"
    assert finish_of(out) == ("length", None)
    out.finish_reason = "abort"
    with pytest.raises(RuntimeError, match="abort"):
        finish_of(out)
    with pytest.raises(RuntimeError, match="log-probabilities"):
        to_generation(output([7], None, "length", None))


def test_score_matches_transformers_backend(fake_vllm, hf_policy):
    pairs = [(list(ids("Q: x\n")), list(ids("Step 1"))), (list(ids("Q: x\n")), list(ids("Step 2"))),
             (list(ids("Q: y\nStep 1 add.")), list(ids("\n\n")))]
    policy = vllm_policy()
    vl = policy.score_many(pairs)
    assert len(policy.llm.calls) == 1  # every pair in one engine call
    for (total, greedy), pair in zip(vl, pairs):
        hf_total, hf_greedy = hf_policy.score(*pair)
        assert total == pytest.approx(hf_total, abs=1e-4) and greedy == hf_greedy
    assert [g for _, g in vl] == [True, False, True]


def test_scores_ignore_padding_logits_that_are_not_finite(hf_policy):
    """A short pair batched with a long continuation keeps logits at its padding positions;
    a model may put NaN or inf there (masked vocabulary entries), and no score may see them."""
    short, long = (list(ids("Q")), list(ids("ab"))), (list(ids("Q: x\n")), list(ids("Step 1 add.")))
    alone = [hf_policy.score(*short), hf_policy.score(*long)]
    inner = hf_policy.model

    def poisoned(input_ids, attention_mask, logits_to_keep, **kw):
        out = inner(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=logits_to_keep, **kw)
        padding = attention_mask[:, -logits_to_keep:] == 0  # [rows, keep]
        out.logits[padding] = float("nan")
        out.logits[padding.nonzero()[:1].unbind(-1)] = float("inf")
        return out

    hf_policy.model = poisoned
    together = hf_policy.score_many([short, long])
    assert [greedy for _, greedy in together] == [greedy for _, greedy in alone]
    assert [total for total, _ in together] == pytest.approx([total for total, _ in alone], abs=1e-5)


# ---------------------------------------------------------------- request building
def test_requests_are_token_ids_one_prompt_each_with_full_sampling_params(fake_vllm):
    policy = vllm_policy("FLAT", tensor_parallel_size=1, gpu_memory_utilization=0.5, max_model_len=100)
    args = policy.llm.engine_args
    assert args["enable_prefix_caching"] is True and args["logprobs_mode"] == "raw_logprobs"
    assert args["gpu_memory_utilization"] == 0.5 and args["max_model_len"] == 100
    a, b = ids(PROMPTS[0]), ids(PROMPTS[1])
    requests = [
        Continue(a, 30, ("\n\n", "</Output>"), 0.7, 0.95, seed=11),
        Continue(a, 30, ("\n\n", "</Output>"), 0.7, 0.95, seed=99),  # a sibling: its own prompt and seed
        Continue(b, 500, (), 0.0, 0.95, seed=5),  # greedy: top_p 1, max_tokens cut to the context
    ]
    gens = policy.generate(requests)
    assert len(policy.llm.calls) == 1
    prompts, params = policy.llm.calls[0]
    assert [p["prompt_token_ids"] for p in prompts] == [list(a), list(a), list(b)]
    assert all(type(t) is int for p in prompts for t in p["prompt_token_ids"])
    assert [(sp.n, sp.seed, sp.temperature, sp.top_p) for sp in params] == \
        [(1, 11, 0.7, 0.95), (1, 99, 0.7, 0.95), (1, 5, 0.0, 1.0)]
    assert [sp.max_tokens for sp in params] == [30, 30, 100 - len(b)]
    assert all(sp.logprobs == 5 and sp.include_stop_str_in_output for sp in params)
    assert params[0].stop == ["\n\n", "</Output>"] and params[2].stop == []
    assert gens[0].token_ids != gens[1].token_ids


@pytest.mark.parametrize("backend", ["vllm", "hf"])
def test_a_sample_depends_on_its_own_seed_only(backend, fake_vllm, monkeypatch):
    """Continue.seed's contract on both backends: the same request gives the same sample
    alone and among siblings (same prefix, other seeds) and strangers. The flat model
    makes every seed's sample differ, so a seed taken from a neighbour would show."""
    if backend == "vllm":
        policy = vllm_policy("FLAT")
    else:
        import transformers

        from marco_eval.backends.hf import TransformersPolicy

        monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                            lambda *a, **k: scripted_lm.torch_model(scripted_lm.FLAT))
        monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: scripted_lm.CharTokenizer())
        policy = TransformersPolicy("scripted", dtype="float32", max_batch=4)
    a, b = ids(PROMPTS[0]), ids(PROMPTS[1])
    mine = Continue(a, 25, ("</Output>",), 1.0, 0.95, seed=12)
    alone = policy.generate([mine])[0]
    crowd = [Continue(a, 25, ("</Output>",), 1.0, 0.95, seed=s) for s in (3, 4)] + [mine] + \
        [Continue(b, 25, (), 1.0, 0.95, seed=12)]
    in_crowd = policy.generate(crowd)[2]
    assert in_crowd.token_ids == alone.token_ids
    assert len({tuple(g.token_ids) for g in policy.generate(crowd)[:3]}) == 3


def test_lockstep_makes_one_engine_call_per_search_step_across_trees(fake_vllm):
    policy = vllm_policy()
    cfg = SearchConfig(simulations=3, children=3)
    searches = [Search(cfg, policy.encode(p), policy, max_new_tokens=200, until=("</Output>",)) for p in PROMPTS]
    results = run_searches(searches, policy, width=3, lockstep=True)
    calls = policy.llm.calls
    # every live tree advances one step per round and each round is one LLM.generate
    assert len(calls) == policy.generate_calls == max(r.policy_calls for r in results)
    first_prompts, first_params = calls[0]
    assert [p["prompt_token_ids"] for p in first_prompts] == [list(policy.encode(p)) for p in PROMPTS for _ in range(3)]
    assert len(first_prompts) == 9 and {sp.n for sp in first_params} == {1}  # each root's 3 children: 3 prompts
    assert sum(r.policy_calls for r in results) > len(calls)  # calls were shared between trees


def _tree_record(result):
    return [(r.answer, r.reward, r.tokens) for r in result.tree.rollouts], result.text


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_streaming_gives_the_trees_of_lockstep(fake_vllm, temperature):
    """The engine streams (requests join as trees make them, results return as each
    finishes), yet every tree is the one lock-step rounds build: same rollouts, rewards,
    answers, greedy or sampled (per-request seeds)."""
    policy = vllm_policy()
    cfg = SearchConfig(simulations=3, children=2, temperature=temperature)

    def run(lockstep: bool):
        searches = [Search(cfg, policy.encode(p), policy, max_new_tokens=200, until=("</Output>",)) for p in PROMPTS]
        return [_tree_record(r) for r in run_searches(searches, policy, width=2, lockstep=lockstep)]

    calls_before = len(policy.llm.calls)
    streamed = run(lockstep=False)
    assert len(policy.llm.calls) == calls_before  # no LLM.generate: requests went through the engine one by one
    assert policy.engine_steps > 0 and not policy.llm.llm_engine.has_unfinished_requests()
    assert streamed == run(lockstep=True)


def test_streaming_keeps_the_engine_full_without_rounds(fake_vllm):
    """Requests from later trees enter the engine while an earlier tree's long request still
    runs (no round barrier), and no more than max_num_seqs are ever in the engine."""
    policy = vllm_policy(engine_args={"max_num_seqs": 3})
    assert policy.max_in_flight == 3
    engine = policy.llm.llm_engine
    seen = []
    step = engine.step

    def watched_step():
        seen.append(len(engine.running) + len(engine.waiting))
        return step()

    engine.step = watched_step
    cfg = SearchConfig(strategy="sampling", samples=1, temperature=0.0)
    budgets = [40, 5, 5, 5]  # the first tree's request runs 40 steps, the others 5
    searches = [Search(cfg, policy.encode(f"Q{i}?\n"), policy, max_new_tokens=n) for i, n in enumerate(budgets)]
    finished = []
    run_searches(searches, policy, width=4, on_done=lambda i, r: finished.append(i))
    assert max(seen) == 3 and len(engine.added) == 4
    # the fourth tree's request entered when a short one left, and finished long before the first
    assert finished == [1, 2, 3, 0] and engine.steps == 40


def test_a_failed_stream_leaves_no_request_in_the_engine(fake_vllm):
    policy = vllm_policy()
    req = Continue(tuple(ids("Q: x\n")), 40, (), 1.0, 0.95, seed=1)
    pending = [("a", req), ("b", req)]

    def push(key, generation):
        raise KeyError(key)  # a bug in the caller, mid-stream

    with pytest.raises(KeyError):
        policy.generate_stream(lambda n: [pending.pop()] if pending else [], push)
    assert not policy.llm.llm_engine.has_unfinished_requests()


@pytest.mark.parametrize("gpu,advice", [(True, "pip install 'marco-eval[vllm]'"),
                                         (False, "`make vllm-env` in the marco-eval checkout, then use .venv-vllm/bin/lm_eval")])
def test_missing_vllm_is_a_one_line_error_with_the_advice_for_this_machine(monkeypatch, gpu, advice):
    import torch

    from marco_eval.errors import UserError

    monkeypatch.setitem(sys.modules, "vllm", None)  # as if not installed
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    with pytest.raises(BackendUnavailable) as err:
        vllm_policy()
    assert isinstance(err.value, UserError) and advice in str(err.value) and "\n" not in str(err.value)
    assert ("make vllm-env" in str(err.value)) is not gpu


def test_vllm_options_are_validated_before_loading():
    _, o = build(None, backend="vllm", tensor_parallel_size="2", data_parallel_size="4", gpu_memory_utilization="0.8")
    assert (o.tensor_parallel_size, o.data_parallel_size, o.gpu_memory_utilization) == (2, 4, 0.8)
    for bad, msg in [(dict(backend="tpu"), "use hf"), (dict(backend="hf", tensor_parallel_size=2), "accelerate launch"),
                     (dict(data_parallel_size=2), "backend=vllm"),
                     (dict(backend="vllm", data_parallel_size=0), "positive"),
                     (dict(backend="vllm", gpu_memory_utilization=1.5), r"\(0, 1\]")]:
        with pytest.raises(ConfigError, match=msg):
            build(None, **bad)


def test_lm_with_backend_vllm_runs_the_search(fake_vllm):
    from marco_eval.lm import MarcoMCTSLM

    lm = MarcoMCTSLM(pretrained="scripted_lm:MODEL", backend="vllm", simulations=2, chat_template="off")
    reqs = [_Request(p, {"until": ["</Output>"], "max_gen_toks": 200}) for p in PROMPTS]
    texts = lm.generate_until(reqs, disable_tqdm=True)
    assert all(t.endswith("<Output>7") for t in texts)
    assert lm.loglikelihood([_Request("Q: x\n", "Step 1")], disable_tqdm=True)[0][1] is True


class _Request:
    def __init__(self, *args):
        self.args = args


# ---------------------------------------------------------------- data parallel: vLLM replicas on Ray
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def ray_cluster():
    """A local two-CPU Ray whose workers import the fake vLLM and the scripted model."""
    ray = pytest.importorskip("ray")
    path = os.pathsep.join([str(FAKE_VLLM), str(TESTS), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


@pytest.fixture
def engine(ray_cluster, fake_vllm, monkeypatch):
    """An Engine with backend=vllm, data_parallel_size=2 on the CPU build: its policy is the
    replica pool, one core each."""
    from marco_eval.engine import Engine

    monkeypatch.setenv("FAKE_VLLM_CPU", "1")
    monkeypatch.setattr("marco_eval.backends.codec.load_tokenizer", lambda *a: scripted_lm.CharTokenizer())
    eng = Engine(*build(None, backend="vllm", pretrained="scripted_lm:FLAT", data_parallel_size=2,
                        simulations=2, children=2, temperature=1.0, chat_template="off"))
    yield eng
    eng.policy.close()


def _searches(engine, n=5):
    return [engine.make_search(f"Q{i}: {'x' * i}?\n", until=("</Output>",), max_gen_toks=60) for i in range(n)]


def _alone(n=5):
    """The same searches on one engine in this process."""
    single = vllm_policy("FLAT")
    cfg = SearchConfig(simulations=2, children=2, temperature=1.0)
    searches = [Search(cfg, single.encode(f"Q{i}: {'x' * i}?\n"), single, max_new_tokens=60, until=("</Output>",))
                for i in range(n)]
    return single, run_searches(searches, single, width=2)


def test_replicas_split_whole_trees_and_match_one_engine(engine):
    from marco_eval.search.policy import Policy

    pool = engine.policy
    assert isinstance(pool, Policy)  # Engine.policy is a policy, whatever the backend
    searches = _searches(engine)
    done = []
    results = engine.run(searches, on_done=lambda i, r: done.append(i), width=2)
    assert sorted(done) == list(range(5))
    single, alone = _alone()
    for search, got, want in zip(searches, results, alone, strict=True):
        assert got.text == want.text and [r.reward for r in got.tree.rollouts] == [r.reward for r in want.tree.rollouts]
        assert search.tree is got.tree  # the parent's Search holds the tree for export
    pairs = [(list(ids("Q: x\n")), list(ids(w))) for w in ("Step 1", "Step 2", "St", "x")]
    assert pool.score_many(pairs) == single.score_many(pairs)
    requests = [Continue(ids(f"Q{i}: x\n"), 20, (), 1.0, 0.95, seed=i) for i in range(3)]
    assert [g.token_ids for g in pool.generate(requests)] == [g.token_ids for g in single.generate(requests)]


def test_replicas_fingerprint_the_dtype_their_engines_loaded(engine):
    """dtype=auto is what the engines resolve it to (the fake loads float32), as with one engine."""
    from marco_eval import settings, store

    assert engine.options.dtype == "auto" and engine.policy.dtype == vllm_policy("FLAT").dtype == "float32"
    identity = store.model_identity("scripted_lm:FLAT", None, "float32", None)
    assert engine.fingerprint() == store.fingerprint(identity, settings.answer_settings(engine.search_config,
                                                                                        engine.options))


def test_replicas_are_persistent_one_engine_each_on_their_own_core(engine):
    pool = engine.policy
    before = pool.info()
    assert len({w["pid"] for w in before}) == 2
    assert [w["omp_bind"] for w in before] == ["0", "1"]  # vLLM's CPU threads bound apart
    engine.run(_searches(engine, 2), width=1)
    after = pool.info()
    assert [w["pid"] for w in after] == [w["pid"] for w in before]
    assert all(a["engine_steps"] > b["engine_steps"] for a, b in zip(after, before))  # each streamed its share


def test_a_killed_replicas_problems_go_to_the_others(engine, ray_cluster):
    pool = engine.policy
    ray_cluster.kill(pool.replicas[1])
    results = engine.run(_searches(engine), width=2)
    assert [r.text for r in results] == [r.text for r in _alone()[1]]
    assert pool.alive == [0]


def test_cpu_replicas_need_a_core_each():
    from marco_eval.backends.replicas import omp_binds

    assert omp_binds(2, 1, 2) == ["0", "1"] and omp_binds(2, 2, 4) == ["0-1", "2-3"]
    with pytest.raises(ConfigError, match="data_parallel_size=3 on vLLM's CPU build needs 3 CPU cores") as err:
        omp_binds(3, 1, 2)
    assert "\n" not in str(err.value)


def test_a_replica_that_cannot_start_is_a_one_line_error(ray_cluster, fake_vllm):
    from marco_eval.backends.replicas import RayReplicas

    _, options = build(None, backend="vllm", pretrained="scripted_lm:NO_SUCH_MODEL", data_parallel_size=2)
    with pytest.raises(RuntimeError, match="a vLLM replica failed while starting: ") as err:
        RayReplicas(options, scripted_lm.CharTokenizer(), on_cpu=True)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- accelerate ranks (transformers backend)
class FakeState:
    """accelerate.PartialState of process `rank` in a launch of `world` processes."""

    def __init__(self, rank, world):
        self.process_index, self.num_processes, self.device = rank, world, "cpu"
        self.barriers = 0

    def wait_for_everyone(self):
        self.barriers += 1


def test_ranks_shard_requests_through_lm_eval(hf_loads_scripted, monkeypatch, tmp_path):
    """Under `accelerate launch` each rank's MarcoMCTSLM reports its rank, and lm-eval's own
    evaluator then hands it only its share of the documents (docs rank, rank+world, ...)."""
    import torch
    from lm_eval.evaluator import evaluate
    from lm_eval.tasks import TaskManager

    from marco_eval import lm as lm_module
    from marco_eval.ranks import Ranks

    data = tmp_path / "docs.jsonl"
    data.write_text("".join(f'{{"q": "Q{i}: {i}+{i}?", "a": "{2 * i}"}}\n' for i in range(5)))
    (tmp_path / "tiny.yaml").write_text(
        "task: tiny_shard\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: " + str(data) + "\n"
        "test_split: test\noutput_type: generate_until\ndoc_to_text: \"{{q}}\\n\"\ndoc_to_target: a\n"
        "generation_kwargs:\n  until: ['</Output>']\n  max_gen_toks: 60\n"
        "metric_list:\n  - metric: exact_match\n")
    seen = {}
    for rank in (0, 1):
        state = FakeState(rank, 2)
        monkeypatch.setattr(Ranks, "detect", classmethod(lambda cls, s=state: cls(s)))
        monkeypatch.setattr(Ranks, "all_gather", lambda self, t: torch.stack([t, t]))
        monkeypatch.setattr(Ranks, "gather_object", lambda self, obj, dst=0: [obj, obj])
        lm = lm_module.MarcoMCTSLM(pretrained="scripted", simulations=1, chat_template="off", dtype="float32")
        assert (lm.rank, lm.world_size) == (rank, 2)
        prompts = []
        original = lm.generate_until
        monkeypatch.setattr(lm, "generate_until", lambda reqs, disable_tqdm=False, o=original, p=prompts:
                            (p.extend(r.args[0] for r in reqs), o(reqs, True))[1])
        tasks = TaskManager(include_path=str(tmp_path), include_defaults=False).load(["tiny_shard"])
        evaluate(lm, tasks, verbosity="ERROR")
        seen[rank] = prompts
        assert state.barriers >= 1
    assert seen[0] == ["Q0: 0+0?\n", "Q2: 2+2?\n", "Q4: 4+4?\n"]
    assert seen[1] == ["Q1: 1+1?\n", "Q3: 3+3?\n"]


# ---------------------------------------------------------------- marco-eval bench --backend vllm
def test_bench_backend_vllm_reports_engine_calls_and_sampling(fake_vllm, monkeypatch):
    from marco_eval import bench, bench_vllm

    monkeypatch.setattr(bench_vllm, "mgsm_prompts", lambda n, few_shot: PROMPTS[:n])
    engine_args, build = [], fake_vllm.LLM.__init__
    monkeypatch.setattr(fake_vllm.LLM, "__init__", lambda llm, model, **kw: (engine_args.append(kw), build(llm, model, **kw))[1])
    spec = bench.BenchSpec(model="scripted_lm:MODEL", backend="vllm", workloads=("zero_shot",), actions=("step",),
                           problems=2, simulations=2, children=2, max_new_tokens=40, tree_batch=2, repeats=3,
                           settings={"vllm_args.max_num_seqs": "8"})
    lines = []
    rows = bench.bench(spec, log=lines.append)
    assert len(rows) == len(lines) == 1
    row = rows[0]
    # --set reached the engine, and the row says so
    assert row["settings"] == {"vllm_args.max_num_seqs": "8"} and engine_args[-1]["max_num_seqs"] == 8
    # three interleaved repeats; each figure the median of the repeats' own
    assert row["repeats"] == 3 and all(len(v) == 3 for v in row["per_repeat"].values())
    for key, values in row["per_repeat"].items():
        assert abs(row[key] - sorted(values)[1]) < 0.01, key
    # every run starts from an empty prefix cache: the lock-step run (the streamed run's very
    # trees) prefills as much as streaming did, not nothing; sampling prefills its prompts once
    prefill = row["prefill_tokens"]
    assert prefill["lockstep"] == prefill["streaming"] >= row["prompt_tokens"]
    assert 0 < prefill["sampling"] <= row["prompt_tokens"]
    assert row["backend"] == "vllm" and row["generated_tokens"] > 0 and row["prompt_tokens"] > 0
    assert row["lockstep_engine_calls"] == row["search_steps"] > 1  # lock-step: both trees in every engine call
    assert row["engine_steps"] > row["search_steps"] and row["mean_in_engine"] > 1  # streaming: many requests at once
    assert row["same_outputs_as_lockstep"] is True and row["lockstep_generated_tokens"] == row["generated_tokens"]
    for key in ("tokens_per_s", "lockstep_tokens_per_s", "sampling_tokens_per_s", "throughput_vs_sampling",
                "lockstep_throughput_vs_sampling", "streaming_vs_lockstep"):
        assert row[key] > 0, key


def test_bench_repeats_report_medians_of_in_repeat_ratios(monkeypatch):
    """hf: repeats 2..N rerun the engine and sampling back to back; each ratio is taken within
    its repeat, and the row's figure is the median of those (not a ratio of medians)."""
    from marco_eval import bench

    engine_seconds, sampling_seconds = iter([2.0, 4.0]), iter([1.0, 4.0])
    monkeypatch.setattr(bench, "run_search", lambda *a, **k: {"generated": 100, "seconds": next(engine_seconds),
                                                              "cpu_seconds": 1.0})
    monkeypatch.setattr(bench, "run_sampling", lambda *a, **k: {"generated": 100, "seconds": next(sampling_seconds),
                                                                "cpu_seconds": 1.0, "prefill_once_seconds": 0.0})
    first = ({"generated": 100, "seconds": 1.0, "cpu_seconds": 1.0},
             {"generated": 100, "seconds": 1.0, "cpu_seconds": 1.0, "prefill_once_seconds": 0.0})
    spec = bench.BenchSpec(repeats=3)
    got = bench.repeated_engine_vs_sampling(SimpleNamespace(policy=None), [], [], spec, "step", first)
    assert got["repeats"] == 3
    assert got["per_repeat"]["throughput_vs_sampling"] == [1.0, 0.5, 1.0]
    assert got["throughput_vs_sampling"] == 1.0  # median of [1, 0.5, 1]; the ratio of medians, 50 / 100, is 0.5
    assert got["per_repeat"]["tokens_per_s"] == [100.0, 50.0, 25.0] and got["tokens_per_s"] == 50.0
    assert got["sampling_tokens_per_s"] == 100.0  # median of [100, 100, 25]


def test_bench_backend_vllm_without_vllm_fails_in_one_line(monkeypatch, capsys):
    import torch

    from marco_eval.cli import main

    monkeypatch.setitem(sys.modules, "vllm", None)
    assert main(["bench", "--backend", "vllm", "--quick"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "backend=vllm needs the vllm package" in err
    assert ("pip install 'marco-eval[vllm]'" if torch.cuda.is_available() else "make vllm-env") in err


def test_vllm_is_an_optional_extra_never_imported_by_default():
    import subprocess
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    assert not any(dep.lower().startswith("vllm") for dep in project["dependencies"])
    assert any(dep.startswith("vllm") for dep in project["optional-dependencies"]["vllm"])
    code = ("import sys, marco_eval.lm, marco_eval.bench, marco_eval.backends.replicas, marco_eval.backends.vllm; "
            "print('vllm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_synth_with_data_parallel_replicas_runs_through_them(tmp_path, capsys, monkeypatch, ray_cluster):
    """`marco-eval synth --set backend=vllm --set data_parallel_size=2`: the engine hands whole
    trees to the two fake-vLLM replicas (before the engine, synth drove the pool as a Policy
    and failed), and rows equal those of one process."""
    from marco_eval.cli import main
    from marco_eval.jsonl import read_json_rows

    from marco_eval.backends import codec

    monkeypatch.setattr(codec, "load_tokenizer", lambda *a: scripted_lm.CharTokenizer())  # the parent's half
    monkeypatch.setenv("FAKE_VLLM_CPU", "1")  # the CPU build: replicas on the cluster's two cores
    mp = pytest.MonkeyPatch()
    mp.syspath_prepend(str(FAKE_VLLM))
    try:
        problem_file = tmp_path / "problems.jsonl"
        problem_file.write_text("".join(json.dumps({"question": f"What is {a} + {7 - a}?", "answer": "7"}) + "\n"
                                        for a in range(1, 5)))
        runs = {}
        for dp in (1, 2):
            out = tmp_path / f"dp{dp}.jsonl"
            rc = main(["synth", "--out", str(out), "--problem-file", str(problem_file), "--model", "scripted_lm:MGSM",
                       "--config", "mcts_step", "--set", "backend=vllm", "--set", f"data_parallel_size={dp}",
                       "--set", "chat_template=off", "--set", "simulations=2", "--max-gen-toks", "80"])
            assert rc == 0, capsys.readouterr().err
            runs[dp] = sorted(read_json_rows(out), key=lambda r: r["problem_id"])
        assert len(runs[2]) == 4 and all(r["answer"] == "7" and "<Output>7</Output>" in r["response"] for r in runs[2])
        strip = [{k: v for k, v in r.items() if k != "overrides"} for r in runs[1]]
        assert strip == [{k: v for k, v in r.items() if k != "overrides"} for r in runs[2]]
    finally:
        sys.modules.pop("vllm", None)
        mp.undo()


def test_vllm_engine_arguments_pass_through_and_are_checked_before_loading():
    _, o = build(None, backend="vllm", **{"vllm_args.enforce_eager": "true", "vllm_args.max_num_seqs": "8",
                                          "vllm_args.swap_space": "0.5", "vllm_args.kv_cache_dtype": "auto"})
    assert o.vllm_args == {"enforce_eager": True, "max_num_seqs": 8, "swap_space": 0.5, "kv_cache_dtype": "auto"}
    for bad, msg in [({"vllm_args.enforce_eager": "true"}, "applies to backend=vllm"),
                     ({"backend": "vllm", "vllm_args.dtype": "half"}, "vllm_args.dtype: set it with its own option, dtype="),
                     ({"backend": "vllm", "vllm_args.enable_prefix_caching": "false"}, "marco-eval sets it itself"),
                     ({"backend": "vllm", "vllm_args.": "x"}, "unknown key 'vllm_args.'")]:
        with pytest.raises(ConfigError, match=re.escape(msg)):
            build(None, **bad)


def test_engine_arguments_on_the_gpu_and_the_cpu_build(fake_vllm, monkeypatch):
    gpu = vllm_policy(gpu_memory_utilization=0.5, engine_args={"enforce_eager": True, "max_num_seqs": 4})
    assert gpu.llm.engine_args["gpu_memory_utilization"] == 0.5 and "kv_cache_memory_bytes" not in gpu.llm.engine_args
    assert gpu.llm.engine_args["enforce_eager"] is True and gpu.llm.engine_args["max_num_seqs"] == 4
    monkeypatch.setenv("FAKE_VLLM_CPU", "1")  # vllm-cpu: a RAM share would fail on a loaded machine
    cpu = vllm_policy(kv_cache_mb=64)
    assert cpu.llm.engine_args["kv_cache_memory_bytes"] == 64 * 2**20 and "gpu_memory_utilization" not in cpu.llm.engine_args
    with pytest.raises(BackendUnavailable, match="vllm_args.enforce_eagr: vLLM .* has no engine argument 'enforce_eagr'; "
                                                 "did you mean 'enforce_eager'"):
        vllm_policy(engine_args={"enforce_eagr": True})


# ---------------------------------------------------------------- vLLM mistakes: one line, before any engine loads
@pytest.mark.parametrize("args,msg", [
    ({"vllm_args.max_num_seqs": "abc"}, "vllm_args.max_num_seqs='abc': expected int (vllm.EngineArgs.max_num_seqs is "
                                        "int or None); fix the value"),
    ({"vllm_args.enforce_eager": "maybe"}, "vllm_args.enforce_eager='maybe': expected bool"),
    ({"vllm_args.swap_space": "lots"}, "vllm_args.swap_space='lots': expected float"),
    ({"vllm_args.enforce_eagr": "true"}, "has no engine argument 'enforce_eagr'; did you mean 'enforce_eager'?"),
    ({"tensor_parallel_size": "2"}, "tensor_parallel_size=2 needs 2 GPUs; this machine has 0"),
    ({"tensor_parallel_size": "2", "data_parallel_size": "2"},
     "tensor_parallel_size=2 x data_parallel_size=2 needs 4 GPUs; this machine has 0"),
])
def test_vllm_mistakes_fail_in_the_constructor_in_one_line(fake_vllm, monkeypatch, args, msg):
    from marco_eval.engine import Engine
    from marco_eval.errors import UserError
    from marco_eval.lm import MarcoMCTSLM

    monkeypatch.setattr(Engine, "_build_policy", lambda e: pytest.fail("an engine was built"))
    with pytest.raises(UserError) as err:
        MarcoMCTSLM(pretrained="scripted_lm:MODEL", backend="vllm", **args)
    assert msg in str(err.value) and "\n" not in str(err.value)


def test_vllm_engine_argument_values_take_the_fields_types(fake_vllm):
    from marco_eval.backends.vllm import check_engine_args

    got = check_engine_args(fake_vllm, {"max_num_seqs": "8", "enforce_eager": "true", "swap_space": 1,
                                        "seed": None, "kv_cache_memory_bytes": 2048.0})
    assert got == {"max_num_seqs": 8, "enforce_eager": True, "swap_space": 1.0, "seed": None,
                   "kv_cache_memory_bytes": 2048}
    assert type(got["swap_space"]) is float


def test_coerce_literal_union_and_unknown_types():
    from typing import Literal

    from marco_eval.backends.coerce import coerce
    from marco_eval.structured import type_name

    mode = Literal["auto", "slow"] | str
    assert coerce("k", "slow", Literal["auto", "slow"]) == "slow"
    assert coerce("k", "16", Literal[8, 16]) == 16 and coerce("k", "x", mode) == "x"
    assert coerce("k", 3, int | str) == 3 and coerce("k", "3", int | str) == "3"  # the member the value is first
    assert coerce("k", 3.0, int | str) == 3
    assert coerce("k", ["1", 2], list[int]) == [1, 2]
    assert coerce("k", {"a": 1}, set, lenient=True) == {"a": 1}  # a type it does not know: vLLM judges
    with pytest.raises(ConfigError, match="k='fast': expected one of 'auto', 'slow'"):
        coerce("k", "fast", Literal["auto", "slow"])
    with pytest.raises(ConfigError, match="expected set"):
        coerce("k", "x", set)
    assert type_name(int | None) == "int or None"


def test_parallel_sizes_on_the_cpu_build_and_on_gpus(fake_vllm, monkeypatch):
    import torch

    from marco_eval.backends.vllm import check_parallel

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    check_parallel(fake_vllm, tensor_parallel_size=2, data_parallel_size=2)  # 4 of 4
    with pytest.raises(BackendUnavailable, match=r"tensor_parallel_size=2, vllm_args.pipeline_parallel_size=2 x "
                                                 r"data_parallel_size=2 needs 8 GPUs; this machine has 4"):
        check_parallel(fake_vllm, tensor_parallel_size=2, pipeline_parallel_size=2, data_parallel_size=2)
    monkeypatch.setenv("FAKE_VLLM_CPU", "1")
    check_parallel(fake_vllm, tensor_parallel_size=1, data_parallel_size=8)  # engines on Ray: the CPU build's scale-out
    with pytest.raises(BackendUnavailable, match="tensor_parallel_size=2: vLLM's CPU build .* data_parallel_size=N"):
        check_parallel(fake_vllm, tensor_parallel_size=2)


@pytest.mark.parametrize("argv,msg", [
    (["bench", "--quick", "--device", "cuda:99"], "device=cuda:99: this machine has"),
    (["synth", "--out", "OUT", "--model", "smollm2-135m", "--set", "device=cuda:99"], "device=cuda:99: this machine has"),
    (["synth", "--out", "OUT", "--model", "smollm2-135m", "--set", "backend=vllm"], "backend=vllm needs the vllm package"),
    (["bench", "--quick", "--backend", "vllm"], "backend=vllm needs the vllm package"),
    (["bench", "--quick", "--set", "simulations=3"], "--set simulations=...: the bench sets simulations itself"),
    (["bench", "--quick", "--set", "action=step"], "--set action=...: the bench sets action itself"),
    (["bench", "--quick", "--set", "kv_cache_mb"], "--set 'kv_cache_mb': write key=value"),
    (["bench", "--quick", "--set", "kv_cach_mb=64"], "did you mean 'kv_cache_mb'"),
])
def test_synth_and_bench_print_mistakes_in_one_line(argv, msg, monkeypatch, capsys, tmp_path):
    from marco_eval.cli import main
    from marco_eval.engine import Engine

    monkeypatch.setitem(sys.modules, "vllm", None)  # as if not installed (the main venv has none anyway)
    monkeypatch.setattr(Engine, "_build_policy", lambda e: pytest.fail("a model was loaded"))
    assert main([str(tmp_path / "o.jsonl") if a == "OUT" else a for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("marco-eval: error: ") and msg in err and "\n" not in err, err


def test_cli_keeps_the_traceback_of_anything_but_bad_input(monkeypatch, capsys):
    """`marco-eval bench|synth|...`: only a UserError is bad input and prints one line; an
    error raised inside a library, or a plain error of our own (a bug), propagates with its
    traceback."""
    import json as json_module

    from marco_eval import bench
    from marco_eval.cli import main
    from marco_eval.errors import InputError

    monkeypatch.setattr(bench, "main", lambda args: json_module.loads("{not json"))  # raised inside the json module
    with pytest.raises(ValueError):
        main(["bench", "--quick"])

    def our_bug(args):
        raise RuntimeError("an invariant of ours broke")

    monkeypatch.setattr(bench, "main", our_bug)
    with pytest.raises(RuntimeError, match="invariant"):
        main(["bench", "--quick"])

    def bad_input(args):
        raise InputError("--problems 0: ask for at least one problem")

    monkeypatch.setattr(bench, "main", bad_input)
    assert main(["bench", "--quick"]) == 2
    assert capsys.readouterr().err == "marco-eval: error: --problems 0: ask for at least one problem\n"