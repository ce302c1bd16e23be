"""Bad input: one line naming the problem and the fix, before any model loads where possible.

Every case here is a row of the README table ("Reliability", bad input). Each asserts the
error is a UserError (what the command line prints as one line: `marco-eval: error: ...`),
that its message is a single line containing the text users see, and, for everything that
can be checked from model_args, config files and paths alone, that `MarcoMCTSLM(...)`
raised it without loading a model. The last tests run the real command lines.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from cli_runs import BIN, assert_one_line_error, lm_eval, run
from fakes import fake_lm

from marco_eval import lm as lm_module
from marco_eval.errors import DataError, UserError


@pytest.fixture
def no_model_load(monkeypatch):
    """Any attempt to load a model fails the test."""
    from marco_eval.engine import Engine

    def refuse(engine):
        raise AssertionError(f"a model was loaded for {engine.options.pretrained}")

    monkeypatch.setattr(Engine, "_build_policy", refuse)


def expect_one_line(fn, *needles: str) -> str:
    with pytest.raises(UserError) as err:
        fn()
    message = str(err.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


# model_args value -> (text users see, in order). Run through the lm-eval model constructor.
MODEL_ARGS = {
    "simulatons=3": ["unknown key 'simulatons' in model_args", "did you mean 'simulations'?"],
    "beam_width=4": ["unknown key 'beam_width' in model_args", "every key is in the README's `--model_args` section"],
    "config=mcts_stp": ["config 'mcts_stp' not found; did you mean 'mcts_step'", "give a YAML path or one of:"],
    "simulations=many": ["simulations='many': expected int"],
    "simulations=0": ["simulations=0: must be a positive integer"],
    "children=0": ["children=0: must be a positive integer"],
    "mini_step_tokens=0": ["mini_step_tokens=0: must be a positive integer"],
    "max_depth=-1": ["max_depth=-1: must be a positive integer"],
    "action_max_tokens=0": ["action_max_tokens=0: must be a positive integer"],
    "samples=0": ["samples=0: must be a positive integer"],
    "temperature=-0.5": ["temperature=-0.5: must be >= 0 (0 = greedy)"],
    "temperature=2.5": ["temperature=2.5: use 0 (greedy) or a value in [0.01, 2.0]"],
    "temperature=0.005": ["temperature=0.005: use 0 (greedy) or a value in [0.01, 2.0]"],
    "answer_end=": ["answer_end='': must be a non-empty string"],
    "top_p=1.5": ["top_p=1.5: must be in (0, 1]"],
    "exploration=-1": ["exploration=-1.0: must be >= 0"],
    "reflection_max=-1": ["reflection_max=-1: must be an integer >= 0"],
    "seed=1.5": ["seed=1.5: expected int"],
    "strategy=beam": ["strategy='beam': use one of ('mcts', 'sampling')"],
    "action=token": ["action='token': use one of ('step', 'mini_step')"],
    "final_answer=first": ["final_answer='first': use one of"],
    "reflection=always": ["reflection='always': use one of ('off', 'thought_end')"],
    "kv_reuse=maybe": ["kv_reuse='maybe': expected bool"],
    "max_gen_toks=0": ["max_gen_toks=0: must be a positive integer"],
    "max_batch=0": ["max_batch=0: must be a positive integer"],
    "tree_batch=0": ["tree_batch=0: must be a positive integer"],
    "kv_cache_mb=-1": ["kv_cache_mb=-1: must be >= 0"],
    "dtype=float8": ["dtype='float8': use one of auto, float32, bfloat16, float16"],
    "chat_template=maybe": ["chat_template='maybe': use auto, on or off"],
    "answer=letter": ["answer='letter': use one of number, math, choice, output, none, auto"],
    "backend=tgi": ["backend='tgi': use hf (transformers) or vllm"],
    "store=": ["store=: give a file path"],
    "pretrained=smollm2": ["unknown model alias 'smollm2'; did you mean 'smollm2-135m'?"],
    "pretrained=./no/such/model": ["model path './no/such/model' does not exist"],
}


def parse_model_args(text: str) -> dict:
    from lm_eval.utils import simple_parse_args_string

    return simple_parse_args_string(text)


@pytest.mark.parametrize("model_args", list(MODEL_ARGS))
def test_model_args(model_args, no_model_load):
    expect_one_line(lambda: lm_module.MarcoMCTSLM(**parse_model_args(model_args)), *MODEL_ARGS[model_args])


# config=FILE contents -> text users see
CONFIG_FILES = {
    "missing": (None, ["config", "not found;", "give a YAML path or one of:", "mcts_step"]),
    "malformed": ("simulations: [1, 2\n", ["is not valid YAML", "fix the file"]),
    "unknown_key": ("simulation: 4\n", ["unknown key 'simulation' in config file", "did you mean 'simulations'?"]),
    "not_a_mapping": ("- 1\n- 2\n", ["must be a mapping of key: value, not list"]),
    "empty_delimiters": ("step_delimiters: []\n", ["step_delimiters=[]: must be a non-empty list"]),
}


@pytest.mark.parametrize("case", list(CONFIG_FILES))
def test_config_file(case, tmp_path, no_model_load):
    text, needles = CONFIG_FILES[case]
    path = tmp_path / f"{case}.yaml"
    if text is not None:
        path.write_text(text)
    expect_one_line(lambda: lm_module.MarcoMCTSLM(config=str(path)), *needles)


def test_directory_without_config_json(tmp_path, no_model_load):
    expect_one_line(lambda: lm_module.MarcoMCTSLM(pretrained=str(tmp_path)),
                    "has no config.json, so it is no model checkpoint", "save_pretrained()")


def test_directory_without_weights(tmp_path, no_model_load):
    (tmp_path / "config.json").write_text("{}")
    expect_one_line(lambda: lm_module.MarcoMCTSLM(pretrained=str(tmp_path)),
                    "has a config.json but no weights (*.safetensors")


def test_unloadable_hub_id_is_one_line(monkeypatch):
    from marco_eval.engine import Engine

    def offline(engine):  # what transformers raises for an unknown id or an unreachable hub
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nCheck your connection.")

    monkeypatch.setattr(Engine, "_build_policy", offline)
    lm = lm_module.MarcoMCTSLM(pretrained="someorg/no-such-model")
    expect_one_line(lambda: lm.policy, "could not load pretrained='someorg/no-such-model' (We couldn't connect",
                    "give an alias (qwen2.5-coder-0.5b, smollm2-135m)")


# ---------------------------------------------------------------- data
def test_missing_data_directory(monkeypatch, tmp_path):
    import mgsm_utils

    monkeypatch.setenv("MGSM_DATA_DIR", str(tmp_path / "nope"))
    with pytest.raises(DataError, match="is not a directory; point it at the folder holding mgsm_en.tsv"):
        mgsm_utils.load_mgsm_en()


def test_data_directory_without_the_file(monkeypatch, tmp_path):
    import mgsm_utils

    monkeypatch.setenv("MGSM_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match="mgsm_en.tsv is missing; MGSM_DATA_DIR must hold"):
        mgsm_utils.load_mgsm_en()


def test_malformed_data_file(monkeypatch, tmp_path):
    import mgsm_utils

    (tmp_path / "mgsm_en.tsv").write_text("How many legs has a cat?\t4\nno tab on this line\n")
    monkeypatch.setenv("MGSM_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match=r"line\(s\) \[2\] are not question<TAB>answer; fix or replace"):
        mgsm_utils.load_mgsm_en()


@pytest.fixture(autouse=True)
def tasks_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "tasks"))


# ---------------------------------------------------------------- requests (need a tokenizer: a fake policy)
class _Req:
    def __init__(self, context, gen_kwargs, task_name="mgsm_en", doc_id=0):
        self.args, self.task_name, self.doc_id, self.repeats = (context, gen_kwargs), task_name, doc_id, 1


def test_prompt_longer_than_the_context():
    lm = fake_lm(max_length=64)
    expect_one_line(lambda: lm.generate_until([_Req("x" * 100, {"until": ["</Output>"]}, doc_id=7)], True),
                    "mgsm_en doc 7: a prompt of 101 tokens does not fit the model's context of 64",
                    "fewer few-shot examples")


@pytest.mark.parametrize("bad", [0, -3, "ten"])
def test_gen_kwargs_max_gen_toks_out_of_range(bad):
    lm = fake_lm()
    expect_one_line(lambda: lm.generate_until([_Req("Q?\n", {"max_gen_toks": bad})], True),
                    f"mgsm_en doc 0: max_gen_toks={bad!r} (from the task or --gen_kwargs) must be a positive integer")


# ---------------------------------------------------------------- the request store
def test_store_is_a_directory(tmp_path, no_model_load):
    expect_one_line(lambda: lm_module.MarcoMCTSLM(store=str(tmp_path)), "is a directory; give a file path such as")


def test_store_in_use_by_another_run(tmp_path, no_model_load):
    first = lm_module.MarcoMCTSLM(store=str(tmp_path / "s.jsonl"))
    expect_one_line(lambda: lm_module.MarcoMCTSLM(store=str(tmp_path / "s.jsonl")),
                    "is in use by another run; wait for it to finish or give this run its own store file")
    first.store.close()


def test_store_with_a_corrupt_line(tmp_path, no_model_load):
    path = tmp_path / "s.jsonl"
    path.write_text('{"key": "a", "text": "x"}\nnot json\n{"key": "b", "text": "y"}\n')
    expect_one_line(lambda: lm_module.MarcoMCTSLM(store=str(path)),
                    "line 2 is not a request record; remove that line (or the file, to start over)")


def test_use_cache_database_of_another_config(tmp_path):
    from lm_eval.api.model import CachingLM

    db = str(tmp_path / "cache.db")
    CachingLM(fake_lm(seed=1), db).dbdict.close()
    expect_one_line(lambda: CachingLM(fake_lm(seed=2), db),
                    "--use_cache", "holds answers of another model or config; give a new cache path",
                    "store=PATH")


# ---------------------------------------------------------------- the command lines (the exit code, the one line)
@pytest.mark.slow  # starts lm-eval in a subprocess: about 20 s of CPU
def test_lm_eval_cli_typo_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    proc = lm_eval("pretrained=smollm2-135m,simulatons=3", out=out)
    assert_one_line_error(proc, "unknown key 'simulatons' in model_args; did you mean 'simulations'?", 1)
    assert not out.exists()


@pytest.mark.slow  # starts lm-eval in a subprocess: about 20 s of CPU
def test_marco_eval_run_missing_data_dir_fails_before_the_model_loads(tmp_path):
    # A checkpoint whose weights are garbage: had the model been loaded, the error would differ.
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text('{"model_type": "llama"}')
    (ckpt / "model.safetensors").write_bytes(b"not weights")
    out = tmp_path / "out"
    proc = run([sys.executable, "-m", "marco_eval.cli", "run", "--model", "marco_mcts",
                "--model_args", f"pretrained={ckpt}", "--tasks", "mgsm_en", "--limit", "1", "--output_path", str(out)],
               MGSM_DATA_DIR=str(tmp_path / "missing"))
    assert_one_line_error(proc, "is not a directory; point it at the folder holding mgsm_en.tsv", 2)
    assert not out.exists()


@pytest.mark.slow  # starts lm-eval in a subprocess: about 20 s of CPU
def test_unknown_task_is_one_line_with_the_closest_names(tmp_path):
    out = tmp_path / "out"
    proc = run([str(BIN / "lm_eval"), "--model", "marco_mcts", "--model_args", "pretrained=smollm2-135m",
                "--tasks", "mgsm_fr", "--limit", "1", "--output_path", str(out)])
    assert_one_line_error(proc, "unknown task 'mgsm_fr' (did you mean 'mgsm_zh' or 'mgsm_en'", 1)
    assert not out.exists()


def test_lm_eval_task_error_translation_leaves_other_errors_alone():
    from marco_eval._hook import unknown_tasks_error
    from marco_eval.errors import find_user_error

    assert unknown_tasks_error(ValueError("something else")) is None
    assert unknown_tasks_error(KeyError("Tasks not found: x")) is None
    err = unknown_tasks_error(ValueError("Tasks not found: nope, mgsm_fr"))
    assert str(err).startswith("unknown task 'nope', 'mgsm_fr'") and "\n" not in str(err)
    from marco_eval import errors

    errors.TRANSLATORS.append(unknown_tasks_error)
    try:
        wrapped = RuntimeError("outer")
        wrapped.__cause__ = ValueError("Tasks not found: mgsm_fr")
        assert "unknown task 'mgsm_fr'" in str(find_user_error(wrapped))
    finally:
        errors.TRANSLATORS.remove(unknown_tasks_error)


# ---------------------------------------------------------------- the machine: devices and vLLM (issue #32)
def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _vllm_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


# (model_args, more lm_eval arguments, what the line must hold, why it cannot run here or None).
# The rows a machine without vLLM reaches; the vLLM rows are in tests/test_vllm_real.py.
MACHINE_ROWS = {
    "device=cuda:3 in model_args": ("pretrained=smollm2-135m,device=cuda:3,config=base_cot", [], "device=cuda:3: this machine has",
                                    _cuda_count() > 3 and "this machine has a cuda:3"),
    "device=cuda without CUDA": ("pretrained=smollm2-135m,device=cuda", [], "device=cuda: this machine has no CUDA device",
                                 _cuda_count() > 0 and "this machine has CUDA"),
    "--device cuda:1 alone": ("pretrained=smollm2-135m", ["--device", "cuda:1"], "device=cuda:1: this machine has",
                              _cuda_count() > 1 and "this machine has a cuda:1"),
    "backend=vllm without vLLM": ("pretrained=smollm2-135m,backend=vllm", [],
                                  ("backend=vllm needs the vllm package, which is not installed in ",
                                   "pip install 'marco-eval[vllm]'" if _cuda_count() else
                                   "on a CPU machine vLLM's CPU build lives in its own venv: run `make vllm-env`"),
                                  _vllm_importable() and "vLLM is installed here"),
}


@pytest.mark.slow  # starts lm-eval in a subprocess: about 20 s of CPU each
@pytest.mark.parametrize("row", list(MACHINE_ROWS))
def test_lm_eval_machine_mistakes_are_one_line(row, tmp_path):
    """Plain `lm_eval`, as users type it: exit 1, one line naming the bad key and the fix, no
    traceback, nothing written; model_args' device no longer clashes with lm-eval's own."""
    model_args, extra, needle, skip = MACHINE_ROWS[row]
    if skip:
        pytest.skip(skip)
    out = tmp_path / "out"
    assert_one_line_error(lm_eval(model_args, *extra, out=out), needle, 1)
    assert not out.exists()
