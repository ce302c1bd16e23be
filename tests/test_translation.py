"""Translation tasks: the colloquial set, the WMT22 loader, output extraction, corpus
metrics and signatures (against sacrebleu itself), COMET's errors, and the lm-eval path."""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu

from marco_eval import translation
from marco_eval.answers import extract_output_text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tasks"))
import translation_utils as tu  # noqa: E402

CJK = re.compile(r"[\u4e00-\u9fff]")


# ---------------------------------------------------------------- the colloquial set
def _raw_rows():
    return [json.loads(line) for line in tu.COLLOQUIAL_PATH.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_colloquial_set_is_well_formed():
    rows = _raw_rows()
    assert len(rows) >= 150
    assert all(set(r) == {"id", "category", "zh", "en"} for r in rows)
    assert len({r["id"] for r in rows}) == len(rows)
    assert len({r["zh"] for r in rows}) == len(rows)  # no sentence twice
    assert {r["category"] for r in rows} == set(tu.CATEGORIES)
    for category in tu.CATEGORIES:
        assert sum(r["category"] == category for r in rows) >= 10, category
    for r in rows:
        zh, en = r["zh"].strip(), r["en"].strip()
        assert zh and en, r["id"]
        letters = [c for c in zh if not c.isspace() and c.isalnum()]
        assert len(CJK.findall(zh)) >= 0.6 * len(letters), r["id"]  # "yyds", "CP" are fine in Chinese text
        assert en.isascii() and en.isprintable() and not CJK.search(en), r["id"]
        assert en[0].isupper() or en[0] in "\"'", r["id"]
    lengths = sorted(len(r["zh"]) for r in rows)
    assert lengths[0] <= 12 and lengths[-1] >= 50  # short quips and long reviews both


def test_colloquial_loader_docs_and_prompt():
    docs = tu.read_colloquial()
    assert len(docs) == len(_raw_rows())
    doc = docs[0]
    assert doc["references"] == [_raw_rows()[0]["en"]] and tu.doc_to_target(doc) == doc["references"][0]
    prompt = tu.doc_to_text_colloquial(doc)
    assert prompt.endswith(f"Chinese: {doc['zh']}")
    assert "<Thought>" in prompt and "<Output>" in prompt and "colloquial" not in tu.doc_to_text_wmt22(doc)


@pytest.mark.parametrize("line, problem", [
    ('{"id": "a", "category": "chat", "zh": "你好"}', "missing or empty en"),
    ('{"id": "a", "category": "poetry", "zh": "你好", "en": "Hi"}', "category 'poetry'"),
    ('{"id": "a", "category": "chat", "zh": "你好", "en": "Hi"', "not JSON"),
])
def test_colloquial_loader_names_the_bad_line(tmp_path, line, problem):
    f = tmp_path / "set.jsonl"
    f.write_text('{"id": "ok", "category": "chat", "zh": "好的", "en": "Okay."}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=f"set.jsonl:2: {re.escape(problem)}"):
        tu.read_colloquial(f)


def test_colloquial_loader_rejects_duplicate_ids(tmp_path):
    f = tmp_path / "set.jsonl"
    row = '{"id": "x", "category": "chat", "zh": "好的", "en": "Okay."}\n'
    f.write_text(row + row, encoding="utf-8")
    with pytest.raises(ValueError, match="duplicate id 'x'"):
        tu.read_colloquial(f)


# ---------------------------------------------------------------- WMT22
def test_wmt22_loader_reads_the_shared_copy():
    if not os.environ.get(tu.WMT22_ENV):
        pytest.skip("WMT22_ZHEN_DIR is unset and ../shared/data/wmt22_zhen is absent")
    test = tu.load_wmt22_zh_en()["test"]
    assert len(test) == 1875
    assert all(len(refs) == 2 and all(r.strip() for r in refs) for refs in test["references"])
    first = test[0]
    assert CJK.search(first["zh"]) and first["references"][0] != first["references"][1]
    assert tu.doc_to_text_wmt22(first).endswith(first["zh"])


def test_wmt22_loader_errors(tmp_path, monkeypatch):
    monkeypatch.setenv(tu.WMT22_ENV, str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="WMT22_ZHEN_DIR=.*not a directory"):
        tu.load_wmt22_zh_en()
    monkeypatch.setenv(tu.WMT22_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="must hold generaltest2022.zh-en.src.zh"):
        tu.load_wmt22_zh_en()
    (tmp_path / tu.WMT22_SOURCE).write_text("一\n二\n", encoding="utf-8")
    (tmp_path / "generaltest2022.zh-en.ref.A.en").write_text("One\nTwo\n")
    (tmp_path / "generaltest2022.zh-en.ref.B.en").write_text("One\n")
    with pytest.raises(ValueError, match="ref.B.en has 1 lines.*line-aligned"):
        tu.load_wmt22_zh_en()
    (tmp_path / "generaltest2022.zh-en.ref.B.en").write_text("1\n2\n")
    docs = tu.load_wmt22_zh_en()["test"]
    assert docs["references"] == [["One", "1"], ["Two", "2"]]  # A before B


# ---------------------------------------------------------------- output extraction
@pytest.mark.parametrize("completion, expected", [
    ("<Thought>\n淘宝 is an e-commerce site; 绝绝子 means amazing.\n</Thought>\n<Output>\nThis shop is amazing!\n</Output>",
     "This shop is amazing!"),
    # lm-eval cuts at the stop string, so the closing tag is usually gone
    ("<Thought>\nslang for broke\n</Thought>\n<Output>I'm flat broke.", "I'm flat broke."),
    ("<Thought>a</Thought>\n<Output>“Super fast shipping, thanks!”</Output>", "Super fast shipping, thanks!"),
    ("<Thought>a</Thought>\n<Output>Translation: Runs large.\nOrder a size down.</Output>", "Runs large. Order a size down."),
    ("<Thought>a</Thought>\n<Output>\"Hi,\" she said, \"bye.\"</Output>", "\"Hi,\" she said, \"bye.\""),
    # the last Output block wins (a draft, then the final one)
    ("<Output>draft</Output>\n<Thought>better</Thought>\n<Output>Final version.</Output>", "Final version."),
    # no Output tags: the last line after the thought, label removed
    ("<Thought>\nthinking\n</Thought>\n\nHere is my translation:\n\n**English:** Long time no see!", "Long time no see!"),
    # still thinking when the budget ran out: no translation
    ("<Thought>\nThe word 躺平 means", ""),
    ("<Thought>done</Thought>\n<Output>   </Output>", ""),
    ("Just the translation, no tags.", "Just the translation, no tags."),
    ("", ""),
])
def test_extract_output_text(completion, expected):
    assert extract_output_text(completion) == expected


def test_output_filter_keeps_the_shape():
    resps = [["<Output>A.</Output>", "<Thought>x"], ["B."]]
    assert tu.output_text_filter(resps, [{}, {}]) == [["A.", ""], ["B."]]


# ---------------------------------------------------------------- corpus metrics
HYPS = ["The cat sat on the mat.", "It is raining cats and dogs today.", "I am so broke right now."]
REFS_A = ["The cat sat on the mat.", "It's pouring today.", "I'm flat broke right now."]
REFS_B = ["A cat was sitting on the mat.", "It is raining really hard today.", "I have no money at the moment."]


def _items(*ref_streams):
    return [(tuple(refs), hyp) for refs, hyp in zip(zip(*ref_streams), HYPS)]


@pytest.mark.parametrize("name, direct", [
    ("bleu", lambda h, r: sacrebleu.corpus_bleu(h, r).score),
    ("chrf++", lambda h, r: sacrebleu.corpus_chrf(h, r, word_order=2).score),
    ("ter", lambda h, r: sacrebleu.corpus_ter(h, r).score),
])
def test_corpus_metrics_match_sacrebleu(name, direct):
    one, two = _items(REFS_A), _items(REFS_A, REFS_B)
    assert translation.corpus_score(name, one) == pytest.approx(direct(HYPS, [REFS_A]))
    assert translation.corpus_score(name, two) == pytest.approx(direct(HYPS, [REFS_A, REFS_B]))
    assert translation.corpus_score(name, one) != pytest.approx(translation.corpus_score(name, two))
    assert translation.corpus_signature(name, one).startswith("nrefs:1|")
    assert translation.corpus_signature(name, two).startswith("nrefs:2|")
    assert translation.corpus_signature(name, two).endswith(f"version:{sacrebleu.__version__}")


def test_corpus_bleu_is_not_a_mean_of_sentence_scores():
    items = _items(REFS_A)
    mean = sum(sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(HYPS, REFS_A)) / len(HYPS)
    corpus = translation.corpus_score("bleu", items)
    assert corpus == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS_A]).score)
    assert abs(corpus - mean) > 1.0  # n-gram counts pooled over the corpus, not averaged scores


