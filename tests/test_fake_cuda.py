"""The transformers backend on CUDA, without a GPU: a small real transformers model runs the
backend's own code paths with tensors that say they live on cuda:0 (tests/fake_cuda.py), so
any op that mixes devices, or a host generator drawing for device tensors, fails here as it
would on a GPU. Values are the CPU's, so every output must equal the same run on the CPU.

Covered: greedy and sampled decoding (temperature, top-p, the whole-vocabulary fallback),
prefill in chunks, prompts sharing whole chunks (KVTree.share splits an entry), siblings
joining a running batch, continuations from cached entries (KVTree.materialize), rows
leaving and the KV tree evicting, score/score_many, whole step and mini-step MCTS searches
through the streaming driver; and that the host copies of a decode step do not grow with
its rows (device.py: once per step, never per row). Not covered: PackedLinear (CPU only by
design), real CUDA kernels and memory (scripts/gpu_check.sh, on a GPU).
"""

from __future__ import annotations

import pytest
import torch

import scripted_lm
from fake_cuda import DeviceMismatch, FakeCuda
from marco_eval.search import Search, SearchConfig, run_searches
from marco_eval.search.policy import Continue

VOCAB = 2048  # > NUCLEUS_CANDIDATES: a flat row's top 1024 hold about half the mass (the fallback)
SHOTS = "Worked example: two apples and three apples make five apples. "  # 63 tokens every prompt starts with


def ids(text: str) -> tuple[int, ...]:
    return tuple(ord(c) for c in text)


def tiny_model():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         eos_token_id=scripted_lm.EOS, attn_implementation="eager")
    return Qwen2ForCausalLM(config).eval()


def make_policy(monkeypatch, device: str, **kw):
    import transformers

    from marco_eval.backends.hf import TransformersPolicy

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: tiny_model())
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: scripted_lm.CharTokenizer())
    return TransformersPolicy("tiny", dtype="float32", device=device, max_batch=4, prefill_chunk=16, **kw)


def record(gens) -> list:
    return [(g.token_ids, g.finish, g.stop, [round(x, 5) for x in g.logprobs],
             [[round(x, 5) for x in t] for t in g.top_logprobs]) for g in gens]


def run_everything(policy) -> dict:
    prompts = [SHOTS + "Q: one?\n", SHOTS + "Q: two plus two?\n", SHOTS + "Q: " + "long " * 12 + "?\n"]
    out = {}
    # greedy, plain temperature, top-p within the candidates, top-p falling back to the vocabulary;
    # 6 requests through 4 rows: two join the running batch as rows finish
    reqs = [Continue(ids(prompts[0]), 12, temperature=0.0), Continue(ids(prompts[1]), 20, temperature=1.0, seed=1),
            Continue(ids(prompts[2]), 8, temperature=0.7, top_p=0.3, seed=2),
            Continue(ids(prompts[0]), 15, temperature=1.0, top_p=0.95, seed=3),
            Continue(ids(prompts[1]), 6, ("a",), temperature=1.3, top_p=0.9, seed=4),
            Continue(ids(prompts[2]), 10, temperature=0.0)]
    first = policy.generate(reqs)
    out["mixed"] = record(first)
    # siblings on one prefix, then continuations from their cached ends and from inside one
    siblings = policy.generate([Continue(ids(prompts[1]), 9, temperature=1.0, seed=10 + s) for s in range(3)])
    out["siblings"] = record(siblings)
    follow = [Continue(ids(prompts[1]) + tuple(g.token_ids), 7, temperature=0.7, top_p=0.95, seed=20 + i)
              for i, g in enumerate(siblings)] + [Continue(ids(prompts[1]) + tuple(siblings[0].token_ids[:4]), 5)]
    out["continued"] = record(policy.generate(follow))
    out["scores"] = [(round(lp, 4), greedy) for lp, greedy in policy.score_many(
        [(list(ids(prompts[0])), list(first[0].token_ids)), (list(ids("Q: x")), [5, 6, 7]),
         (list(ids(prompts[2])), list(first[2].token_ids[:3]))])]
    for action in ("step", "mini_step"):
        config = SearchConfig(simulations=3, children=2, action=action, mini_step_tokens=4, max_depth=3,
                              action_max_tokens=6, rollout_max_tokens=10, step_delimiters=["e"], seed=7)
        searches = [Search(config, list(ids(p)), policy, max_new_tokens=24) for p in prompts[:2]]
        out[action] = [(r.token_ids, [round(x.reward, 5) for x in r.rollouts])
                       for r in run_searches(searches, policy, width=2)]
    return out


@pytest.mark.parametrize("kv_cache_mb", [2048, 0])  # 0: every entry is evicted as soon as it may be
def test_the_backend_on_fake_cuda_gives_the_cpu_outputs(monkeypatch, kv_cache_mb):
    on_cpu = run_everything(make_policy(monkeypatch, "cpu", kv_cache_mb=kv_cache_mb))
    with FakeCuda():
        policy = make_policy(monkeypatch, "cuda", kv_cache_mb=kv_cache_mb)
        assert policy.model.lm_head.weight.device.type != "cpu"  # the weights really went to the fake device
        on_cuda = run_everything(policy)
        assert policy.kv.evictions > 0 if kv_cache_mb == 0 else policy.kv.evictions == 0
    assert on_cuda == on_cpu


