"""Training: data readers and filters, the problem generator, synth's path choice, SFT config,
and (slow) a real SFT + synth on smollm2-135m. All rows here are invented for the tests."""

from __future__ import annotations

import json
import re
import shutil
from fractions import Fraction
from types import SimpleNamespace

import pytest

from fakes import ScriptedPolicy
from marco_eval.errors import ConfigError, InputError
from marco_eval.search import Search, SearchConfig, run_searches
from marco_eval.train import data, problems, synth
from marco_eval.jsonl import read_json_rows, write_jsonl_atomic


def tagged(thought: str, output: str) -> str:
    return f"<Thought>\n{thought}\n</Thought>\n<Output>{output}</Output>"


GOOD = tagged("Three boxes of four pens is 3 * 4 = 12 pens.", "12")


# ---------------------------------------------------------------------- readers and filters
def test_marco_reader_counts_each_filter(tmp_path):
    rows = [
        {"instruction": "How many pens are in three boxes of four?", "response": GOOD},
        {"instruction": "Missing answer", "response": ""},
        {"instruction": "No closing output", "response": "<Thought>\nx\n</Thought>\n<Output>12"},
        {"instruction": "Two thoughts", "response": "<Thought>a</Thought><Thought>b</Thought><Output>1</Output>"},
        {"instruction": "Empty thought", "response": "<Thought>  </Thought><Output>1</Output>"},
        {"instruction": "Too short", "response": tagged("a", "1")},
        {"instruction": "  how many PENS are in three boxes of four? ", "response": GOOD},  # same prompt
        {"instruction": "What is 5 + 7?", "response": tagged("Five plus seven is twelve.", "12")},
    ]
    path = tmp_path / "cot.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    filters = data.FilterConfig(min_response_chars=50)
    kept, counts = data.read_source(data.SourceConfig(str(path)), filters, set())
    assert [r.instruction for r in kept] == ["How many pens are in three boxes of four?", "What is 5 + 7?"]
    assert counts.read == 8 and counts.kept == 2
    assert counts.dropped == {"malformed": 1, "tags": 3, "length": 1, "duplicate": 1, "overlong": 0}


def test_openo1_alpaca_and_synth_formats(tmp_path):
    write_jsonl_atomic(tmp_path / "o1.jsonl", [{"instruction": "Q1", "output": GOOD}])
    write_jsonl_atomic(tmp_path / "alpaca.jsonl", [
        {"instruction": "Translate to French", "input": "good morning", "output": "bonjour"},
        {"instruction": "Say hi", "input": "", "output": "Hi there!"}])
    write_jsonl_atomic(tmp_path / "synth.jsonl", [{"instruction": "Q2", "response": GOOD, "reward": 0.9}])
    sources = [data.SourceConfig(str(tmp_path / "o1.jsonl"), format="openo1"),
               data.SourceConfig(str(tmp_path / "alpaca.jsonl"), format="alpaca"),
               data.SourceConfig(str(tmp_path / "synth.jsonl"), format="synth", name="mine")]
    rows, counts = data.build_mix(sources, data.FilterConfig(min_response_chars=1), seed=0)
    by_prompt = {r.instruction: r for r in rows}
    assert by_prompt["Translate to French\n\ngood morning"].response == "bonjour"  # no tags needed
    assert by_prompt["Say hi"].source == "alpaca" and by_prompt["Q2"].source == "mine"
    assert set(counts) == {"o1", "alpaca", "mine"} and len(rows) == 4


def test_wrong_format_and_missing_file_are_one_line_errors(tmp_path):
    write_jsonl_atomic(tmp_path / "o1.jsonl", [{"instruction": "Q", "output": GOOD}])
    with pytest.raises(ValueError, match="is format=marco right"):
        data.read_source(data.SourceConfig(str(tmp_path / "o1.jsonl"), format="marco"), data.FilterConfig(), set())
    with pytest.raises(ValueError, match="format='sharegpt'; use one of marco, openo1, alpaca, synth"):
        data.read_source(data.SourceConfig(str(tmp_path / "o1.jsonl"), format="sharegpt"), data.FilterConfig(), set())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_records(data.SourceConfig(str(tmp_path / "nope.jsonl")))