def test_signatures_name_each_metrics_settings():
    items = _items(REFS_A, REFS_B)
    assert "tok:13a" in translation.corpus_signature("bleu", items)
    assert "nw:2" in translation.corpus_signature("chrf++", items)  # chrF++, not chrF
    assert "tok:tercom" in translation.corpus_signature("ter", items)


def test_variable_reference_counts_and_bad_references():
    items = [(("The cat sat.", "A cat sat."), "The cat sat."), (("Hello.",), "Hello.")]
    assert translation.corpus_signature("bleu", items).startswith("nrefs:var|")
    assert translation.corpus_score("chrf++", items) == pytest.approx(100.0)
    with pytest.raises(ValueError, match=r"sentence\(s\) \[1\] have an empty reference"):
        translation.corpus_score("bleu", [(("x",), "x"), (("",), "y")])
    with pytest.raises(ValueError, match="unknown translation metric 'meteor'"):
        translation.corpus_score("meteor", items)


def test_process_results_feeds_every_metric_the_same_item(monkeypatch):
    monkeypatch.delenv(translation.COMET_MODEL_ENV, raising=False)
    out = tu.process_results({"zh": "你好", "references": ["Hi.", "Hello."]}, ["Hello."])
    assert set(out) == {"bleu", "chrf++", "ter", "bleu_signature", "chrf++_signature", "ter_signature"}
    assert set(out.values()) == {(("Hi.", "Hello."), "Hello.")}