def test_a_shared_prompt_chunk_is_split_on_the_device(monkeypatch):
    with FakeCuda():
        policy = make_policy(monkeypatch, "cuda")
        a = policy.generate([Continue(ids(SHOTS + "Q: one?\n"), 4, temperature=1.0, seed=1)])
        b = policy.generate([Continue(ids(SHOTS + "Q: two?\n"), 4, temperature=1.0, seed=1)])
        assert policy.shared_prefill_tokens >= 48  # three whole chunks of 16 came from the first prompt's prefill
    assert a[0].token_ids and b[0].token_ids


def host_traffic_per_step(monkeypatch, rows: int) -> tuple[float, float]:
    """(copies to the host, waits for the device) per decode step of `rows` rows of every kind."""
    with FakeCuda() as fake:
        policy = make_policy(monkeypatch, "cuda")
        prompt = ids(SHOTS + "Q: one?\n")
        policy.generate([Continue(prompt, 1)])  # the prompt's prefill, out of the count
        copies, waits, steps = fake.host_copies, fake.host_waits, policy.decode_steps
        kinds = [dict(temperature=0.0), dict(temperature=1.0), dict(temperature=0.7, top_p=0.3)]
        policy.generate([Continue(prompt, 10, seed=r, **kinds[r % 3]) for r in range(rows)])
        steps = policy.decode_steps - steps
        return (fake.host_copies - copies) / steps, (fake.host_waits - waits) / steps


def test_a_decode_step_copies_to_the_host_as_often_whatever_its_rows(monkeypatch):
    three, twelve = host_traffic_per_step(monkeypatch, 3), host_traffic_per_step(monkeypatch, 12)
    # 4 rows at a time, every kind of row in each step: nothing per row
    assert twelve[0] <= three[0] + 0.5
    assert three[1] == twelve[1] == 1.0  # the host waits for the device once a step


def test_fake_cuda_rejects_what_a_gpu_rejects():
    with FakeCuda():
        logits = torch.randn(2, 8, device="cuda")
        with pytest.raises(DeviceMismatch):
            logits / torch.ones(2, 1)  # a CPU tensor of 2 dimensions
        with pytest.raises(DeviceMismatch):
            torch.multinomial(logits.softmax(-1), 1, generator=torch.Generator())  # a host generator
        assert (logits / torch.tensor(2.0)).device == logits.device  # a 0-dim CPU tensor may mix


def test_a_device_this_machine_lacks_is_one_line(monkeypatch):
    from marco_eval.backends.device import resolve_device
    from marco_eval.errors import InputError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="no CUDA device"):
        resolve_device("cuda")
    assert resolve_device("auto") == "cpu"
    with pytest.raises(InputError, match="use auto, cpu, cuda or cuda:N"):
        resolve_device("gpu0")
    with FakeCuda():
        with pytest.raises(InputError, match="1 CUDA device"):
            resolve_device("cuda:1")
        assert resolve_device("cuda:0") == "cuda:0" and resolve_device("auto") == "cuda"


def test_kv_cache_larger_than_free_gpu_memory_is_one_line(monkeypatch):
    from marco_eval.errors import InputError

    with FakeCuda(), pytest.raises(InputError, match="kv_cache_mb=50000 is more than the 40960 MiB free"):
        make_policy(monkeypatch, "cuda", kv_cache_mb=50_000)


def test_dtype_auto_on_a_gpu_without_native_bf16_is_fp16(monkeypatch):
    from marco_eval.backends.weights import pick_dtype

    with FakeCuda():
        assert pick_dtype("auto", "cuda") == torch.bfloat16
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))  # a T4
        assert pick_dtype("auto", "cuda:0") == torch.float16


@pytest.mark.parametrize("action", ["step", "mini_step"])
def test_streaming_gives_the_trees_of_lockstep_on_a_real_model(monkeypatch, action):
    """The transformers backend streams (rows join a running batch as trees make requests);
    lock-step rounds batch differently, yet greedy searches on a real Qwen2 build the same
    trees: the same rollouts, answers and rewards (to float32 noise of another batch shape)."""
    policy = make_policy(monkeypatch, "cpu")
    config = SearchConfig(simulations=3, children=2, action=action, mini_step_tokens=4, max_depth=3,
                          action_max_tokens=6, rollout_max_tokens=10, step_delimiters=["e"], temperature=0.0)
    prompts = [SHOTS + "Q: one?\n", SHOTS + "Q: two plus two?\n", "Q: " + "long " * 12 + "?\n"]

    def trees(lockstep: bool):
        searches = [Search(config, list(ids(p)), policy, max_new_tokens=24) for p in prompts]
        results = run_searches(searches, policy, width=2, lockstep=lockstep)
        return [[(x.token_ids, x.reward) for x in r.tree.rollouts] for r in results]

    streamed, rounds = trees(lockstep=False), trees(lockstep=True)
    assert [[ids_ for ids_, _ in t] for t in streamed] == [[ids_ for ids_, _ in t] for t in rounds]
    assert [r for t in streamed for _, r in t] == pytest.approx([r for t in rounds for _, r in t], abs=1e-5)
