"""Hand judging without a browser: export blinding, the ratings store, the API, the summary."""

import json
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from judge_fixtures import CAREFUL, CLUMSY, SENTENCES, TASK, write_samples

from marco_eval.cli import main as cli_main
from marco_eval.judge import JudgeError
from marco_eval.judge.export import CANDIDATE_FIELDS, ITEM_FIELDS, SHEET_FIELDS, export, load_sheet
from marco_eval.judge.server import is_local, make_server
from marco_eval.jsonl import read_jsonl
from marco_eval.judge.store import RatingStore
from marco_eval.judge.summarize import bootstrap_ci, krippendorff_alpha, summarize, summarize_ratings


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Default key paths (judge-keys/) are relative to the working directory: keep them in tmp."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def two_systems(tmp_path):
    write_samples(tmp_path / "runs", "careful", CAREFUL)
    write_samples(tmp_path / "runs", "clumsy", CLUMSY)
    return [f"careful={tmp_path / 'runs' / 'careful'}", f"clumsy={tmp_path / 'runs' / 'clumsy'}"]


def exported(tmp_path, specs, **kw):
    kw.setdefault("key_out", tmp_path / "judge-keys" / "sheet.key.json")
    sheet_path, key_path, sheet = export(specs, tmp_path / "judge" / "sheet.json", **kw)
    return sheet_path, json.loads(key_path.read_text()), sheet


# --- export ---------------------------------------------------------------------------------

def test_export_is_blind_and_the_key_unblinds_it(tmp_path, two_systems):
    # A fixed seed: with a secret one, "neither system always first" fails by chance
    # (both orders are equally likely for each item, so a few items can all agree, as with
    # seed 7). Seed 1 shows both systems first and items out of doc order.
    sheet_path, key, sheet = exported(tmp_path, two_systems, seed=1)
    text = sheet_path.read_text(encoding="utf-8")
    assert "careful" not in text and "clumsy" not in text  # no system name, no samples path
    assert sheet["task"] == TASK and len(sheet["items"]) == len(SENTENCES)
    for item in sheet["items"]:
        zh, en = SENTENCES[int(item["item_id"])][:2]
        assert (item["source"], item["reference"]) == (zh, en)
        by_system = {key["candidates"][c["cand_id"]]: c["text"] for c in item["candidates"]}
        assert by_system == {"careful": CAREFUL[int(item["item_id"])], "clumsy": CLUMSY[int(item["item_id"])]}
    # Shuffled: item order is not doc order, and neither system is always shown first.
    assert [it["item_id"] for it in sheet["items"]] != sorted(it["item_id"] for it in sheet["items"])
    firsts = {key["candidates"][it["candidates"][0]["cand_id"]] for it in sheet["items"]}
    assert firsts == {"careful", "clumsy"}


def test_export_is_deterministic_per_seed_and_limit_takes_a_subset(tmp_path, two_systems):
    a = exported(tmp_path / "a", two_systems, seed=7)[0].read_bytes()
    b = exported(tmp_path / "b", two_systems, seed=7)[0].read_bytes()
    c = exported(tmp_path / "c", two_systems, seed=8)[0].read_bytes()
    assert a == b and a != c
    _, key, sheet = exported(tmp_path / "d", two_systems, limit=3)
    assert len(sheet["items"]) == 3 and len(key["candidates"]) == 6


def test_export_picks_a_filter_and_reads_a_file_path(tmp_path):
    a = write_samples(tmp_path, "a", CAREFUL, filters=("strict", "loose"))
    b = write_samples(tmp_path, "b", CLUMSY, filters=("strict", "loose"))
    with pytest.raises(JudgeError, match="filters strict, loose: choose one with --filter"):
        export([f"a={a}", f"b={b}"], tmp_path / "s.json")
    _, key, sheet = exported(tmp_path, [str(a), str(b)], filter_name="loose")  # bare paths: named by folder
    assert set(key["candidates"].values()) == {"a", "b"} and len(sheet["items"]) == len(SENTENCES)


