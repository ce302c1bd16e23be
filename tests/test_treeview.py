"""`marco-eval tree show` (issue #20): the question, the gold answer when known, the answer's
verdict, the chosen path and a legend of the marks, on a tree the real search exported."""

import json
import re

import pytest
from fakes import ScriptedPolicy

from marco_eval.answers import extract_answer
from marco_eval.cli import main as cli_main
from marco_eval.search import Search, SearchConfig, drive
from marco_eval.search.export import tree_document
from marco_eval.treeview import LEGEND, find_gold, load_tree, render_text, tree_identity

QUESTION = "Solve the problem.\n\nQuestion: A farmer has 3 pens of 2 goats and buys 1 more goat. How many goats?"
STAMP = "2026-01-02T03-04-05.678901"


def script(prefix, seed):
    """Two blank-line steps, then the answer 7."""
    done = prefix.count("Step ")
    return "".join(f"Step {i}.\n\n" for i in range(done, 2)) + "<Output>7</Output>\x00"


def write_run(root, doc_id=3, target="7", prompt=QUESTION, **cfg):
    """An lm_eval --output_path RUN --log_samples run with tree_dir=RUN/trees: one tree, one samples file."""
    pol = ScriptedPolicy(script)
    search = Search(SearchConfig(simulations=3, children=2, **cfg), pol.encode(prompt), pol, max_new_tokens=200,
                    until=("</Output>",), answer_fn=lambda t: extract_answer(t, "flexible"))
    result = drive(search, pol)
    tree = root / "trees" / f"mgsm_en_{doc_id}_0_0.json"
    tree.parent.mkdir(parents=True)
    tree.write_text(json.dumps(tree_document(search, result, 0, prompt)))
    samples = root / "qwen" / f"samples_mgsm_en_{STAMP}.jsonl"
    samples.parent.mkdir(parents=True)
    rows = [{"doc_id": d, "target": t, "filter": f, "filtered_resps": ["7"]}
            for d, t in ((doc_id - 1, "99"), (doc_id, target)) for f in ("strict-match", "flexible-extract")]
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tree, samples


def test_show_prints_question_gold_verdict_chosen_path_and_legend(tmp_path, capsys):
    tree, samples = write_run(tmp_path / "run")
    assert cli_main(["tree", "show", str(tree)]) == 0
    out = capsys.readouterr().out
    doc = load_tree(tree)
    lines = out.splitlines()
    # The question: the whole prompt, line by line.
    assert lines[0] == "question (the prompt, 3 lines):"
    assert [ln[4:] for ln in lines[1:4]] == QUESTION.split("\n")
    # The gold answer, found in the samples beside the tree folder (doc_id 3, not doc 2's 99), and the verdict.
    assert f"gold: '7' from {samples}" in out and "answer: '7' (correct)" in out
    # The chosen path, node by node, with its actions.
    path = doc["chosen_path"]
    assert len(path) > 2 and "chosen path: " + " → ".join(f"[{i}]" for i in path) in out
    for i in path[1:]:
        assert re.search(rf"^  \[{i}\]( T)?  \"{re.escape(doc['nodes'][i]['action_text'].replace(chr(10), '⏎'))}\"$",
                         out, re.M)
    assert '  then its rollout  "<Output>7"' in out  # the rest of the answer, after the path's last node
    # The tree marks the same path, and the legend explains every mark it uses.
    starred = [int(m) for m in re.findall(r"\[(\d+)\]\*", out)]
    assert sorted(starred) == sorted(path)
    assert lines[-1] == LEGEND
    for mark in ("* on the chosen path", "T terminal", "R a reflection", "N visits", "Q mean reward", "⏎", "…"):
        assert mark in LEGEND


def test_gold_from_the_option_or_a_samples_file_and_a_wrong_answer(tmp_path, capsys):
    tree, samples = write_run(tmp_path / "run", target="8")
    assert cli_main(["tree", "show", str(tree), "--gold", "7.0"]) == 0
    assert "gold: '7.0' from --gold\nanswer: '7' (correct)" in capsys.readouterr().out
    assert cli_main(["tree", "show", str(tree), "--samples", str(samples.parent)]) == 0
    assert "answer: '7' (wrong)" in capsys.readouterr().out
    # A samples file without this doc is an error when named, one line.
    other = tmp_path / "other" / f"samples_mgsm_en_{STAMP}.jsonl"
    other.parent.mkdir()
    other.write_text(json.dumps({"doc_id": 50, "target": "1"}) + "\n")
    assert cli_main(["tree", "show", str(tree), "--samples", str(other)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no target for mgsm_en doc_id 3" in err


def test_gold_unknown_says_how_to_give_it(tmp_path):
    tree, samples = write_run(tmp_path / "run")
    samples.unlink()
    gold, note = find_gold(tree)
    assert gold is None and "no lm-eval samples of mgsm_en doc_id 3" in note and "--gold" in note
    text = render_text(load_tree(tree), gold=gold, gold_note=note)
    assert "gold: unknown: no lm-eval samples" in text and "answer: '7'\n" in text  # no verdict without gold
    renamed = tree.rename(tree.with_name("mine.json"))
    assert tree_identity(renamed) is None and find_gold(renamed)[0] is None


def test_a_text_gold_gets_no_verdict_and_a_long_prompt_shows_its_end(tmp_path, capsys):
    prompt = "\n".join(f"Example {i}: ..." for i in range(30)) + "\nTranslate: 你好"
    tree, _ = write_run(tmp_path / "run", target="Hello there", prompt=prompt)
    assert cli_main(["tree", "show", str(tree), "--prompt-lines", "2"]) == 0
    out = capsys.readouterr().out
    assert "question (the prompt, 31 lines):\n  │ … 29 earlier lines" in out
    assert "  │ Example 29: ...\n  │ Translate: 你好\n" in out
    assert "gold: 'Hello there'" in out and "(correct)" not in out and "(wrong)" not in out
    assert cli_main(["tree", "show", str(tree), "--prompt-lines", "0"]) == 0
    assert "  │ Example 0: ..." in capsys.readouterr().out


def test_reflection_nodes_are_marked_R():
    doc = {"prompt": "Q", "answer": None, "chosen_path": [0, 1], "rollouts": [],
           "nodes": [{"id": 0, "parent": None, "action_text": "", "visits": 1, "value": 0.5, "terminal": False,
                      "children": [1]},
                     {"id": 1, "parent": 0, "action_text": "Wait!", "visits": 1, "value": 0.5, "terminal": False,
                      "finish": "reflection", "children": []}]}
    assert '[1]* N=1 Q=0.500 R  "Wait!"' in render_text(doc)


@pytest.mark.parametrize("content, message", [("[1, 2", "is not JSON"), ('{"nodes": []}', "not a marco-eval tree file")])
def test_not_a_tree_is_one_line(tmp_path, capsys, content, message):
    f = tmp_path / "x.json"
    f.write_text(content)
    assert cli_main(["tree", "show", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
