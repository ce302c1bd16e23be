"""The judge round trip through the real page: export -> serve -> rate in Chromium -> kill -> resume -> summarize,
and the page's notice when the browser has no font for the source text.

Headless Debian `chromium` driven by Playwright, as tests/browser.py sets it up (skipped
without it, except on CI). The browser sees only the fonts a test gives it
(FONTCONFIG_FILE), so what it can draw does not depend on this machine's fonts.
"""

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from browser import CHROMIUM, PATIENCE_MS, need_browser, new_page
from judge_fixtures import CAREFUL, CLUMSY, SENTENCES, fontconfig_with, make_font, write_samples

from marco_eval.cli import main as cli_main
from marco_eval.judge.export import export

MARKUP = " <b>[sic]</b>"  # raw markup in a candidate must show as text, never as an element
LATIN_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")  # for the page's own text, when present


def sheet_chars(texts) -> list[str]:
    """The characters the page checks: not ASCII, not spaces."""
    return sorted({c for t in texts for c in t if ord(c) >= 0x80 and not c.isspace()})


def launch(pw, tmp_path: Path, covered: list[str]):
    """Chromium that has a font for exactly `covered` (and Latin text when DejaVu is installed)."""
    font = make_font(tmp_path / "fontgen" / "glyphs.ttf", "".join(covered))
    conf = fontconfig_with(tmp_path / "fontconfig", [font, *[f for f in [LATIN_FONT] if f.exists()]])
    return pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], timeout=PATIENCE_MS,
                              env={**os.environ, "FONTCONFIG_FILE": str(conf)})