def test_hub_sources_turn_only_the_users_mistakes_into_one_line(monkeypatch):
    """Offline, an unknown id, a subset or split the dataset lacks: one line naming the source.
    A bug inside the loading (any other error, or a ValueError with subset and split fine)
    raises as it is."""
    import datasets

    raised: list[BaseException] = []

    def load_dataset(*args, **kwargs):
        raise raised[0]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(datasets, "get_dataset_config_names", lambda path: ["default", "zh"])
    monkeypatch.setattr(datasets, "get_dataset_split_names", lambda path, subset=None: ["train", "test"])
    hub = data.SourceConfig("someone/cot-rows")
    for error, message in [(ConnectionError("Couldn't reach 'someone/cot-rows' on the Hub"), "Couldn't reach"),
                           (datasets.exceptions.DatasetNotFoundError("Dataset 'someone/cot-rows' doesn't exist"),
                            "doesn't exist")]:
        raised[:] = [error]
        with pytest.raises(InputError, match=f"data source 'someone/cot-rows': could not load .*{message}") as e:
            data.load_records(hub)
        assert "\n" not in str(e.value)
    raised[:] = [ValueError('Unknown split "dev"')]
    with pytest.raises(InputError, match=r"split='dev' is not one of its splits \(train, test\); fix `split:`"):
        data.load_records(data.SourceConfig("someone/cot-rows", split="dev"))
    with pytest.raises(InputError, match=r"subset='fr' is not one of its subsets \(default, zh\)"):
        data.load_records(data.SourceConfig("someone/cot-rows", subset="fr"))
    with pytest.raises(ValueError, match="Unknown split") as e:  # subset and split exist: not the user's
        data.load_records(data.SourceConfig("someone/cot-rows", subset="zh", split="test"))
    assert not isinstance(e.value, InputError)
    raised[:] = [KeyError("features")]
    with pytest.raises(KeyError):
        data.load_records(hub)


def test_weights_repeat_or_sample_and_mix_is_seeded(tmp_path):
    write_jsonl_atomic(tmp_path / "a.jsonl", [{"instruction": f"a{i}", "response": GOOD} for i in range(10)])
    write_jsonl_atomic(tmp_path / "b.jsonl", [{"instruction": f"b{i}", "response": GOOD} for i in range(10)])
    sources = [data.SourceConfig(str(tmp_path / "a.jsonl"), weight=2.0),
               data.SourceConfig(str(tmp_path / "b.jsonl"), weight=0.5)]
    rows, counts = data.build_mix(sources, data.FilterConfig(), seed=3)
    assert (counts["a"].kept, counts["a"].used, counts["b"].kept, counts["b"].used) == (10, 20, 10, 5)
    assert sum(r.source == "a" for r in rows) == 20 and len({r.instruction for r in rows if r.source == "b"}) == 5
    again, _ = data.build_mix(sources, data.FilterConfig(), seed=3)
    other, _ = data.build_mix(sources, data.FilterConfig(), seed=4)
    assert again == rows and other != rows


def test_conversation_is_prompt_completion_with_optional_system():
    row = data.Row("What is 2 + 2?", tagged("Two and two make four.", "4"), "x")
    ex = data.conversation(row, "Think first.")
    assert ex["prompt"] == [{"role": "system", "content": "Think first."}, {"role": "user", "content": "What is 2 + 2?"}]
    assert ex["completion"] == [{"role": "assistant", "content": row.response}]
    assert data.conversation(row, "")["prompt"] == [{"role": "user", "content": "What is 2 + 2?"}]


# ---------------------------------------------------------------------- problem generator
_STEP = re.compile(r"^(-?\d+) ([-+*/]) (-?\d+) = (-?\d+)$")


