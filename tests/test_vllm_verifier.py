"""reward=PATH on the vLLM backend (fake vLLM, tiny random verifier): the engine's share of
the first GPU leaves the verifier its footprint, too little is one line, and the verifier
values a call's sequences in batched forwards, as one at a time would."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from marco_eval.errors import ConfigError

SUFFIX = "\nok?"


@pytest.fixture
def checkpoint(tmp_path, monkeypatch):
    """A two-layer random Llama verifier (one label) saved as train/verifier.py saves one;
    its tokenizer is one id per character."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, num_labels=1, pad_token_id=0)
    model = transformers.LlamaForSequenceClassification(config).eval()
    model.config.marco_eval_verifier = {"suffix": SUFFIX}
    model.save_pretrained(tmp_path / "verifier")
    chars = SimpleNamespace(encode=lambda text, add_special_tokens=False: [ord(c) for c in text])
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: chars)
    return tmp_path / "verifier", model


def build(fake_vllm, checkpoint, **kw):
    from marco_eval.backends.vllm import VLLMPolicy

    return VLLMPolicy("scripted_lm:MODEL", verifier=str(checkpoint[0]), **kw)


def test_the_engine_leaves_the_first_gpu_the_verifiers_footprint(fake_vllm, checkpoint, monkeypatch, capsys):
    from marco_eval.backends.verifier import BATCH_TOKENS, CUDA_CONTEXT_BYTES, footprint_bytes

    _, model = checkpoint
    weights = sum(p.numel() for p in model.parameters()) * 4  # saved and valued in float32
    need = footprint_bytes(checkpoint[0], torch.float32)
    assert need == weights + BATCH_TOKENS * (2 * 64 + 4 * 32) * 4 + CUDA_CONTEXT_BYTES
    monkeypatch.setenv("FAKE_VLLM_GPU_BYTES", str(3 * need))  # a third of the GPU for the verifier
    policy = build(fake_vllm, checkpoint, dtype="float32")
    assert policy.llm.engine_args["gpu_memory_utilization"] == 0.66  # not 0.9: 2/3, rounded down
    assert "gpu_memory_utilization 0.9 -> 0.66: the verifier" in capsys.readouterr().err
    monkeypatch.setenv("FAKE_VLLM_GPU_BYTES", str(80 * 2**30))  # room to spare: the share asked for
    assert build(fake_vllm, checkpoint, gpu_memory_utilization=0.8).llm.engine_args["gpu_memory_utilization"] == 0.8
    assert "gpu_memory_utilization" not in capsys.readouterr().err


def test_a_gpu_the_verifier_fills_is_one_line_before_the_engine_loads(fake_vllm, checkpoint, monkeypatch):
    from marco_eval.backends.verifier import footprint_bytes

    need = footprint_bytes(checkpoint[0], torch.float32)
    monkeypatch.setenv("FAKE_VLLM_GPU_BYTES", str(int(need * 1.05)))
    built = fake_vllm.LLM.built
    with pytest.raises(ConfigError) as e:
        build(fake_vllm, checkpoint)
    assert str(e.value).startswith(f"reward={checkpoint[0]}: the verifier needs 0.5 GiB (float32) of the first GPU's")
    assert "leaving vLLM under 10%; use a smaller verifier, verifier_dtype=bfloat16" in str(e.value)
    assert "\n" not in str(e.value) and fake_vllm.LLM.built == built
    monkeypatch.setenv("FAKE_VLLM_CPU", "1")  # the CPU build sizes its KV cache in bytes: nothing to share
    assert "gpu_memory_utilization" not in build(fake_vllm, checkpoint).llm.engine_args


def test_the_verifier_values_a_call_in_batched_forwards_as_one_at_a_time(fake_vllm, checkpoint):
    policy = build(fake_vllm, checkpoint)
    _, model = checkpoint
    sequences = [tuple(range(1, 30)), (5, 6, 0), tuple(range(40, 52)), (7,)]  # (5, 6, 0): ends in the padding id
    values = policy.value_many(sequences)
    assert policy.verifier.forwards == 1
    suffix = [ord(c) for c in SUFFIX]
    with torch.inference_mode():  # one sequence alone, no padding: the head on its last position
        alone = [float(torch.sigmoid(model.score(model.model(input_ids=torch.tensor([[*s, *suffix]]))
                                                 .last_hidden_state[0, -1])[0])) for s in sequences]
    assert values == pytest.approx(alone, abs=1e-5)
    assert len({round(v, 5) for v in values}) == 4


def test_the_batched_verifier_on_fake_cuda_gives_the_cpu_values(checkpoint):
    from fake_cuda import FakeCuda

    from marco_eval.backends.verifier import CheckpointVerifier

    sequences = [tuple(range(1, 30)), (5, 6, 0), (7,)]
    verifier = CheckpointVerifier(checkpoint[0], device="cpu")
    on_cpu = verifier(sequences)
    with FakeCuda() as cuda:
        # loaded on the CPU, then moved: transformers' loading itself is not what is tested
        verifier.model, verifier.device = verifier.model.to("cuda"), "cuda"
        copies = cuda.host_copies
        on_cuda = verifier(sequences)
        per_forward = cuda.host_copies - copies
        verifier(sequences * 3)
        assert cuda.host_copies - copies == 2 * per_forward  # copies per forward, not per sequence
    assert on_cuda == on_cpu
