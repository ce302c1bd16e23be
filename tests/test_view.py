"""`marco-eval view` (issue #46) without a browser: what the page embeds from tree files, a
request store and lm-eval samples, and one-line errors that leave no file half-written.
tests/test_view_browser.py drives the page itself."""

import json
import re

import pytest
from view_fixtures import MARKUP, write_samples, write_synthetic_run, write_tree_run

from marco_eval.cli import main as cli_main
from marco_eval.view import write_view


def embedded(html: str, block: str):
    m = re.search(rf'<script type="application/json" id="{block}">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


def test_the_page_holds_every_tree_and_says_where_the_pick_went_wrong(tmp_path, capsys):
    docs = write_tree_run(tmp_path / "run", ["right", "found", "never"])
    assert cli_main(["view", str(tmp_path / "run")]) == 0
    out = tmp_path / "run" / "view.html"
    assert f"wrote {out} (3 problems)" in capsys.readouterr().out
    html = out.read_text()
    rows = embedded(html, "problems")
    assert [(r["key"], r["right"], r["found"]) for r in rows] == [
        ("mgsm_en/0", True, True), ("mgsm_en/1", False, True), ("mgsm_en/2", False, False)]
    assert [r["answer"] for r in rows] == [d["answer"] for d in docs]
    detail = embedded(html, "d-1")
    assert detail["text"] == [n["action_text"] for n in docs[1]["nodes"]]
    assert detail["chosen"] == docs[1]["chosen_path"]
    assert detail["r_ok"] == [r["answer"] == rows[1]["gold"] for r in docs[1]["rollouts"]]
    # Nothing fetched: no address but SVG's namespace name, no element that loads one.
    assert "http" not in html.replace("http://www.w3.org/2000/svg", "")
    assert not re.search(r"\b(src|href)=|fetch\(|XMLHttpRequest|url\(|@import", html)


def test_texts_cannot_end_a_data_block(tmp_path):
    write_tree_run(tmp_path / "run", ["right"])
    html = write_view(tmp_path / "run")[0].read_text()
    assert MARKUP not in html and html.count("</script>") == html.count("<script")
    assert MARKUP in embedded(html, "d-0")["prompt"]  # the text itself reads back whole


def test_a_store_without_texts_gives_rollouts_by_simulation(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    records = [{"key": f"k{d}", "task": "mgsm_en", "doc_id": d, "text": "<Output>4</Output>", "answer": pick,
                "rollouts": [{"answer": a, "reward": 0.5, "tokens": 30, "finish": "eos", "simulation": s}
                             for s, a in ((1, "4"), (1, "5"), (2, "6"))]}
               for d, pick in ((0, "4"), (1, "4"))]
    (run / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    write_samples(run, {0: "4", 1: "6"})
    html = write_view(run)[0].read_text()
    rows = embedded(html, "problems")
    assert [(r["src"], r["right"], r["found"]) for r in rows] == [("store", True, True), ("store", False, True)]
    detail = embedded(html, "d-1")
    assert detail["parent"] == [None, 0, 0] and detail["visits"] == [3, 2, 1]
    assert detail["label"] == ["root", "simulation 1", "simulation 2"] and detail["r_node"] == [1, 1, 2]
    assert detail["text"] == [None, None, None] and detail["r_text"] == [None] * 3
    assert detail["r_ok"] == [False, False, True]


def test_a_tree_stands_for_its_problem_and_the_store_adds_the_rest(tmp_path):
    run = tmp_path / "run"
    write_tree_run(run, ["right"])
    record = {"key": "k", "task": "mgsm_en", "text": "", "answer": "1",
              "rollouts": [{"answer": "1", "reward": 0.9, "tokens": 3, "finish": "eos", "simulation": 1}]}
    (run / "requests.jsonl").write_text("".join(json.dumps({**record, "doc_id": d}) + "\n" for d in (0, 5)))
    rows = embedded(write_view(run)[0].read_text(), "problems")
    assert [(r["doc"], r["src"]) for r in rows] == [(0, "tree"), (5, "store")]


def test_a_rebuild_gives_the_same_bytes(tmp_path):
    write_synthetic_run(tmp_path / "run", 5)
    first = write_view(tmp_path / "run", tmp_path / "a.html")[0].read_bytes()
    assert write_view(tmp_path / "run", tmp_path / "b.html")[0].read_bytes() == first


@pytest.mark.parametrize("damage, says", [
    (lambda run: (run / "trees" / "mgsm_en_0_0_0.json").write_text("{"), "mgsm_en_0_0_0.json is not JSON"),
    (lambda run: (run / "trees" / "mgsm_en_0_0_0.json").write_text(json.dumps(
        {"nodes": [{"id": 0, "parent": None}], "rollouts": [], "chosen_path": [0]})), "node 0 lacks visits, value"),
    (lambda run: (run / "trees" / "mgsm_en_0_1_7.json").write_text((run / "trees" / "mgsm_en_0_0_0.json").read_text()),
     "are both trees of mgsm_en doc_id 0"),
    (lambda run: (run / "requests.jsonl").write_text('{"task": "mgsm_en", "doc_id": 9, "rollouts": []}\n' * 2),
     "mgsm_en doc_id 9 again"),
    (lambda run: (run / "requests.jsonl").write_text('{"task": "mgsm_en", "doc_id": 9}\n'), "has no rollouts"),
    (lambda run: (run / "model" / "samples_mgsm_en_2026-01-02T03-04-05.678901.jsonl").write_text("[1]\n"),
     "not a JSON object"),
])
def test_bad_input_is_one_line_and_leaves_the_old_page(tmp_path, capsys, damage, says):
    run = tmp_path / "run"
    write_tree_run(run, ["right"])
    out = tmp_path / "page.html"
    out.write_text("the old page")
    damage(run)
    assert cli_main(["view", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("marco-eval: error: ") and err.count("\n") == 1 and says in err, err
    assert out.read_text() == "the old page" and sorted(p.name for p in tmp_path.iterdir()) == ["page.html", "run"]


def test_a_folder_without_trees_or_store_names_the_fix(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli_main(["view", str(tmp_path / "empty")]) == 2
    assert "no tree files" in (err := capsys.readouterr().err) and "tree_dir=" in err and "--store" in err
    assert cli_main(["view", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.html"))


def test_a_tree_folder_given_as_the_run_finds_the_samples_beside_it(tmp_path):
    write_tree_run(tmp_path / "run", ["right"])
    rows = embedded(write_view(tmp_path / "run" / "trees", tmp_path / "p.html")[0].read_text(), "problems")
    assert rows[0]["right"] is True
