"""The transformers backend against the transformers installed: the cache internals it uses
(backends/hf_cache.py) are there and behave, the pinned range is the tested one, and models
whose attention the batch cache cannot mask are refused in one line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import scripted_lm
from marco_eval.backends import hf_cache
from marco_eval.errors import ConfigError, IncompatibleDependency
from marco_eval.search.policy import Continue

ROOT = Path(__file__).resolve().parent.parent
INTERNALS = re.compile(r"cache_utils|DynamicCache|DynamicLayer|ddp_cache_data|get_mask_sizes|\.layers\]|cache\.layers")


def tiny(config_class, **kw):
    """A randomly initialised two-layer model of `config_class`, one id per character."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    config = config_class(vocab_size=scripted_lm.VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                          eos_token_id=scripted_lm.EOS, pad_token_id=scripted_lm.EOS, **kw)
    return AutoModelForCausalLM.from_config(config).eval()


def policy_on(model, monkeypatch, **kw):
    import transformers

    from marco_eval.backends.hf import TransformersPolicy

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: model)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: scripted_lm.CharTokenizer())
    return TransformersPolicy("tiny", dtype="float32", **kw)


def test_the_pinned_transformers_is_the_tested_range_and_holds_the_contract():
    import transformers
    from packaging.specifiers import SpecifierSet

    hf_cache.check_internals.cache_clear()
    hf_cache.check_internals()
    assert transformers.__version__ in SpecifierSet(hf_cache.TESTED)
    pins = re.findall(r'"transformers([^"]*)"', (ROOT / "pyproject.toml").read_text())
    assert pins == [hf_cache.TESTED]
    vllm_pin = re.search(r"VLLM_TRANSFORMERS \?= transformers(\S+)", (ROOT / "Makefile").read_text())[1]
    low = re.search(r">=([\d.]+)", vllm_pin)[1]  # the vLLM venv's transformers installs within the pin
    high = [int(x) for x in re.search(r"<([\d.]+)", vllm_pin)[1].split(".")]
    top = [int(x) for x in re.search(r"<([\d.]+)", hf_cache.TESTED)[1].split(".")]
    assert low in SpecifierSet(hf_cache.TESTED) and high <= top


def test_other_cache_internals_fail_in_one_line_before_a_model_loads(monkeypatch):
    from transformers.cache_utils import DynamicLayer

    def get_mask_sizes(self, cache_position):  # transformers 4.57's signature
        return 0, 0

    monkeypatch.setattr(DynamicLayer, "get_mask_sizes", get_mask_sizes)
    hf_cache.check_internals.cache_clear()
    try:
        with pytest.raises(IncompatibleDependency) as e:
            policy_on(None, monkeypatch)  # the check comes first: no model is asked for
        message = str(e.value)
        assert "not as expected: DynamicLayer.get_mask_sizes(query_length)" in message
        assert message.endswith(f"install transformers{hf_cache.TESTED}") and "\n" not in message
    finally:
        hf_cache.check_internals.cache_clear()


def test_only_hf_cache_uses_the_cache_internals():
    users = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "marco_eval").rglob("*.py")
                   if p.name != "hf_cache.py" and INTERNALS.search(p.read_text(encoding="utf-8")))
    assert users == []


def test_a_real_architecture_decodes_on_the_batch_cache_as_with_no_cache(monkeypatch):
    """A tiny Llama through the batch cache (left padding, rows joining and leaving, shared
    prefixes) gives the tokens and log-probs of full forwards without any cache: the mask
    sizes and positions the cache reports are the ones this transformers needs."""
    import torch
    from transformers import LlamaConfig

    model = tiny(LlamaConfig)
    policy = policy_on(model, monkeypatch, max_batch=2, prefill_chunk=4)
    prompts = ["Q: one?\n", "Q: two plus two?\n", "Q: a much longer question, is it?\n", "Q: one?\nA"]
    requests = [Continue(tuple(scripted_lm.CharTokenizer()(p)["input_ids"]), n) for p in prompts for n in (3, 9)]
    got = policy.generate(requests)
    for req, gen in zip(requests, got, strict=True):
        ids, want, logprobs = list(req.prefix), [], []
        with torch.inference_mode():
            while len(want) < req.max_new_tokens and (not want or want[-1] != scripted_lm.EOS):
                logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)  # [vocab]
                want.append(int(logp.argmax()))
                logprobs.append(float(logp[want[-1]]))
                ids.append(want[-1])
        assert gen.token_ids == want
        assert gen.logprobs == pytest.approx(logprobs, abs=1e-4)


@pytest.mark.parametrize("config, kinds", [
    (dict(model_type="qwen2", use_sliding_window=True, sliding_window=16, max_window_layers=1), "sliding_attention"),
    (dict(model_type="mistral", sliding_window=4096), "sliding_attention"),  # no layer_types: inferred
    (dict(model_type="llama4_text", attention_chunk_size=8192, layer_types=None), "chunked_attention"),
    (dict(model_type="qwen2", layer_types=["full_attention", "linear_attention"]), "linear_attention"),  # hybrid
])
def test_sliding_window_and_hybrid_attention_are_one_line(config, kinds):
    from transformers import AutoConfig

    model_type = config.pop("model_type")
    cfg = AutoConfig.for_model(model_type, num_hidden_layers=2, **config)
    if model_type == "llama4_text":
        cfg.layer_types = None  # as a config without a per-layer list reads
    with pytest.raises(ConfigError) as e:
        hf_cache.check_attention(cfg, "some/model")
    message = str(e.value)
    assert message.startswith(f"pretrained=some/model: its layers use {kinds}, which") and "\n" not in message
    assert "use backend=vllm, or a model with full attention only" in message


def test_full_attention_models_pass_and_a_tiny_gemma2_is_refused_on_load(monkeypatch):
    from transformers import AutoConfig, Gemma2Config

    for model_type, kw in [("llama", {}), ("qwen2", {}), ("mistral", {"sliding_window": None})]:
        hf_cache.check_attention(AutoConfig.for_model(model_type, num_hidden_layers=2, **kw), "m")  # no error
    with pytest.raises(ConfigError, match="pretrained=tiny: its layers use sliding_attention"):
        policy_on(tiny(Gemma2Config, head_dim=8, sliding_window=4), monkeypatch)
