"""The view page (`marco-eval view`, issue #46) in headless Chromium, opened from file:// as a
user opens it: the filter changes the list, a click on a node shows its text and the rollouts
below it, a store without texts still draws, and a large run parses only the tree shown.
Chromium and Playwright as tests/browser.py sets them up (skipped without, except on CI)."""

import json

import pytest
from browser import CHROMIUM, PATIENCE_MS, need_browser, new_page
from view_fixtures import MARKUP, write_samples, write_synthetic_run, write_tree_run

from marco_eval.view import write_view


@pytest.fixture
def browser():
    need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], timeout=PATIENCE_MS)
        try:
            yield chromium
        finally:
            chromium.close()


def open_page(browser, html_path):
    page = new_page(browser)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(html_path.resolve().as_uri())
    page.wait_for_selector("body[data-ready='1']")
    return page, errors


def listed(page) -> list[str]:
    return [li.get_attribute("data-key") for li in page.query_selector_all("#list li")]


def below(doc: dict, node: int) -> list[int]:
    """The rollouts in the subtree of `node`, in file order."""
    inside, stack = set(), [node]
    while stack:
        n = stack.pop()
        inside.add(n)
        stack += doc["nodes"][n]["children"]
    return [i for i, r in enumerate(doc["rollouts"]) if r["node"] in inside]


def test_the_filter_changes_the_list_and_a_click_shows_the_node(tmp_path, browser):
    docs = write_tree_run(tmp_path / "run", ["right", "found", "never", "right"])
    page, errors = open_page(browser, write_view(tmp_path / "run")[0])
    assert listed(page) == [f"mgsm_en/{d}" for d in range(4)]
    for name, keys in (("right", [0, 3]), ("wrong", [1, 2]), ("found-not-picked", [1]), ("never-found", [2])):
        page.click(f"#filters button[data-filter='{name}']")
        assert listed(page) == [f"mgsm_en/{d}" for d in keys], name
    page.click("#filters button[data-filter='found-not-picked']")
    page.click("#list li[data-key='mgsm_en/1']")
    page.wait_for_selector("body[data-problem='mgsm_en/1']")
    doc = docs[1]
    assert len(page.query_selector_all("#tree circle")) == len(doc["nodes"])
    chosen = [int(c.get_attribute("data-node")) for c in page.query_selector_all("#tree circle.chosen")]
    assert chosen == sorted(doc["chosen_path"])
    node = doc["chosen_path"][1]
    page.click(f"#tree circle[data-node='{node}']")
    page.wait_for_selector(f"body[data-node='{node}']")
    assert page.text_content("#node-text") == doc["nodes"][node]["action_text"]
    rows = page.query_selector_all("#n-rollouts tr")
    assert [int(r.get_attribute("data-rollout")) for r in rows] == below(doc, node)
    assert MARKUP in page.text_content("#p-prompt") and page.query_selector("#p-prompt b") is None
    # The colouring switches to the nodes' values and back, the chosen node still shown.
    page.click("#mode-value")
    assert page.get_attribute("#mode-value", "class") == "on" and page.is_visible("#node")
    # The address names the problem: a reload opens it again.
    page.reload()
    page.wait_for_selector("body[data-problem='mgsm_en/1']")
    assert errors == []


def test_a_store_without_texts_still_draws_its_rollouts(tmp_path, browser):
    run = tmp_path / "run"
    run.mkdir()
    rollouts = [{"answer": a, "reward": r, "tokens": 30, "finish": "eos", "simulation": s}
                for s, a, r in ((1, "4", 0.9), (1, "5", 0.4), (2, "6", 0.7))]
    (run / "requests.jsonl").write_text(json.dumps({"key": "k", "task": "mgsm_en", "doc_id": 0, "text": "",
                                                    "answer": "4", "rollouts": rollouts}) + "\n")
    write_samples(run, {0: "6"})
    page, errors = open_page(browser, write_view(run)[0])
    page.click("#filters button[data-filter='found-not-picked']")
    page.click("#list li[data-key='mgsm_en/0']")
    assert page.is_visible("#p-notice") and "no texts" in page.inner_text("#p-notice")
    page.click("#tree circle[data-node='2']")
    page.wait_for_selector("body[data-node='2']")
    assert "keeps no texts" in page.inner_text("#node-text")
    assert [r.get_attribute("data-rollout") for r in page.query_selector_all("#n-rollouts tr")] == ["2"]
    assert errors == []


def test_a_large_run_parses_only_the_tree_it_shows(tmp_path, browser):
    write_synthetic_run(tmp_path / "run", 250, simulations=8)
    page, errors = open_page(browser, write_view(tmp_path / "run")[0])
    assert len(listed(page)) == 250 and page.evaluate("details.size") == 0
    page.click("#list li[data-key='mgsm_en/200']")
    page.wait_for_selector("body[data-problem='mgsm_en/200']")
    assert page.evaluate("details.size") == 1 and len(page.query_selector_all("#tree circle")) == 17
    assert errors == []