def test_generator_is_deterministic_distinct_and_alternates_languages():
    first = problems.generate(40, seed=7)
    assert first == problems.generate(40, seed=7)
    assert first[:15] == problems.generate(15, seed=7)  # asking for more extends the same list
    assert first != problems.generate(40, seed=8)
    assert len({problems.normalized_text(p.question) for p in first}) == 40
    assert [p.lang for p in first[:4]] == ["en", "zh", "en", "zh"]
    assert all(re.search(r"[\u4e00-\u9fff]", p.question) for p in first if p.lang == "zh")
    assert all(not re.search(r"[\u4e00-\u9fff]", p.question) for p in first if p.lang == "en")
    assert {p.kind for p in problems.generate(200, seed=1)} == set(problems.TEMPLATES)


def test_generated_answers_follow_from_the_question():
    """Each recorded step is right, uses only numbers from the question, earlier results or
    unit constants, and the last step's result is the answer."""
    for p in problems.generate(400, seed=11):
        numbers_in_question = {int(n) for n in re.findall(r"\d+", p.question)}
        known = numbers_in_question | problems.CONSTANTS
        for step in p.steps:
            a, op, b, c = _STEP.match(step).groups()
            a, b, c = int(a), int(b), int(c)
            assert {"+": a + b, "-": a - b, "*": a * b, "/": Fraction(a, b)}[op] == c, step
            assert a in known and b in known, (p.question, step)
            known.add(c)
        assert p.answer == str(c) and c > 0, p.question


def test_no_generated_problem_is_an_mgsm_question():
    mgsm = problems.mgsm_questions()
    if mgsm is None:
        pytest.skip("MGSM_DATA_DIR is not set")
    generated = problems.generate(3000, seed=0)
    assert problems.drop_eval_overlap(generated, mgsm)[1] == 0
    # and the check does catch an overlap
    fake_eval = {problems.normalized_text(generated[5].question.upper())}
    kept, dropped = problems.drop_eval_overlap(generated, fake_eval)
    assert dropped == 1 and generated[5] not in kept


def test_user_problem_file(tmp_path):
    write_jsonl_atomic(tmp_path / "p.jsonl", [{"question": "Tom has 3 cats and gets 2 more. How many?", "answer": "5"},
                                              {"question": "一共有多少个？", "answer": 1200, "id": "z1"}])
    got = problems.read_problem_file(tmp_path / "p.jsonl")
    assert [(p.lang, p.answer) for p in got] == [("en", "5"), ("zh", "1200")] and got[1].id == "z1"
    write_jsonl_atomic(tmp_path / "bad.jsonl", [{"question": "ok?", "answer": 1}, {"question": "no answer"}])
    with pytest.raises(ValueError, match="row 2 needs"):
        problems.read_problem_file(tmp_path / "bad.jsonl")


# ---------------------------------------------------------------------- synth: path choice and files
FIRST = "<Thought>\nAdd the two numbers.\n\n"
VARIANTS = [  # (text the fake model writes, confidence of its tokens)
    (FIRST + "40 + 1 = 41.\n</Thought>\n<Output>41</Output>", 0.95),  # wrong, the most confident
    (FIRST + "40 + 2 = 42.\n</Thought>\n<Output>42</Output>", 0.60),  # right, tagged
    (FIRST + "So the answer is 42.\n\n\x00", 0.40),  # right, no tags; ends with end-of-sequence
    (FIRST + "40 + 2 = 4" + "2" * 400, 0.99),  # runs out of tokens: never finished
]
PROMPT = "Q: 40 + 2?\n"


def variant_script():
    """Round-robin over the variants that continue what is already written."""
    turn = [0]

    def script(prefix: str, seed: int) -> str:
        written = prefix[len(PROMPT):]
        fits = [text for text, _ in VARIANTS if text.startswith(written)]
        turn[0] += 1
        return fits[turn[0] % len(fits)][len(written):] if fits else "\x00"

    def logprobs(prefix: str, seed: int):
        written = prefix[len(PROMPT):]
        p = next((conf for text, conf in VARIANTS if text.startswith(written) and len(written) > len(FIRST)), 0.5)
        import math
        return math.log(p), [math.log(p)] + [math.log((1 - p) / 5)] * 4

    return script, logprobs