@pytest.mark.parametrize("case, message", [
    ("missing", "samples not found: .*nowhere"),
    ("one", "needs two or more systems, got 1"),
    ("mismatch", "systems cover different documents: careful has 6, short has 4"),
    ("same_name", "system names repeat"),
    ("not_jsonl", "not JSON .*expected an lm-eval samples file"),
])
def test_export_errors_are_one_line_and_write_nothing(tmp_path, two_systems, capsys, case, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n")
    specs = {
        "missing": [two_systems[0], f"x={tmp_path / 'nowhere'}"],
        "one": two_systems[:1],
        "mismatch": [two_systems[0], f"short={write_samples(tmp_path, 'short', CLUMSY[:4])}"],
        "same_name": [two_systems[0], two_systems[1].replace("clumsy=", "careful=")],
        "not_jsonl": [two_systems[0], f"bad={bad}"],
    }[case]
    out = tmp_path / "judge" / "sheet.json"
    argv = ["judge", "export", "--out", str(out)] + [a for s in specs for a in ("--system", s)]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("marco-eval: error: ")
    assert re.search(message, err), err
    assert not out.exists() and not (tmp_path / "judge-keys" / "sheet.key.json").exists()


# --- store ----------------------------------------------------------------------------------

def test_store_survives_reopen_last_write_wins_and_raters_are_separate(tmp_path, two_systems):
    sheet_path, _, sheet = exported(tmp_path, two_systems)
    item = sheet["items"][0]
    cand = item["candidates"][0]["cand_id"]
    db = tmp_path / "r.sqlite"
    store = RatingStore(db, sheet)
    store.set_rating("alice", item["item_id"], cand, "adequacy", 2)
    store.set_rating("alice", item["item_id"], cand, "adequacy", 4)  # changed her mind
    store.set_rating("alice", item["item_id"], cand, "fluency", 3)
    store.set_rating("alice", item["item_id"], cand, "fluency", None)  # and cleared this one
    store.set_rating("bob", item["item_id"], cand, "adequacy", 1)
    store.set_position("alice", 2)
    # No close(): a killed server never closes. A second connection must see everything.
    reopened = RatingStore(db, sheet)
    assert reopened.rater_state("alice") == {"rater": "alice", "position": 2,
                                             "ratings": {item["item_id"]: {cand: {"adequacy": 4}}}}
    assert reopened.rater_state("bob")["ratings"] == {item["item_id"]: {cand: {"adequacy": 1}}}
    assert reopened.rater_state("carol") == {"rater": "carol", "ratings": {}, "position": 0}
    assert reopened.n_events() == 5  # the history keeps every change
    store.close(), reopened.close()


def test_store_rejects_what_is_not_on_the_sheet(tmp_path, two_systems):
    _, _, sheet = exported(tmp_path, two_systems)
    item = sheet["items"][0]
    cand = item["candidates"][0]["cand_id"]
    store = RatingStore(tmp_path / "r.sqlite", sheet)
    for args, message in [(("alice", item["item_id"], "c-none", "adequacy", 3), "not on this sheet"),
                          (("alice", item["item_id"], cand, "style", 3), "aspect 'style'"),
                          (("alice", item["item_id"], cand, "fluency", 6), "score 6"),
                          (("alice", item["item_id"], cand, "fluency", True), "score True"),
                          (("<script>", item["item_id"], cand, "fluency", 3), "rater name")]:
        with pytest.raises(JudgeError, match=message):
            store.set_rating(*args)
    with pytest.raises(JudgeError, match="outside 0..5"):
        store.set_position("alice", 6)
    store.close()
    other = dict(sheet, sheet_id="0" * 16)
    with pytest.raises(JudgeError, match="holds ratings of another sheet"):
        RatingStore(tmp_path / "r.sqlite", other)
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 10)
    with pytest.raises(JudgeError, match="is not a ratings store"):
        RatingStore(tmp_path / "junk.sqlite", sheet)


# --- agreement and intervals ----------------------------------------------------------------

