"""The transformers backend's batch cache against recorded outputs of the earlier one.

tests/fixtures/hf_golden.json holds what commit 4a66000 (DynamicCache, torch.cat per step,
materialized prefixes) generated on the scripted model (tests/scripted_lm.py): greedy and
sampled generations with stop strings, length caps and EOS, more requests than rows
(continuous joins), siblings on one prefix, continuations from cached entries, a long row
leaving the batch, an eviction-everything cache cap, and whole MCTS searches (step and
mini-step). The scripted model's logits are a function of exactly the ids it is shown
through the cache and mask, so any slip in the cache layout (a column off, a row swapped,
a stale prefix) changes tokens. Regenerate only on purpose, from the implementation to pin:
`PYTHONPATH=<its checkout> python tests/test_hf_cache.py`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import scripted_lm
from marco_eval.search import Search, SearchConfig, run_searches
from marco_eval.search.policy import Continue

GOLDEN = Path(__file__).resolve().parent / "fixtures" / "hf_golden.json"
PROMPTS = ["Q: one?\n", "Q: two plus two?\n", "Q: three?\n", "Q: " + "long " * 30 + "?\n"]
SHOTS = "Example. " * 12  # a few-shot block every prompt starts with (96 tokens)


def ids(text: str) -> tuple[int, ...]:
    return tuple(ord(c) for c in text)


def make_policy(monkeypatch, lm, **kw):
    import transformers

    from marco_eval.backends.hf import TransformersPolicy

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: scripted_lm.torch_model(lm))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: scripted_lm.CharTokenizer())
    return TransformersPolicy("scripted", dtype="float32", **kw)


def record(gens, top: bool = False) -> list[dict]:
    """Token ids, finish, stop and log-probs (6 decimals); the top 5 where asked (they are big)."""
    return [{"ids": g.token_ids, "finish": g.finish, "stop": g.stop, "logprobs": [round(x, 6) for x in g.logprobs],
             **({"top": [[round(x, 6) for x in t] for t in g.top_logprobs]} if top else {})} for g in gens]


def generation_cases(policy) -> dict:
    """Plain generate calls exercising joins, sharing, continuation and leaving rows."""
    out = {}
    greedy = [Continue(ids(p), n, ("</Output>",), temperature=0.0) for p in PROMPTS for n in (5, 60)]
    out["greedy_mixed"] = record(policy.generate(greedy), top=True)  # 8 requests through 3-4 rows
    sampled = [Continue(ids(p), 40, ("\n\n", "</Output>"), temperature=t, top_p=tp, seed=s)
               for s, (p, t, tp) in enumerate([(PROMPTS[0], 1.0, 1.0), (PROMPTS[0], 1.0, 0.9), (PROMPTS[1], 0.7, 0.95),
                                              (PROMPTS[3], 1.3, 0.8), (PROMPTS[2], 1.0, 0.5), (PROMPTS[3], 0.5, 1.0)])]
    out["sampled"] = record(policy.generate(sampled), top=True)
    siblings = [Continue(ids(PROMPTS[1]), 12, ("\n\n",), temperature=1.0, seed=s) for s in range(5)]
    first = policy.generate(siblings)
    out["siblings"] = record(first)
    # continue from every sibling's end (its entry is cached) and from a cut inside one
    follow = [Continue(ids(PROMPTS[1]) + tuple(g.token_ids), 15, ("</Output>",), temperature=1.0, seed=9 + i)
              for i, g in enumerate(first)]
    follow.append(Continue(ids(PROMPTS[1]) + tuple(first[0].token_ids[:3]), 10, (), temperature=0.0))
    out["continued"] = record(policy.generate(follow))
    long_then_short = [Continue(ids(PROMPTS[3]) + ids("x" * 120), 3, temperature=0.0)] + [
        Continue(ids(p), 50, ("</Output>",), temperature=1.0, seed=3) for p in PROMPTS[:3]]
    out["long_row_leaves"] = record(policy.generate(long_then_short))
    # prompts sharing a long first part: the second call finds the first prompt cached
    out["shared_shots"] = record(policy.generate([Continue(ids(SHOTS + PROMPTS[0]), 20, temperature=1.0, seed=1)]) +
                                 policy.generate([Continue(ids(SHOTS + p), 30, ("</Output>",), temperature=1.0, seed=2)
                                                  for p in PROMPTS]))
    return out


def search_cases(policy) -> dict:
    out = {}
    for action in ("step", "mini_step"):
        cfg = SearchConfig(action=action, simulations=3, children=2, mini_step_tokens=6, temperature=1.0, top_p=0.95)
        searches = [Search(cfg, ids(p), policy, max_new_tokens=80, until=("</Output>",)) for p in PROMPTS]
        results = run_searches(searches, policy, width=3)
        out[action] = [{"text": r.text, "ids": r.token_ids, "path": r.chosen_path,
                        "rollouts": [x.token_ids for x in r.tree.rollouts]} for r in results]
    return out


VARIANTS = {"b1": dict(max_batch=1), "b3": dict(max_batch=3), "b4": dict(max_batch=4),
            "evict_all": dict(max_batch=4, kv_cache_mb=0), "naive": dict(max_batch=4, kv_reuse=False),
            "chunk16": dict(max_batch=3, prefill_chunk=16)}  # shares the 108-token SHOTS block


def produce(monkeypatch, variants=VARIANTS) -> dict:
    """Per model: the generation cases under every variant (they must all agree, so the
    fixture keeps one copy) and the searches."""
    out = {}
    for name, lm in (("model", scripted_lm.MODEL), ("flat", scripted_lm.FLAT)):
        for variant, kw in variants.items():
            out[f"{name}_{variant}"] = generation_cases(make_policy(monkeypatch, lm, **kw))
        out[f"{name}_search"] = search_cases(make_policy(monkeypatch, lm, max_batch=4))
    return out


def assert_same(got, want, where=""):
    if isinstance(want, dict):
        assert set(got) == set(want), where
        for k in want:
            assert_same(got[k], want[k], f"{where}/{k}")
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, abs=1e-5), where
    else:
        assert got == want, where


def test_outputs_equal_the_recorded_outputs_of_the_concatenating_cache(monkeypatch):
    want = json.loads(GOLDEN.read_text())
    got = json.loads(json.dumps(produce(monkeypatch)))
    for name in ("model", "flat"):
        for variant in VARIANTS:  # every batch width, cap and reuse setting gives the same generations
            assert_same(got[f"{name}_{variant}"], want[f"{name}_generations"], f"{name}_{variant}")
        assert_same(got[f"{name}_search"], want[f"{name}_search"], f"{name}_search")



def test_prompts_that_start_alike_prefill_their_common_part_once_with_the_same_outputs(monkeypatch):
    """share_prompts against the recorded outputs, chunks small enough for the 108-token
    shared block: the same generations, fewer positions forwarded. (Bit-identical outputs on a
    real bf16 model: tests/test_real_model.py.)"""
    want = json.loads(GOLDEN.read_text())
    for name, lm in (("model", scripted_lm.MODEL), ("flat", scripted_lm.FLAT)):
        plain, shared = (make_policy(monkeypatch, lm, max_batch=4, share_prompts=on, prefill_chunk=16)
                         for on in (False, True))
        for policy in (plain, shared):
            assert_same(json.loads(json.dumps(generation_cases(policy))), want[f"{name}_generations"], name)
        assert shared.forwarded_tokens < plain.forwarded_tokens - len(SHOTS)

def test_packed_linears_are_bit_identical_and_leave_tied_weights_alone():
    import copy

    import torch

    from marco_eval.backends.weights import PackedLinear, pack_linears

    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"embed": torch.nn.Embedding(50, 16), "up": torch.nn.Linear(16, 64),
                                 "down": torch.nn.Linear(64, 16, bias=False),
                                 "head": torch.nn.Linear(16, 50, bias=False)}).to(torch.bfloat16)
    model["head"].weight = model["embed"].weight  # tied, as in smollm2
    plain = copy.deepcopy(model)
    if pack_linears(model) == 0:
        pytest.skip("this torch build has no oneDNN bf16 linear")
    assert isinstance(model["up"], PackedLinear) and isinstance(model["down"], PackedLinear)
    assert isinstance(model["head"], torch.nn.Linear)  # packing a tied weight would hold it twice
    for rows in (1, 8, 300):  # decode and prefill sizes
        x = torch.randn(2, rows, 16, dtype=torch.bfloat16)
        with torch.inference_mode():
            got = model["head"](model["down"](torch.relu(model["up"](x))))
            want = plain["head"](plain["down"](torch.relu(plain["up"](x))))
        assert torch.equal(got, want)


if __name__ == "__main__":  # regenerate the fixture (only with the implementation it pins)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    mp = pytest.MonkeyPatch()
    made = produce(mp)
    mp.undo()
    fixture = {}
    for name in ("model", "flat"):
        runs = [made[f"{name}_{v}"] for v in VARIANTS]
        assert all(r == runs[0] for r in runs), "variants disagree: nothing to pin"
        fixture[f"{name}_generations"], fixture[f"{name}_search"] = runs[0], made[f"{name}_search"]
    GOLDEN.write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes)")