def make_fake_search(strategy: str):
    script, logprobs = variant_script()
    policy = ScriptedPolicy(script, logprob_fn=logprobs)
    cfg = SearchConfig(strategy=strategy, samples=8, simulations=6, children=4, action="step", temperature=0.7)
    return policy, lambda prompt: Search(cfg, policy.encode(PROMPT), policy, max_new_tokens=120, until=["</Output>"])


@pytest.mark.parametrize("strategy", ["sampling", "mcts"])
def test_synth_keeps_the_highest_reward_correct_finished_paths(strategy):
    policy, make_search = make_fake_search(strategy)
    search = make_search(PROMPT)
    run_searches([search], policy)
    texts = {synth.rollout_text(search, i) for i in range(len(search.tree.rollouts))}
    assert any("41" in t for t in texts) and any(t.startswith(FIRST + "40 + 2 = 422") for t in texts)
    problem = problems.Problem("p1", "en", "What is 40 + 2?", "42")
    rows, n_correct = synth.rows_for(problem, search, keep=2, provenance={"model": "fake"})
    assert [r["response"] for r in rows] == [
        "<Thought>\nAdd the two numbers.\n\n40 + 2 = 42.\n</Thought>\n<Output>42</Output>",
        "<Thought>\nAdd the two numbers.\n\nSo the answer is 42.\n</Thought>\n<Output>42</Output>"]
    assert rows[0]["reward"] > rows[1]["reward"] and rows[0]["rank"] == 0 and rows[0]["model"] == "fake"
    assert all(data.well_formed(r["response"]) for r in rows)
    assert n_correct >= 2 and rows[0]["correct_rollouts"] == n_correct


def test_marco_response_shapes():
    assert synth.marco_response("<Thought>\n a \n</Thought>\n<Output> 7 ", "7") == "<Thought>\na\n</Thought>\n<Output>7</Output>"
    assert synth.marco_response("3 + 4 = 7. The answer is 7.", "7") == "<Thought>\n3 + 4 = 7. The answer is 7.\n</Thought>\n<Output>7</Output>"
    assert synth.marco_response("<Thought>\nso 7\n<Output>7", "7") == "<Thought>\nso 7\n</Thought>\n<Output>7</Output>"
    assert synth.marco_response("<Output>7", "7") is None  # no reasoning: not a CoT row


class ScriptedEngine:
    """The engine's two calls synth makes, over the scripted policy and its fixed prompt."""

    def __init__(self, policy, make_search):
        self.policy, self._make_search = policy, make_search

    def make_search(self, context, *, until=(), max_gen_toks=None):
        return self._make_search(context)

    def run(self, searches, on_done=None):
        return run_searches(searches, self.policy, on_done=on_done)


def test_synth_appends_resumes_and_refuses_other_settings(tmp_path):
    out = tmp_path / "rows.jsonl"
    probs = [problems.Problem(f"p{i}", "en", f"What is 40 + 2? ({i})", "42") for i in range(3)]
    policy, make_search = make_fake_search("sampling")
    engine = ScriptedEngine(policy, make_search)
    stats = synth.synthesize(probs[:2], engine, out, settings={"model": "fake"}, log=lambda s: None)
    assert (stats.searched, stats.solved, stats.rows) == (2, 2, 2)
    assert [r["problem_id"] for r in read_json_rows(out)] == ["p0", "p1"]
    with open(out, "a", encoding="utf-8") as f:
        f.write('{"instruction": "torn')  # a kill in the middle of a line
    policy.calls.clear()
    stats = synth.synthesize(probs, engine, out, settings={"model": "fake"}, log=lambda s: None)
    assert (stats.already_done, stats.searched) == (2, 1)
    assert [r["problem_id"] for r in read_json_rows(out)] == ["p0", "p1", "p2"]
    progress = read_json_rows(synth.progress_path(out))
    assert progress[0] == {"settings": {"model": "fake"}} and len(progress) == 4
    with pytest.raises(ValueError, match="other settings"):
        synth.synthesize(probs, engine, out, settings={"model": "other"}, log=lambda s: None)