def test_alpha_matches_hand_computation():
    # Units (1,1), (2,3), (3,3). Coincidences: o11=2, o23=o32=1, o33=2; n1=2, n2=1, n3=3, n=6.
    # Interval: sum o*d2 = 2; sum n_c*n_k*d2 = 2*(2*1*1 + 2*3*4 + 1*3*1) = 58 -> 1 - 5*2/58.
    assert krippendorff_alpha([[1, 1], [2, 3], [3, 3]], "interval") == pytest.approx(1 - 10 / 58)
    # Ordinal: d2(1,2)=(3-1.5)^2, d2(2,3)=(4-2)^2, d2(1,3)=(6-2.5)^2 -> 1 - 5*8/180.
    assert krippendorff_alpha([[1, 1], [2, 3], [3, 3]], "ordinal") == pytest.approx(1 - 40 / 180)
    # Krippendorff (2011)'s worked example, 4 coders x 12 units with gaps: 0.849 and 0.815.
    coders = [[1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None], [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
              [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None], [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]]
    units = [[v for v in unit if v is not None] for unit in zip(*coders)]
    assert krippendorff_alpha(units, "interval") == pytest.approx(0.849, abs=5e-4)
    assert krippendorff_alpha(units, "ordinal") == pytest.approx(0.815, abs=5e-4)
    assert krippendorff_alpha([[1, 1], [5, 5], [3, 3]]) == 1.0
    assert krippendorff_alpha([[4, 4], [4, 4]]) is None  # no variation: undefined
    assert krippendorff_alpha([[1], [2]]) is None  # nothing pairable


def test_bootstrap_is_seeded_and_brackets_the_mean():
    scores = {"a": [1, 2], "b": [4, 5], "c": [3], "d": [5, 5]}
    ci = bootstrap_ci(scores, 500, [0, 1])
    assert ci == bootstrap_ci(scores, 500, [0, 1]) and ci != bootstrap_ci(scores, 500, [1, 1])
    assert ci[0] < 25 / 7 < ci[1] and 1 <= ci[0] and ci[1] <= 5
    assert bootstrap_ci({"a": [4], "b": [4, 4]}, 100, [0]) == [4.0, 4.0]
    assert bootstrap_ci({"a": [4]}, 100, [0]) is None


def test_summarize_ratings_on_known_data():
    rows = []
    for item in ("1", "2", "3"):  # alice and bob agree on adequacy, disagree on fluency
        rows += [("alice", item, "careful", "adequacy", 5), ("bob", item, "careful", "adequacy", 5),
                 ("alice", item, "clumsy", "adequacy", 2), ("bob", item, "clumsy", "adequacy", 2),
                 ("alice", item, "careful", "fluency", 5), ("bob", item, "careful", "fluency", 3),
                 ("alice", item, "clumsy", "fluency", 2), ("bob", item, "clumsy", "fluency", 4)]
    s = summarize_ratings(rows, ["careful", "clumsy"], resamples=200)
    careful, clumsy = s["systems"]
    assert (careful["adequacy_mean"], careful["fluency_mean"], careful["n_items"], careful["n_ratings"]) == (5, 4, 3, 12)
    assert (clumsy["adequacy_mean"], clumsy["fluency_mean"]) == (2, 3)
    assert careful["adequacy_ci"] == [5.0, 5.0]  # every item has the same mean
    assert s["alpha"]["adequacy"] == 1.0
    # Fluency units: (5,3) x3 and (2,4) x3: o53=o35=o24=o42=3, n=12, sum o*d2 = 48,
    # sum n_c*n_k*d2 over values 2..5 (n=3 each) = 9 * 40 -> 1 - 11*48/360 (worse than chance).
    assert s["alpha"]["fluency"] == pytest.approx(1 - 11 * 48 / 360, abs=1e-4)
    assert s["raters"] == [{"rater": "alice", "n_ratings": 12, "n_items": 3}, {"rater": "bob", "n_ratings": 12, "n_items": 3}]


# --- summarize end to end, and its errors ---------------------------------------------------

def rate_all(sheet, key, db, raters):
    """Each rater gives careful 5/4 and clumsy 2/2 to every item; returns the store path."""
    store = RatingStore(db, sheet)
    wanted = {"careful": {"adequacy": 5, "fluency": 4}, "clumsy": {"adequacy": 2, "fluency": 2}}
    for rater in raters:
        for item in sheet["items"]:
            for cand in item["candidates"]:
                for aspect, score in wanted[key["candidates"][cand["cand_id"]]].items():
                    store.set_rating(rater, item["item_id"], cand["cand_id"], aspect, score)
    store.close()


def test_summarize_writes_md_csv_json(tmp_path, two_systems):
    sheet_path, key, sheet = exported(tmp_path, two_systems)
    rate_all(sheet, key, tmp_path / "judge" / "sheet.ratings.sqlite", ["alice", "bob"])
    summary, paths = summarize(sheet_path, resamples=300)
    on_disk = json.loads(paths["json"].read_text())
    assert on_disk == summary and on_disk["sheet"] == str(sheet_path)
    by_name = {s["system"]: s for s in on_disk["systems"]}
    assert by_name["careful"]["adequacy_mean"] == 5 and by_name["clumsy"]["fluency_mean"] == 2
    assert by_name["careful"]["n_ratings"] == 2 * 2 * len(SENTENCES)
    assert on_disk["alpha"] == {"adequacy": 1.0, "fluency": 1.0}
    assert "| careful | 6 | 24 | 5.00 [5.00, 5.00] | 4.00 [4.00, 4.00] |" in paths["md"].read_text()
    assert paths["csv"].read_text().splitlines()[1].startswith("careful,6,24,5.0,5.0,5.0,12,4.0")


def test_summarize_errors(tmp_path, two_systems, capsys):
    sheet_path, key, sheet = exported(tmp_path, two_systems)
    db = tmp_path / "judge" / "sheet.ratings.sqlite"
    with pytest.raises(JudgeError, match="no ratings store at"):
        summarize(sheet_path)
    RatingStore(db, sheet).close()
    with pytest.raises(JudgeError, match="has no ratings yet"):
        summarize(sheet_path)
    rate_all(sheet, key, db, ["alice"])
    # A key whose entries do not cover the rated candidates: the wrong key for these ratings.
    partial = dict(key, candidates=dict(list(key["candidates"].items())[1:]))
    (tmp_path / "partial.json").write_text(json.dumps(partial))
    with pytest.raises(JudgeError, match="is not in the key file"):
        summarize(sheet_path, key_path=tmp_path / "partial.json")
    # The key of another export: refused before anything is unblinded.
    exported(tmp_path / "other", two_systems, seed=99)
    assert cli_main(["judge", "summarize", str(sheet_path), "--key",
                     str(tmp_path / "other" / "judge-keys" / "sheet.key.json")]) == 2
    err = capsys.readouterr().err
    assert "belongs to another sheet" in err and err.count("\n") == 1
    assert not (tmp_path / "judge" / "sheet.summary.json").exists()
    sheet_path.write_text(sheet_path.read_text().replace(SENTENCES[0][0], "改过的句子"))
    with pytest.raises(JudgeError, match="edited after export"):
        load_sheet(sheet_path)


# --- the HTTP API (the browser test drives the page; this checks the API's edges) ------------

def test_api_serves_a_blind_sheet_and_stores_ratings(tmp_path, two_systems):
    sheet_path, key, sheet = exported(tmp_path, two_systems)
    server, store = make_server(sheet_path, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def call(path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as res:
                return res.status, json.loads(res.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    try:
        status, public = call("/api/sheet")
        assert status == 200 and "careful" not in json.dumps(public) and len(public["items"]) == len(SENTENCES)
        item = sheet["items"][0]
        cand = item["candidates"][1]["cand_id"]
        assert call("/api/rate", {"rater": "ana", "item_id": item["item_id"], "cand_id": cand,
                                  "aspect": "fluency", "score": 4}) == (200, {"ok": True})
        status, err = call("/api/rate", {"rater": "ana", "item_id": item["item_id"], "cand_id": cand,
                                         "aspect": "fluency", "score": 9})
        assert status == 400 and "score 9" in err["error"]
        assert call("/api/state?rater=ana")[1]["ratings"] == {item["item_id"]: {cand: {"fluency": 4}}}
        assert call("/sheet.key.json")[0] == 404 and call("/api/state?rater=")[0] == 400
    finally:
        server.shutdown(), server.server_close(), store.close()


# --- blindness: nothing in the sheet or the served page tells the systems apart (issue #20) ---

REPO = Path(__file__).resolve().parents[1]
COMMITTED = {"base_cot": REPO / "results/translation/colloquial_base_cot",
             "mcts_step": REPO / "results/translation/colloquial_mcts_step"}


def write_run(root: Path, run: str, model: str, config: str, translations: list[str], stamp: str,
              tokens: int) -> Path:
    """A run folder laid out like results/translation/*: run.json, requests.jsonl, MODEL/samples_*."""
    samples = write_samples(root / run, model, translations, doc_ids=range(len(translations)))
    samples = samples.rename(samples.with_name(f"samples_{TASK}_{stamp}.jsonl"))
    (root / run / "run.json").write_text(json.dumps({
        "system": f"{model} / {config}", "model": model, "config": config,
        "command": f"lm_eval --model marco_mcts --model_args pretrained={model},config={config}"}))
    (root / run / "requests.jsonl").write_text("".join(
        json.dumps({"task": TASK, "doc_id": i, "generated_tokens": tokens + i, "policy_calls": 700 + i,
                    "seconds": 900.5 + i}) + "\n" for i in range(len(translations))))
    return samples


def identifying_strings(name: str, run_dir: Path, samples: Path) -> set[str]:
    """Everything that names or describes one system: its --system name, every part of its
    paths, its run.json values, its token counts and timings, the samples file's stamp."""
    found = {name, samples.name, SAMPLES_STAMP.search(samples.name)[0], *run_dir.parts[-1:],
             *samples.relative_to(run_dir.parent).parts, str(samples), str(run_dir)}
    manifest = json.loads((run_dir / "run.json").read_text())
    found |= {str(v) for v in manifest.values()}
    for line in (run_dir / "requests.jsonl").read_text().splitlines():
        row = json.loads(line)
        for field in ("generated_tokens", "policy_calls", "seconds"):
            found.add(field)
            if len(str(row.get(field, ""))) >= 5:  # shorter numbers ("40") may be in a translation
                found.add(str(row[field]))
    return {s for s in found if s}


SAMPLES_STAMP = re.compile(r"\d{4}-\d\d-\d\dT[\d.\-]+(?=\.jsonl$)")


def assert_blind(sheet_path: Path, systems: dict[str, tuple[Path, Path]], served: list[bytes] = ()) -> None:
    sheet = json.loads(sheet_path.read_text())
    assert tuple(sheet) == SHEET_FIELDS  # no seed: with it and the sources the shuffle could be recomputed
    for item in sheet["items"]:
        assert tuple(item) == ITEM_FIELDS and all(tuple(c) == CANDIDATE_FIELDS for c in item["candidates"])
    texts = [sheet_path.read_text(encoding="utf-8"), *(b.decode() for b in served)]
    for name, (run_dir, samples) in systems.items():
        for needle in identifying_strings(name, run_dir, samples):
            for text in texts:
                assert needle not in text, f"{needle!r} of system {name} is in what raters get"


def test_sheet_and_page_name_no_system_path_config_stamp_or_token_count(tmp_path):
    runs = tmp_path / "results"
    n = 40  # enough items to see the candidate order is not tied to a system
    careful = write_run(runs, "zh_en_base_cot", "qwen-careful-7b", "base_cot", (CAREFUL * 7)[:n],
                        "2026-01-02T03-04-05.111111", 48213)
    clumsy = write_run(runs, "zh_en_mcts_step", "qwen-clumsy-7b", "mcts_step", (CLUMSY * 7)[:n],
                       "2026-01-02T09-08-07.222222", 93127)
    specs = [f"careful={runs / 'zh_en_base_cot'}", f"clumsy={runs / 'zh_en_mcts_step'}"]
    sheet_path, key, sheet = exported(tmp_path, specs, seed=5)
    server, store = make_server(sheet_path, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        served = [urllib.request.urlopen(base + path, timeout=5).read() for path in ("/", "/api/sheet")]
    finally:
        server.shutdown(), server.server_close(), store.close()
    assert_blind(sheet_path, {"careful": (runs / "zh_en_base_cot", careful),
                              "clumsy": (runs / "zh_en_mcts_step", clumsy)}, served)
    # Position and id order say nothing: each system is shown first on about half the items,
    # and has the smaller id on about half.
    first = [key["candidates"][it["candidates"][0]["cand_id"]] for it in sheet["items"]]
    smaller = [key["candidates"][min(c["cand_id"] for c in it["candidates"])] for it in sheet["items"]]
    assert 12 <= first.count("careful") <= 28 and 12 <= smaller.count("careful") <= 28
    assert key["seed"] == 5 and "seed" not in sheet


def test_default_seed_is_secret_and_fresh(tmp_path, two_systems):
    a = exported(tmp_path / "a", two_systems)
    b = exported(tmp_path / "b", two_systems)
    assert a[2]["items"] != b[2]["items"]  # a fresh random seed each time, unless --seed
    assert isinstance(a[1]["seed"], int) and str(a[1]["seed"]) not in a[0].read_text()


def test_export_of_the_committed_translation_runs_is_blind(tmp_path):
    """The intended inputs in a clone: results/translation/colloquial_{base_cot,mcts_step}."""
    samples = {name: next(run.glob("*/samples_colloquial_zh_en_*.jsonl")) for name, run in COMMITTED.items()}
    out = tmp_path / "judge" / "colloquial.json"
    assert cli_main(["judge", "export", "--system", f"base_cot={COMMITTED['base_cot']}", "--system",
                     f"mcts_step={COMMITTED['mcts_step']}", "--limit", "50", "--out", str(out)]) == 0
    key = json.loads((tmp_path / "judge-keys" / "colloquial.key.json").read_text())
    sheet = json.loads(out.read_text())
    assert sheet["task"] == "colloquial_zh_en" and len(sheet["items"]) == 50 and len(key["candidates"]) == 100
    assert_blind(out, {name: (COMMITTED[name], samples[name]) for name in COMMITTED})
    rows = {name: {str(r["doc_id"]): r for _, r in read_jsonl(path, ValueError, "samples")}
            for name, path in samples.items()}
    for item in sheet["items"]:  # each candidate is exactly its system's extracted translation
        for c in item["candidates"]:
            assert c["text"] == rows[key["candidates"][c["cand_id"]]][item["item_id"]]["filtered_resps"][0].strip()


# --- where the key goes -----------------------------------------------------------------------

def test_key_goes_to_judge_keys_not_beside_the_sheet(tmp_path, two_systems, capsys):
    out = tmp_path / "judge" / "zh_en.json"
    argv = ["judge", "export", "--out", str(out)] + [a for s in two_systems for a in ("--system", s)]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "judge-keys/zh_en.key.json" in printed and "keep it from raters" in printed
    assert (tmp_path / "judge-keys" / "zh_en.key.json").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["zh_en.json"]
    # The key beside the sheet is refused, in one line, and nothing is written.
    beside = ["judge", "export", "--out", str(tmp_path / "j2" / "s.json"), "--key", str(tmp_path / "j2" / "s.key.json"),
              *[a for s in two_systems for a in ("--system", s)]]
    assert cli_main(beside) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is in the sheet's folder" in err and not (tmp_path / "j2").exists()


def test_export_never_overwrites_the_key_of_another_sheet(tmp_path, two_systems):
    exported(tmp_path, two_systems, seed=1)
    exported(tmp_path, two_systems, seed=1)  # the same sheet again: harmless
    with pytest.raises(JudgeError, match="holds the key of another sheet"):
        exported(tmp_path, two_systems, seed=2)


def test_summarize_finds_the_key_in_judge_keys_by_name_or_by_sheet_id_or_beside_old_sheets(tmp_path, two_systems):
    sheet_path, key, sheet = exported(tmp_path, two_systems)  # key: ./judge-keys/sheet.key.json
    rate_all(sheet, key, tmp_path / "judge" / "sheet.ratings.sqlite", ["alice"])
    assert summarize(sheet_path, resamples=50)[0]["systems"][0]["n_ratings"] == 2 * len(SENTENCES)
    renamed = sheet_path.rename(sheet_path.with_name("renamed.json"))
    (tmp_path / "judge" / "sheet.ratings.sqlite").rename(tmp_path / "judge" / "renamed.ratings.sqlite")
    assert summarize(renamed, resamples=50)[0]["sheet_id"] == sheet["sheet_id"]  # found by its sheet id
    # An export made before keys moved out: the key beside the sheet still unblinds it.
    legacy = tmp_path / "judge" / "renamed.key.json"
    (tmp_path / "judge-keys" / "sheet.key.json").rename(legacy)
    assert summarize(renamed, resamples=50)[0]["sheet_id"] == sheet["sheet_id"]
    legacy.unlink()
    with pytest.raises(JudgeError, match="no key for .*judge-keys/renamed.key.json.*pass --key"):
        summarize(renamed)


def test_gitignore_keeps_keys_and_judge_work_out_of_git():
    paths = ["judge-keys/zh_en.key.json", "results/human/judge-keys/zh_en.key.json", "judge/zh_en.json",
             "judge/zh_en.ratings.sqlite"]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=REPO, capture_output=True, text=True)
    assert ignored.stdout.split() == paths
    package = subprocess.run(["git", "check-ignore", "--no-index", "marco_eval/judge/export.py"], cwd=REPO)
    assert package.returncode == 1  # /judge/ is the top-level folder only, never the package


# --- serve --host/--port ------------------------------------------------------------------------

def test_is_local_and_the_url_to_open():
    assert is_local("127.0.0.1") and is_local("::1") and is_local("127.3.4.5")
    assert not is_local("0.0.0.0") and not is_local("::") and not is_local("192.168.1.20")


def start_serve(sheet_path: Path, *args: str) -> tuple[subprocess.Popen, str, list[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "marco_eval.cli", "judge", "serve", str(sheet_path),
                             "--port", "0", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # "N items, ratings in …"
    line = proc.stdout.readline()
    if not (m := re.search(r"serving (http://\S+)", line)):
        proc.kill()
        raise AssertionError(f"judge serve did not start: {line!r} {proc.stderr.read()}")
    return proc, m[1], []


def stop_serve(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    return err


def test_serve_beyond_localhost_warns_in_one_line_and_prints_a_reachable_url(tmp_path, two_systems):
    sheet_path = exported(tmp_path, two_systems)[0]
    proc, url, _ = start_serve(sheet_path, "--host", "0.0.0.0")
    try:
        port = int(url.rsplit(":", 1)[1].strip("/"))
        assert "0.0.0.0" not in url  # the address raters type, not the wildcard
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
        assert b"marco-eval judge" in page
    finally:
        err = stop_serve(proc)
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "listening on 0.0.0.0" in warnings[0] and "--host 127.0.0.1" in warnings[0]
    # The default stays on this machine, without a warning.
    proc, url, _ = start_serve(sheet_path)
    err = stop_serve(proc)
    assert url.startswith("http://127.0.0.1:") and "warning" not in err


def test_serve_on_an_address_this_machine_lacks_is_one_line(tmp_path, two_systems, capsys):
    sheet_path = exported(tmp_path, two_systems)[0]
    assert cli_main(["judge", "serve", str(sheet_path), "--host", "203.0.113.77", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot listen on 203.0.113.77:0" in err and "--host" in err
