"""`marco-eval bank`: every sample of every GSM8K problem kept and labelled, resumable, split
by problem, packed for committing; on the scripted fake engine."""

from __future__ import annotations

import json

import pytest

from fakes import fake_lm
from marco_eval.errors import InputError
from marco_eval.train import bank


def gsm8k_file(tmp_path, n: int = 3):
    path = tmp_path / "train.jsonl"
    rows = [{"question": f"Ann has {i} apples and buys 40 + 2 - {i} more. How many now?",
             "answer": f"{i} + 42 - {i} = 42\n#### 4{2 if i < 2 else ',042'}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def engine():
    # the seed picks the answer: half the samples right (42), half wrong (41)
    lm = fake_lm(script=lambda prefix, seed: f"Add them.\n\n<Output>{41 + seed % 2}</Output>",
                 config="self_consistency", samples=4)
    return lm.engine


def test_gsm8k_rows_become_problems_with_canonical_answers(tmp_path):
    items = bank.read_gsm8k(gsm8k_file(tmp_path))
    assert [it.problem.answer for it in items] == ["42", "42", "4042"]  # thousands separator dropped
    assert [it.index for it in items] == [0, 1, 2] and len({it.problem.id for it in items}) == 3


def test_every_sample_is_kept_labelled_and_a_rerun_resumes(tmp_path):
    items = bank.read_gsm8k(gsm8k_file(tmp_path))
    out, settings = tmp_path / "bank.jsonl", {"model": "fake", "config": "self_consistency"}
    assert bank.build_bank(items[:2], engine(), out, settings=settings, log=lambda s: None) == 2
    with open(out, "a") as f:
        f.write('{"problem_id": "torn')  # a kill in the middle of a line
    assert bank.build_bank(items, engine(), out, settings=settings, log=lambda s: None) == 1  # only the third
    had, records = bank.read_bank(out)
    assert had == settings and [r["index"] for r in records] == [0, 1, 2]
    first = records[0]
    assert "question" not in first  # GSM8K's text stays in its file
    assert len(first["samples"]) == 4
    for s in first["samples"]:
        assert s["correct"] == (s["answer"] == "42") and s["finish"] and 0 < s["reward"] <= 1
        assert s["tokens"] == len(s["token_ids"]) > 0
    assert {s["correct"] for s in first["samples"]} == {True, False}
    assert sum(1 for _ in bank.samples(records)) == 12
    with pytest.raises(InputError, match="other settings"):
        bank.build_bank(items, engine(), out, settings={"model": "other"}, log=lambda s: None)


def test_the_split_is_by_problem_fixed_and_about_a_fifth():
    ids = [f"en-gsm8k-{i:06d}" for i in range(2000)]
    splits = [bank.split_of(i) for i in ids]
    assert splits == [bank.split_of(i) for i in ids]
    assert 0.17 < splits.count("validation") / len(ids) < 0.23


def test_pack_gzips_a_bank_that_reads_the_same(tmp_path):
    items = bank.read_gsm8k(gsm8k_file(tmp_path, 2))
    out = tmp_path / "bank.jsonl"
    bank.build_bank(items, engine(), out, settings={"model": "fake"}, log=lambda s: None)
    assert bank.pack(out, tmp_path / "bank.jsonl.gz") == 2
    assert bank.read_bank(tmp_path / "bank.jsonl.gz") == bank.read_bank(out)


def test_slices_sampled_apart_merge_into_one_bank(tmp_path):
    items = bank.read_gsm8k(gsm8k_file(tmp_path))
    settings = {"model": "fake", "config": "self_consistency"}
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    bank.build_bank(items[:2], engine(), one, settings=settings, log=lambda s: None)
    bank.build_bank(items[1:], engine(), two, settings=settings, log=lambda s: None)  # overlaps on problem 1
    assert bank.merge(one, two) == 1 and bank.merge(one, two) == 0
    assert [r["index"] for r in bank.read_bank(one)[1]] == [0, 1, 2]
    assert bank.build_bank(items, engine(), one, settings=settings, log=lambda s: None) == 0  # nothing left
    other = tmp_path / "other.jsonl"
    bank.build_bank(items[:1], engine(), other, settings={"model": "other"}, log=lambda s: None)
    with pytest.raises(InputError, match="other settings"):
        bank.merge(one, other)


def test_missing_data_is_one_line(tmp_path):
    with pytest.raises(InputError, match="GSM8K_DATA_DIR"):
        bank.gsm8k_file(tmp_path / "nowhere.jsonl")
    with pytest.raises(InputError, match="marco-eval bank --out"):
        bank.read_bank(tmp_path / "none.jsonl")


def test_rft_rows_keep_distinct_correct_marked_finished_paths(tmp_path):
    from marco_eval.train.rft import reasoning_path, rft_rows

    assert reasoning_path("So 3 * 4 = 12 apples, and 12 + 1,000 = 1,012.") == ("3*4=12", "12+1000=1012")
    assert reasoning_path("3×4 = 12") == reasoning_path("three times four: 3 * 4=12") == ("3*4=12",)
    gsm = gsm8k_file(tmp_path, 1)  # gold 42
    texts = [("<Thought>\n40 + 2 = 42\n</Thought>\n<Output>42</Output>", "</Output>", 0.9),
             ("<Thought>\nAdding: 40+2 = 42.\n</Thought>\n<Output>42</Output>", "</Output>", 0.8),  # same path
             ("<Thought>\n2 + 40 = 42\n</Thought>\n<Output>42</Output>", "eos", 0.7),  # another path
             ("<Thought>\n40 + 2 = 41\n</Thought>\n<Output>41</Output>", "</Output>", 0.95),  # wrong
             ("<Thought>\n20 * 2 = 40, 40 + 2 = 42\n</Thought>\n<Output>42", "budget", 0.99),  # cut by the cap
             ("the total is 42", "eos", 0.6)]  # right number, never marked
    item = bank.read_gsm8k(gsm)[0]
    record = {"problem_id": item.problem.id, "index": 0, "split": "train", "gold": "42",
              "samples": [{"token_ids": [ord(c) for c in t], "finish": f, "reward": r, "correct": True}
                          for t, f, r in texts]}
    path = tmp_path / "bank.jsonl"
    path.write_text(json.dumps({"settings": {}}) + "\n" + json.dumps(record) + "\n")
    rows, counts = rft_rows(path, lambda ids: "".join(map(chr, ids)), data=gsm)
    assert [r["reward"] for r in rows] == [0.9, 0.7]
    assert counts == {"samples": 6, "wrong": 2, "cut": 1, "same path": 1, "rows": 2, "problems with a row": 1}
    assert rows[0]["response"] == "<Thought>\n40 + 2 = 42\n</Thought>\n<Output>42</Output>"
    assert rows[0]["instruction"].startswith("Question:") or "Ann has 0 apples" in rows[0]["instruction"]
    assert rft_rows(path, lambda ids: "".join(map(chr, ids)), data=gsm, per_problem=1)[0][0]["reward"] == 0.9
    assert rft_rows(path, lambda ids: "".join(map(chr, ids)), data=gsm, splits=("validation",))[0] == []


def test_a_packed_bank_is_read_and_resumed_in_place_of_a_missing_plain_one(tmp_path):
    items = bank.read_gsm8k(gsm8k_file(tmp_path))
    out = tmp_path / "bank.jsonl"
    bank.build_bank(items[:2], engine(), out, settings={"model": "fake"}, log=lambda s: None)
    bank.pack(out, bank.packed_path(out))
    out.unlink()  # a fresh clone holds only the committed .gz
    assert len(bank.read_bank(out)[1]) == 2
    assert bank.build_bank(items, engine(), out, settings={"model": "fake"}, log=lambda s: None) == 1
    assert [r["index"] for r in bank.read_bank(out)[1]] == [0, 1, 2]