# ---------------------------------------------------------------------- SFT config
def test_train_config_yaml_overrides_and_errors(tmp_path):
    from marco_eval.train.sft import load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: smollm2-135m\ndata:\n  - path: a.jsonl\n  - path: b.jsonl\n    format: synth\n"
                   "learning_rate: 1.0e-5\nmax_steps: 5\n", encoding="utf-8")
    c = load_config(str(cfg), ["learning_rate=3e-4", "data.1.weight=2", "filters.dedup=pair", "max_steps=7"])
    # defaults < YAML < overrides: each layer wins over the one below, and only where it speaks
    assert (c.model, c.learning_rate, c.max_steps, c.max_length) == ("smollm2-135m", 3e-4, 7, 2048)
    assert c.data[1].weight == 2.0 and c.data[1].format == "synth"
    assert c.filters.dedup == "pair" and c.data[0].format == "marco"
    assert load_config(str(cfg)).learning_rate == 1e-5 and load_config(str(cfg)).lora.r == 0  # full-parameter
    assert load_config(str(cfg), ["lora.r=16"]).lora.r == 16
    assert load_config(str(cfg), ["system_prompt="]).system_prompt == ""  # text fields take the text as written
    for bad, message in (
            (["xyz=1"], "unknown key 'xyz' in override 'xyz=1'; the keys are the fields of TrainConfig"),
            (["lora.alpah=8"], "unknown key 'lora.alpah' in override 'lora.alpah=8'; did you mean 'lora.alpha'?"),
            (["lora.r=-1"], "lora.r=-1: use 0 (full-parameter) or a positive rank"),
            (["learning_rat=1"], "unknown key 'learning_rat' in override 'learning_rat=1'; did you mean 'learning_rate'?"),
            (["data.1.wieght=2"], "unknown key 'data.1.wieght' in override 'data.1.wieght=2'; did you mean 'data.1.weight'?"),
            (["data.2.weight=2"], "unknown key 'data.2.weight' in override 'data.2.weight=2'; data has 2 item(s), numbered from 0"),
            (["epochs=many"], "epochs='many': expected float (from override 'epochs=many')"),
            (["precision=int8"], "precision='int8': use one of auto"),
            (["learning_rate"], "override 'learning_rate': write key=value, e.g. learning_rate=2e-5")):
        with pytest.raises(ConfigError) as err:
            load_config(str(cfg), bad)
        assert message in str(err.value) and "\n" not in str(err.value), err.value
    for text, message in (
            ("model: m\ndata:\n  - pth: a.jsonl\n", f"unknown key 'data.0.pth' in training config {cfg}; "
                                                       "did you mean 'data.0.path'?"),
            ("filters:\n  dedp: x\ndata:\n  - path: a\n", "did you mean 'filters.dedup'?"),
            ("data:\n  - path: a\n    weight: x\n", f"data.0.weight='x': expected float (from training config {cfg})"),
            ("data:\n  - format: marco\n", "data.0.path has no value and no default"),
            ("model: m\n", "no data sources")):
        cfg.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError) as err:
            load_config(str(cfg))
        assert message in str(err.value) and "\n" not in str(err.value), err.value


def test_shipped_training_configs_load():
    from marco_eval.paths import PACKAGE_DIR
    from marco_eval.train.sft import load_config

    import yaml

    for name in ("sft_cpu_small", "sft_qwen2_7b"):
        path = PACKAGE_DIR.parent / "training" / "configs" / f"{name}.yaml"
        raw, c = yaml.safe_load(path.read_text(encoding="utf-8")), load_config(str(path))
        # every source and setting the YAML names reaches the config as written
        assert [{key: getattr(d, key) for key in r} for d, r in zip(c.data, raw["data"])] == raw["data"]
        assert (c.model, c.output_dir) == (raw["model"], raw["output_dir"])