# ---------------------------------------------------------------- COMET (optional)
def test_comet_errors_are_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.delenv(translation.COMET_MODEL_ENV, raising=False)
    from marco_eval.errors import UserError

    with pytest.raises(UserError, match="set MARCO_EVAL_COMET_MODEL"):
        translation.comet_model_path()
    with pytest.raises(FileNotFoundError, match="no COMET checkpoint at .*checkpoints/model.ckpt"):
        translation.comet_model_path(str(tmp_path))
    monkeypatch.setitem(sys.modules, "comet", None)  # the [comet] extra is not installed
    with pytest.raises(RuntimeError, match=r"pip install 'marco-eval\[comet\]'"):
        translation.check_comet(str(tmp_path))
    monkeypatch.setenv(translation.COMET_MODEL_ENV, str(tmp_path))
    with pytest.raises(RuntimeError, match="optional extra"):  # before any generation
        tu.load_colloquial_zh_en()


def test_comet_averages_over_references_then_segments(tmp_path, monkeypatch):
    calls = []

    class FakeModel:
        def predict(self, rows, batch_size, gpus, progress_bar):
            calls.append(rows)
            return type("Prediction", (), {"scores": [0.9 if r["mt"] == r["ref"] else 0.5 for r in rows]})

    fake = type(sys)("comet")
    fake.load_from_checkpoint = lambda path: FakeModel()
    monkeypatch.setitem(sys.modules, "comet", fake)
    translation._load_comet.cache_clear()
    ckpt = tmp_path / "checkpoints" / "model.ckpt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"")
    score = translation.comet_score(["一", "二"], ["One", "Two"], [["One", "1"], ["Two"]], path=str(tmp_path))
    assert score == pytest.approx(((0.9 + 0.5) / 2 + 0.9) / 2)
    assert [r["ref"] for r in calls[0]] == ["One", "1", "Two"] and calls[0][0]["src"] == "一"
    translation._load_comet.cache_clear()