class Server:
    """`marco-eval judge serve` in a subprocess, as a user runs it."""

    def __init__(self, sheet: Path, port: int = 0):
        self.proc = subprocess.Popen([sys.executable, "-m", "marco_eval.cli", "judge", "serve", str(sheet),
                                      "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        deadline = time.monotonic() + PATIENCE_MS / 1000
        lines = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            lines.append(line)
            if m := re.search(r"serving (http://127\.0\.0\.1:(\d+)/)", line):
                self.url, self.port = m[1], int(m[2])
                return
            if not line and self.proc.poll() is not None:
                break
        self.proc.kill()
        raise AssertionError("judge serve did not start:\n" + "".join(lines))

    def stop(self, sig=signal.SIGKILL) -> str:
        self.proc.send_signal(sig)
        out, _ = self.proc.communicate(timeout=10)
        return out


def rate_item(page, keys):
    for key in keys:
        page.keyboard.press(key)
    page.wait_for_selector("body[data-pending='0']")
    page.wait_for_selector("#save.ok")


def scores_on_page(page) -> dict:
    """{cand_id: {aspect: score}} as the page shows them (the highlighted buttons)."""
    shown = {}
    for card in page.query_selector_all("article[data-cand]"):
        for row in card.query_selector_all(".scale"):
            on = row.query_selector("button.on")
            if on:
                shown.setdefault(card.get_attribute("data-cand"), {})[row.get_attribute("data-aspect")] = int(on.inner_text())
    return shown


def keys_for(item, key, wanted):
    """The digits for slots A-adequacy, A-fluency, B-adequacy, B-fluency of this item."""
    return [str(wanted[key[c["cand_id"]]][a]) for c in item["candidates"] for a in ("adequacy", "fluency")]


def test_round_trip_in_chromium(tmp_path):
    need_browser()
    from playwright.sync_api import sync_playwright

    write_samples(tmp_path / "runs", "careful", CAREFUL)
    write_samples(tmp_path / "runs", "clumsy", [t + MARKUP for t in CLUMSY])
    sheet_path, key_path, sheet = export([f"careful={tmp_path / 'runs/careful'}", f"clumsy={tmp_path / 'runs/clumsy'}"],
                                         tmp_path / "judge" / "sheet.json", tmp_path / "judge-keys" / "sheet.key.json",
                                         seed=3)
    key = json.loads(key_path.read_text())["candidates"]
    items = sheet["items"]
    alice_scores = {"careful": {"adequacy": 5, "fluency": 4}, "clumsy": {"adequacy": 2, "fluency": 1}}
    bob_first = {"careful": {"adequacy": 4, "fluency": 4}, "clumsy": {"adequacy": 2, "fluency": 2}}
    bob_second = {"careful": {"adequacy": 4, "fluency": 4}, "clumsy": {"adequacy": 2, "fluency": 3}}

    server = Server(sheet_path)
    with sync_playwright() as pw:
        browser = launch(pw, tmp_path, sheet_chars(s for zh, en, *_ in SENTENCES for s in (zh, en)))
        try:
            errors = []
            alice = new_page(browser)  # separate contexts: separate localStorage
            bob = new_page(browser)
            for page in (alice, bob):
                page.on("pageerror", lambda e: errors.append(str(e)))

            # Alice has no ?rater=: the page asks for her name.
            alice.goto(server.url)
            alice.fill("#login-name", "alice")
            alice.keyboard.press("Enter")
            alice.wait_for_selector("body[data-ready='alice']")
            assert alice.get_attribute("body", "data-missing-glyphs") == "0"  # a font for every character
            assert not alice.is_visible("#font-warning")
            assert [c.get_attribute("data-cand") for c in alice.query_selector_all("article[data-cand]")] == \
                [c["cand_id"] for c in items[0]["candidates"]]
            cards = alice.inner_text("#cands")
            assert MARKUP.strip() in cards and alice.query_selector("#cands b") is None  # escaped, not parsed
            assert "careful" not in alice.content() and "clumsy" not in alice.content()  # blind
            # Item 1: a wrong first digit, corrected (Shift+Tab back, type again): last write wins.
            first = keys_for(items[0], key, alice_scores)
            rate_item(alice, ["3", "Shift+Tab", *first])
            assert scores_on_page(alice) == {c["cand_id"]: alice_scores[key[c["cand_id"]]] for c in items[0]["candidates"]}
            alice.keyboard.press("Enter")
            # Item 2: rate candidate B first (ArrowRight), then Tab wraps round to A.
            second = keys_for(items[1], key, alice_scores)
            rate_item(alice, ["ArrowRight", second[2], second[3], "Tab", second[0], second[1]])
            alice.keyboard.press("Enter")  # to item 3, where she stops
            alice.wait_for_selector("body[data-pending='0']")

            # Bob, by URL, on the same server at the same time; he sees none of Alice's ratings.
            bob.goto(server.url + "?rater=bob")
            bob.wait_for_selector("body[data-ready='bob']")
            assert scores_on_page(bob) == {}
            rate_item(bob, keys_for(items[0], key, bob_first))
            bob.keyboard.press("n")
            rate_item(bob, keys_for(items[1], key, bob_second))

            # Everything the pages were told is saved is in SQLite, before any shutdown.
            db = sqlite3.connect(tmp_path / "judge" / "sheet.ratings.sqlite")
            stored = db.execute("SELECT rater, COUNT(*) FROM ratings GROUP BY rater ORDER BY rater").fetchall()
            db.close()
            assert stored == [("alice", 8), ("bob", 8)]

            # Kill -9 and start again on the same port: a reload resumes Alice where she was.
            server.stop(signal.SIGKILL)
            server = Server(sheet_path, port=server.port)
            alice.reload()
            alice.wait_for_selector("body[data-ready='alice']")
            assert alice.inner_text("#progress") == "item 3 of 6 · 2 fully rated"
            alice.keyboard.press("p")
            assert scores_on_page(alice) == {c["cand_id"]: alice_scores[key[c["cand_id"]]] for c in items[1]["candidates"]}
            alice.wait_for_selector("body[data-pending='0']")
            assert errors == []
        finally:
            browser.close()
            out = server.stop(signal.SIGTERM)
    assert "stopped; every answered rating is in the store" in out

    assert cli_main(["judge", "summarize", str(sheet_path), "--key", str(key_path), "--bootstrap", "500"]) == 0
    summary = json.loads((tmp_path / "judge" / "sheet.summary.json").read_text())
    got = {s["system"]: (s["adequacy_mean"], s["fluency_mean"], s["n_items"], s["n_ratings"]) for s in summary["systems"]}
    # careful: adequacy alice 5,5 bob 4,4; fluency all 4. clumsy: adequacy all 2; fluency alice 1,1 bob 2,3.
    assert got == {"careful": (4.5, 4.0, 2, 8), "clumsy": (2.0, 1.75, 2, 8)}
    # Adequacy units [5,4] [5,4] [2,2] [2,2]: sum o*d2 = 4, sum n_c*n_k*d2 = 216, n = 8.
    # Fluency units [4,4] [4,4] [1,2] [1,3]: sum o*d2 = 10, sum n_c*n_k*d2 = 206, n = 8.
    assert summary["alpha"] == {"adequacy": round(1 - 7 * 4 / 216, 4), "fluency": round(1 - 7 * 10 / 206, 4)}
    assert [r["rater"] for r in summary["raters"]] == ["alice", "bob"]


def test_page_warns_when_the_browser_has_no_font_for_the_source(tmp_path):
    """A machine without a Chinese font draws the source as boxes: the page must say so, visibly."""
    need_browser()
    from playwright.sync_api import sync_playwright

    write_samples(tmp_path / "runs", "careful", CAREFUL)
    write_samples(tmp_path / "runs", "clumsy", CLUMSY)
    sheet_path = export([f"careful={tmp_path / 'runs/careful'}", f"clumsy={tmp_path / 'runs/clumsy'}"],
                        tmp_path / "judge" / "sheet.json", tmp_path / "judge-keys" / "sheet.key.json", seed=3)[0]
    every = sheet_chars(s for zh, en, *_ in SENTENCES for s in (zh, en))
    covered = sheet_chars([SENTENCES[0][0]])  # a font for the first sentence's characters only
    missing = [c for c in every if c not in covered]
    assert covered and missing
    server = Server(sheet_path)
    with sync_playwright() as pw:
        browser = launch(pw, tmp_path, covered)
        try:
            page = new_page(browser)
            page.goto(server.url + "?rater=alice")
            page.wait_for_selector("body[data-ready='alice']")
            assert page.get_attribute("body", "data-missing-glyphs") == str(len(missing))
            assert page.is_visible("#font-warning")
            notice = page.inner_text("#font-warning")
            assert f"no font for {len(missing)} character(s)" in notice and "Noto Sans CJK" in notice
            shown = notice.split("for example ")[1].split(" (U+")[0].split()
            assert shown and set(shown) <= set(missing)  # only characters it really lacks
            assert ", ".join(f"U+{ord(c):04X}" for c in shown) in notice  # named by code point too
        finally:
            browser.close()
            server.stop(signal.SIGTERM)