def test_bf16_on_a_cpu_only_machine_tells_the_trainer_so(tmp_path, monkeypatch):
    # transformers refuses bf16 without an accelerator unless use_cpu is set; bf16 autocast is
    # what a CPU with avx512_bf16 wants, so precision=bf16 must build trainer settings there.
    from marco_eval.train import sft

    monkeypatch.setattr(sft, "_has_accelerator", lambda: False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: m\ndata:\n  - path: a.jsonl\n", encoding="utf-8")
    args = {p: sft.sft_args(sft.load_config(str(cfg), [f"precision={p}"]), tmp_path / "s")
            for p in ("bf16", "fp32")}
    assert args["bf16"].bf16 and args["bf16"].use_cpu
    assert not args["fp32"].bf16 and not args["fp32"].use_cpu  # fp32 leaves the device to the trainer


# ---------------------------------------------------------------------- slow: real model
def worked_rows(n: int) -> list[dict]:
    """Tiny invented CoT rows: generated problems with their recorded steps as the thought."""
    return [{"instruction": p.question, "response": tagged("\n\n".join(p.steps), p.answer)}
            for p in problems.generate(n, seed=5, langs=("en",))]


def tiny_config(tmp_path, smollm_path, *overrides):
    """Three constant-rate steps on 4 worked rows into tmp_path/ckpt."""
    from marco_eval.train.sft import load_config

    write_jsonl_atomic(tmp_path / "rows.jsonl", worked_rows(4))
    return load_config(None, [f"model={smollm_path}", f"output_dir={tmp_path / 'ckpt'}",
                              f"data=[{{path: '{tmp_path / 'rows.jsonl'}'}}]", "system_prompt=''", "max_length=160",
                              "lr_scheduler=constant", "warmup=0", "max_steps=3", "per_device_batch_size=2",
                              "gradient_accumulation_steps=1", "precision=fp32", *overrides])


@pytest.mark.slow
def test_sft_on_cpu_loss_falls_and_checkpoint_generates_through_marco_mcts(tmp_path, smollm_path, one_thread):
    pytest.importorskip("trl")
    from marco_eval.lm import MarcoMCTSLM
    from marco_eval.train.sft import train

    out = tmp_path / "ckpt"
    summary = train(tiny_config(tmp_path, smollm_path, "learning_rate=3e-4"), log=lambda s: None,
                    command="marco-eval train toy.yaml")
    losses = [e["loss"] for e in summary["losses"]]
    assert len(losses) == 3 and losses[-1] < 0.7 * losses[0], losses
    assert summary["data"]["rows"]["kept"] == 4 and summary["train_rows"] == 4
    assert not (tmp_path / "ckpt.tmp").exists()  # staged, then renamed into place
    assert (out / "chat_template.jinja").is_file()
    assert json.loads((out / "training_summary.json").read_text())["command"] == "marco-eval train toy.yaml"

    lm = MarcoMCTSLM(pretrained=str(out), config="base_cot", max_gen_toks=6)
    assert "<|im_start|>" in lm.engine.prompt_text("What is 2 + 2?")  # the saved chat template is used
    req = SimpleNamespace(args=("Sam has 3 apples and buys 4 more. How many apples?", {"until": ["</Output>"]}))
    text = lm.generate_until([req], disable_tqdm=True)[0]
    assert isinstance(text, str) and 0 < lm.stats[0]["generated_tokens"] <= 6


@pytest.mark.slow
def test_lora_sft_merges_into_a_standard_checkpoint(tmp_path, smollm_path, one_thread):
    pytest.importorskip("peft")
    import torch
    from transformers import AutoModelForCausalLM

    from marco_eval.store import checkpoint_digest
    from marco_eval.train.sft import assemble, train

    out = tmp_path / "ckpt"
    summary = train(tiny_config(tmp_path, smollm_path, "learning_rate=3e-3", "lora.r=8", "lora.dropout=0"),
                    log=lambda s: None)
    losses = [e["loss"] for e in summary["losses"]]
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "chat_template.jinja").is_file()
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)  # no peft needed to load it
    base = AutoModelForCausalLM.from_pretrained(smollm_path, dtype=torch.float32)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    moved = [n for (n, a), (_, b) in zip(merged.named_parameters(), base.named_parameters()) if not torch.equal(a, b)]
    assert moved and all(n.endswith("proj.weight") for n in moved)  # only the adapted linears changed
    ids = torch.tensor([[1, 2, 3, 4]])
    assert not torch.allclose(merged(ids).logits, base(ids).logits)

    # what gets committed (the summary and adapter/) rebuilds the same weights, bit for bit
    kept = tmp_path / "results"
    shutil.copytree(out / "adapter", kept / "adapter")
    shutil.copy(out / "training_summary.json", kept)
    lines = []
    again = assemble(kept / "training_summary.json", tmp_path / "again", log=lines.append)
    assert checkpoint_digest(again) == summary["checkpoint_sha256"] == checkpoint_digest(out)
    assert "the same weights as the trained checkpoint" in lines[0]
    assert (again / "chat_template.jinja").is_file() and not (tmp_path / "again.tmp").exists()
    # a summary written before training recorded the digest keeps it in run.json beside it
    older = {k: v for k, v in summary.items() if k != "checkpoint_sha256"}
    (kept / "training_summary.json").write_text(json.dumps(older))
    (kept / "run.json").write_text(json.dumps({"checkpoint_sha256": "0" * 64}))
    assemble(kept / "training_summary.json", tmp_path / "third", log=lines.append)
    assert "differ from the trained checkpoint's in the last bits" in lines[1]