# ---------------------------------------------------------------- through lm-eval (no model)
def _scripted_lm(answers: dict[str, str]):
    from lm_eval.api.model import LM

    class ScriptedTranslator(LM):
        """Answers each prompt with a canned completion, found by its Chinese sentence."""

        def generate_until(self, requests, disable_tqdm=False):
            return [answers[req.args[0].rsplit("Chinese: ", 1)[1]] for req in requests]

        def loglikelihood(self, requests, disable_tqdm=False):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests, disable_tqdm=False):
            raise NotImplementedError

    return ScriptedTranslator()


def test_lm_eval_scores_the_output_text_at_corpus_level(monkeypatch):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    monkeypatch.delenv(translation.COMET_MODEL_ENV, raising=False)
    docs = tu.read_colloquial()[:6]
    shapes = ["<Thought>\nok\n</Thought>\n<Output>{}", "<Thought>ok</Thought>\n{}", "<Thought>{}"]
    answers = {d["zh"]: shapes[i % 3].format(d["references"][0] if i % 2 == 0 else "Whatever, I guess.")
               for i, d in enumerate(docs)}
    tasks = TaskManager(include_path=str(tu.COLLOQUIAL_PATH.parent), include_defaults=False)  # ours only: fast
    results = simple_evaluate(model=_scripted_lm(answers), tasks=["colloquial_zh_en"], limit=6, task_manager=tasks)
    scores = results["results"]["colloquial_zh_en"]
    hyps = [extract_output_text(answers[d["zh"]]) for d in docs]
    refs = [[d["references"][0] for d in docs]]
    assert hyps[0] == docs[0]["references"][0] and hyps[1] == "Whatever, I guess." and hyps[2] == ""
    assert scores["bleu,output"] == pytest.approx(sacrebleu.corpus_bleu(hyps, refs).score)
    assert scores["chrf++,output"] == pytest.approx(sacrebleu.corpus_chrf(hyps, refs, word_order=2).score)
    assert scores["ter,output"] == pytest.approx(sacrebleu.corpus_ter(hyps, refs).score)
    for name in ("bleu", "chrf++", "ter"):
        assert scores[f"{name}_signature,output"].startswith("nrefs:1|")
    assert results["higher_is_better"]["colloquial_zh_en"]["ter"] is False
    assert "comet,output" not in scores


# ---------------------------------------------------------------- real model, lm_eval CLI
@pytest.mark.slow
def test_lm_eval_cli_translation_on_smollm(tmp_path, smollm_path):
    out = tmp_path / "out"
    cmd = [os.path.join(os.path.dirname(sys.executable), "lm_eval"), "--model", "marco_mcts",
           "--model_args", f"pretrained={smollm_path},config=model_configs/base_cot.yaml,dtype=float32",
           "--tasks", "colloquial_zh_en", "--limit", "3", "--gen_kwargs", "max_gen_toks=40",
           "--output_path", str(out), "--log_samples"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bleu_signature" in proc.stdout and "chrf++" in proc.stdout and "ter" in proc.stdout
    results = json.load(open(glob.glob(f"{out}/**/results_*.json", recursive=True)[0]))
    scores = results["results"]["colloquial_zh_en"]
    assert 0 <= scores["bleu,output"] <= 100 and 0 <= scores["chrf++,output"] <= 100 and scores["ter,output"] >= 0
    assert scores["bleu_signature,output"] == f"nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:{sacrebleu.__version__}"
    assert "nw:2" in scores["chrf++_signature,output"] and "tok:tercom" in scores["ter_signature,output"]
    samples = glob.glob(f"{out}/**/samples_colloquial_zh_en_*.jsonl", recursive=True)
    lines = [json.loads(line) for line in open(samples[0])]
    assert len(lines) == 3 and all(d["resps"][0][0] for d in lines)
    assert all(d["filtered_resps"][0] == extract_output_text(d["resps"][0][0]) for d in lines)