def test_assemble_refuses_what_it_cannot_rebuild(tmp_path, capsys):
    from marco_eval.cli import main

    full = tmp_path / "full" / "training_summary.json"
    full.parent.mkdir()
    full.write_text(json.dumps({"config": {"model": "smollm2-135m", "lora": {"r": 0}}}))
    lora = tmp_path / "lora" / "training_summary.json"
    lora.parent.mkdir()
    lora.write_text(json.dumps({"config": {"model": "smollm2-135m", "lora": {"r": 8}}}))
    (tmp_path / "junk.json").write_text("{")
    for summary, says in [(full, "not a LoRA run's summary"), (lora, "no adapter_config.json"),
                          (tmp_path / "junk.json", "not a training_summary.json"),
                          (tmp_path / "missing.json", "not a training_summary.json")]:
        assert main(["train", "--assemble", str(summary), str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tmp").exists()


@pytest.mark.slow
def test_synth_command_on_smollm(tmp_path, smollm_path, capsys, one_thread):
    """smollm2 cannot do arithmetic: expect few or no rows, but every row kept must be correct
    and well formed, and the counts must add up."""
    from marco_eval.cli import main

    out = tmp_path / "synth.jsonl"
    rc = main(["synth", "--out", str(out), "--problems", "2", "--model", smollm_path, "--config", "mcts_step",
               "--set", "simulations=1", "--set", "children=2", "--max-gen-toks", "24",
               "--write-problems", str(tmp_path / "problems.jsonl")])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["searched"] == 2 and summary["rollouts"] >= 2
    gold = {p["id"]: p["answer"] for p in read_json_rows(tmp_path / "problems.jsonl")}
    rows = read_json_rows(out) if out.exists() else []
    assert summary["rows"] == len(rows)
    for row in rows:
        assert data.well_formed(row["response"]) and row["answer"] == gold[row["problem_id"]]
    progress = read_json_rows(synth.progress_path(out))
    assert len(progress) == 3 and sum(p["kept"] for p in progress[1:]) == len(rows)
