"""`marco-eval report`: parsing real lm-eval 0.4.13 output, statistics on known data, errors,
determinism, compare, slim.

tests/fixtures/report/ holds two real runs (smollm2-135m, --limit 3), slimmed: see its README.
Everything else is built here from invented problems (no dataset text).
"""

import json
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

from marco_eval import report
from marco_eval.cli import build_parser
from marco_eval.cli import main as cli_main
from marco_eval.report import ReportError

FIXTURES = Path(__file__).parent / "fixtures" / "report"
REPO = Path(__file__).resolve().parent.parent
BASE = "smollm2-135m / base_cot"
SC = "smollm2-135m / self_consistency"
STAMP = "2026-01-01T00-00-00.000000"


# ------------------------------------------------------------------ invented runs, lm-eval's shape

def write_run(root: Path, name: str, system: str, scores: dict[str, list[int]], *, config: str = "mcts_step",
              model: str = "toy-model", candidates: dict[str, list[list]] | None = None, tokens: int = 100,
              wall: float = 60.0, stamp: str = STAMP, targets: list[str] | None = None, first_doc: int = 0,
              final_answer: str | None = None, records: dict[str, list[dict]] | None = None,
              settings: dict | None = None) -> Path:
    """One run folder as lm-eval 0.4.13 writes it (results + samples per task) plus run.json and,
    when candidates are given, the request store (`records`: more fields per task and problem,
    such as rollouts and trace; `settings`: more marco_eval_config keys)."""
    run_dir = root / name
    out = run_dir / "toy-model"
    out.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"system": system, "model": model, "config": config,
                                                  "command": f"lm_eval ... {name}"}))
    results, n_samples = {}, {}
    for task, per_doc in scores.items():
        acc = sum(per_doc) / len(per_doc)
        results[task] = {"alias": task, "exact_match,strict-match": acc, "exact_match_stderr,strict-match": 0.0,
                         "exact_match,flexible-extract": acc, "exact_match_stderr,flexible-extract": 0.0}
        n_samples[task] = {"original": 250, "effective": len(per_doc)}
        lines = []
        for filt in ("strict-match", "flexible-extract"):
            for doc_id, score in enumerate(per_doc, first_doc):
                target = targets[doc_id - first_doc] if targets else str(doc_id + 10)
                lines.append({"doc_id": doc_id, "target": target, "resps": [["..."]], "filtered_resps": ["1"],
                              "filter": filt, "metrics": ["exact_match"], "doc_hash": f"h{task}{doc_id}",
                              "exact_match": float(score)})
        (out / f"samples_{task}_{stamp}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    doc = {"results": results, "n-samples": n_samples, "total_evaluation_time_seconds": str(wall),
           "config": {"model": "marco_mcts", "model_args": f"pretrained={model},config={config}",
                      "marco_eval_config_file": config,
                      "marco_eval_config": {"strategy": "mcts" if config.startswith("mcts") else "sampling",
                                            **({"final_answer": final_answer} if final_answer else {}),
                                            "pretrained": model, **(settings or {})}},
           "model_name": model, "lm_eval_version": "0.4.13"}
    (out / f"results_{stamp}.json").write_text(json.dumps(doc))
    if candidates:
        records = [{"key": f"{task}-{d}", "fingerprint": "f", "task": task, "doc_id": d, "text": "...", "answer": c[0],
                    "candidates": c, "generated_tokens": tokens, "policy_calls": 3, "seconds": 1.5,
                    **((records or {}).get(task) or [{}] * len(per_doc))[d]}
                   for task, per_doc in candidates.items() for d, c in enumerate(per_doc)]
        (run_dir / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run_dir


@pytest.fixture
def two_systems(tmp_path):
    root = tmp_path / "results"
    base = [1, 0, 0, 1, 0, 1, 0, 0, 1, 0]
    mcts = [1, 1, 1, 1, 0, 1, 1, 0, 1, 1]  # 4 wins over the baseline, 0 losses
    write_run(root, "base", "toy / base_cot", {"mgsm_en": base, "mgsm_zh": base}, config="base_cot", tokens=80,
              candidates={"mgsm_en": [[str(d + 10)] if s else ["0"] for d, s in enumerate(base)]})
    # 8 candidates per problem: the right answer first for the solved ones, 5th for two more.
    cands = [[str(d + 10)] + ["0"] * 7 if s else ["0"] * 4 + [str(d + 10)] + ["0"] * 3 if d in (4, 7) else ["0"] * 8
             for d, s in enumerate(mcts)]
    write_run(root, "mcts", "toy / mcts_step", {"mgsm_en": mcts}, tokens=800, candidates={"mgsm_en": cands})
    return root


def csv_rows(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------ real lm-eval 0.4.13 files

def test_parses_real_lm_eval_results():
    loaded = report.load(FIXTURES)
    runs = {(r.system, r.task): r for r in loaded.tasks}
    assert set(runs) == {(BASE, "mgsm_en"), (BASE, "mgsm_zh"), (SC, "mgsm_en"), (SC, "mgsm_zh")}
    for run in runs.values():
        doc = json.loads(run.results_file.read_text())
        assert run.n == doc["n-samples"][run.task]["effective"] == 3
        assert run.accuracy == pytest.approx(doc["results"][run.task]["exact_match,flexible-extract"])
        assert sorted(run.scores) == [0, 1, 2]
        wall = float(doc["total_evaluation_time_seconds"])
        assert run.seconds_per_problem == pytest.approx(wall / 6)  # two tasks of three problems
    assert runs[BASE, "mgsm_en"].accuracy == pytest.approx(1 / 3)
    strict = report.load(FIXTURES, filter_name="strict-match")
    assert {(r.system, r.task): r.accuracy for r in strict.tasks}[BASE, "mgsm_en"] == 0.0


def test_report_on_real_fixtures(tmp_path):
    report.report(FIXTURES, tmp_path, baseline=BASE)
    rows = {r["system"]: r for r in csv_rows(tmp_path / "report" / "mgsm.csv")}
    assert float(rows[BASE]["mgsm_en_acc"]) == pytest.approx(1 / 3)
    assert rows[SC]["mgsm_en_n"] == "3"
    assert rows[BASE]["sources"] and rows[SC]["sources"]
    readme = (tmp_path / "README.md").read_text()
    assert "| " + BASE + " |" in readme and "results_" in readme


# ------------------------------------------------------------------ statistics on known data

def test_bootstrap_ci_known_data():
    assert report.bootstrap_ci([1.0] * 50) == (1.0, 1.0)
    assert report.bootstrap_ci([0.0] * 50) == (0.0, 0.0)
    half = np.array([0, 1] * 200, dtype=float)  # p = 0.5, n = 400: normal approx. half-width 0.049
    lo, hi = report.bootstrap_ci(half)
    assert lo == pytest.approx(0.5 - 0.049, abs=0.006) and hi == pytest.approx(0.5 + 0.049, abs=0.006)
    assert report.bootstrap_ci(half) == (lo, hi)  # fixed seed: same interval every call
    skewed = np.array([1] * 90 + [0] * 10, dtype=float)  # p = 0.9, n = 100: about [0.84, 0.96]
    lo, hi = report.bootstrap_ci(skewed)
    assert 0.82 <= lo <= 0.86 and 0.94 <= hi <= 0.97


def test_mcnemar_exact_known_data():
    a, b = np.array([1, 1, 0, 0]), np.array([1, 1, 0, 0])
    assert report.mcnemar_exact(a, b) == (0, 0, 1.0)
    wins10 = report.mcnemar_exact(np.ones(10), np.zeros(10))
    assert wins10 == (10, 0, pytest.approx(2 / 1024))
    # 3 wins, 1 loss: p = 2 * (C(4,0) + C(4,1)) / 2^4 = 0.625
    assert report.mcnemar_exact(np.array([1, 1, 1, 0]), np.array([0, 0, 0, 1]))[2] == pytest.approx(0.625)
    # symmetric and capped at 1: 2 wins, 2 losses
    assert report.mcnemar_exact(np.array([1, 1, 0, 0]), np.array([0, 0, 1, 1]))[2] == 1.0


def test_paired_row_against_baseline(two_systems, tmp_path):
    report.report(two_systems, tmp_path, baseline="toy / base_cot")
    rows = {r["system"]: r for r in csv_rows(tmp_path / "report" / "mgsm.csv")}
    mcts = rows["toy / mcts_step"]
    assert float(mcts["mgsm_en_acc"]) == 0.8 and float(mcts["mgsm_en_delta"]) == pytest.approx(0.4)
    assert (mcts["mgsm_en_wins"], mcts["mgsm_en_losses"]) == ("4", "0")
    assert float(mcts["mgsm_en_p_mcnemar"]) == pytest.approx(2 / 16)
    assert float(mcts["mgsm_en_delta_lo"]) > 0  # 4 wins, no losses: the paired CI excludes 0
    assert mcts["mgsm_zh_acc"] == ""  # that system has no Zh run
    assert list(rows) == ["toy / base_cot", "toy / mcts_step"]  # baseline first


def test_verdict_table_pairs_search_with_every_row_without_search(tmp_path):
    root = tmp_path / "results"
    greedy = [1, 0, 0, 1, 0, 1, 0, 0, 1, 0, 1, 1]  # 12 problems: the search's 10 and two more
    vote = [1, 1, 0, 1, 0, 1, 0, 1, 1, 0]
    mcts = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]  # solves the 6 greedy missed (p = 2/64) and the 4 the vote missed (p = 2/16)
    write_run(root, "greedy", "toy / base_cot", {"mgsm_en": greedy}, config="base_cot", tokens=100,
              candidates={"mgsm_en": [["0"]] * 12})
    write_run(root, "vote", "toy / self_consistency", {"mgsm_en": vote}, config="self_consistency", tokens=500,
              candidates={"mgsm_en": [["0"]] * 10})
    write_run(root, "mcts", "toy / mcts_step", {"mgsm_en": mcts}, config="mcts_step", tokens=400,
              candidates={"mgsm_en": [["0"]] * 10})
    write_run(root, "other", "other-model / base_cot", {"mgsm_en": greedy}, config="base_cot", model="other")
    report.report(root, tmp_path / "out")
    rows = {(r["search"], r["against"]): r for r in csv_rows(tmp_path / "out" / "report" / "verdict.csv")}
    assert list(rows) == [("toy / mcts_step", "toy / base_cot"), ("toy / mcts_step", "toy / self_consistency")]
    greedy_row, vote_row = rows["toy / mcts_step", "toy / base_cot"], rows["toy / mcts_step", "toy / self_consistency"]
    assert greedy_row["n_paired"] == "10" and float(greedy_row["against_acc"]) == pytest.approx(0.4)
    assert (greedy_row["wins"], greedy_row["losses"]) == ("6", "0")
    assert float(greedy_row["p_mcnemar"]) == pytest.approx(2 / 64)
    # Holm over the 2 comparisons: the smaller p doubled (2/64 * 2), the larger kept (2/16 >= 4/64)
    assert float(greedy_row["p_holm"]) == pytest.approx(4 / 64) and float(vote_row["p_holm"]) == pytest.approx(2 / 16)
    assert greedy_row["verdict"] == "no significant difference" and float(greedy_row["tokens_ratio"]) == 4.0
    assert float(vote_row["p_mcnemar"]) == pytest.approx(2 / 16)
    assert vote_row["verdict"] == "no significant difference" and float(vote_row["tokens_ratio"]) == 0.8
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "### Does the search pay?" in readme and "| MGSM-En | toy / mcts_step | toy / base_cot | 10 |" in readme
    assert ("- MGSM-En, toy / mcts_step against toy / base_cot on the 10 problems both ran: 100.00% vs 40.00% "
            "(Δ +60.00 points, 95% CI [+30.00, +90.00], McNemar p = 0.031, Holm-corrected 0.062): **no significant "
            "difference**, at 4.00× the generated tokens.") in readme
    assert ("- In short: of 2 comparisons, the search was better in 0, worse in 0 and not significantly different "
            "in 2 (each at p < 0.05 after Holm's correction for making 2 comparisons; the uncorrected p is in the "
            "table too).") in readme
    assert report.verdict_word(-0.3, 0.03) == "search worse" and report.verdict_word(0.3, 0.03) == "search better"


def test_test_at_n_from_store(two_systems, tmp_path):
    report.report(two_systems, tmp_path)
    rows = {(r["system"], int(r["n"])): r for r in csv_rows(tmp_path / "report" / "test_at_n.csv")}
    assert sorted(n for s, n in rows if s == "toy / mcts_step") == list(range(1, 9))  # every N up to 8
    assert rows["toy / mcts_step", 1]["candidates_min"] == rows["toy / mcts_step", 1]["candidates_max"] == "8"
    assert float(rows["toy / mcts_step", 1]["test_at_n"]) == 0.8 and float(rows["toy / mcts_step", 8]["test_at_n"]) == 1.0
    assert float(rows["toy / mcts_step", 4]["test_at_n"]) == 0.8 and float(rows["toy / mcts_step", 5]["test_at_n"]) == 1.0
    assert ("toy / base_cot", 2) not in rows  # one candidate each: Test@1 only
    md = (tmp_path / "report" / "test_at_n.md").read_text()
    assert "| System | Task | Candidates (fewest–most) | Test@1 % | Test@2 % | Test@4 % | Test@8 % | Sources |" in md
    cost = {(r["system"], r["task"]): r for r in csv_rows(tmp_path / "report" / "cost.csv")}
    assert float(cost["toy / mcts_step", "mgsm_en"]["tokens_per_problem"]) == 800
    assert float(cost["toy / mcts_step", "mgsm_en"]["acc_pct_per_1k_tokens"]) == pytest.approx(100)
    assert cost["toy / base_cot", "mgsm_zh"]["tokens_per_problem"] == ""  # the store has no Zh records
    assert float(cost["toy / base_cot", "mgsm_en"]["seconds_per_problem"]) == pytest.approx(3.0)  # 60 s / 20


def test_test_at_n_counts_all_candidates_of_a_problem_with_fewer(tmp_path):
    root = tmp_path / "results"
    # targets 10..13; the right answer is candidate 2 of 2, 1 of 1, 4 of 4, and nowhere in 1
    write_run(root, "m", "toy / mcts_step", {"mgsm_en": [0, 1, 0, 0]},
              candidates={"mgsm_en": [["0", "10"], ["11"], ["0", "0", "0", "12"], ["0"]]})
    report.report(root, tmp_path / "out")
    rows = {int(r["n"]): r for r in csv_rows(tmp_path / "out" / "report" / "test_at_n.csv")}
    assert {n: float(r["test_at_n"]) for n, r in rows.items()} == {1: 0.25, 2: 0.5, 3: 0.5, 4: 0.75}
    assert {n: int(r["problems_with_fewer"]) for n, r in rows.items()} == {1: 0, 2: 2, 3: 3, 4: 3}
    assert "| toy / mcts_step | MGSM-En | 1–4 | 25.00" in (tmp_path / "out" / "report" / "test_at_n.md").read_text()


def test_tokens_sidecar(tmp_path):
    root = tmp_path / "results"
    run = write_run(root, "a", "toy / a", {"mgsm_en": [1, 0]})
    (run / "tokens.json").write_text(json.dumps({"mgsm_en": {"problems": 2, "generated_tokens": 300}}))
    assert report.load(root).tasks[0].tokens_per_problem == 150
    (run / "tokens.json").write_text(json.dumps({"mgsm_en": {"problems": 5, "generated_tokens": 300}}))
    with pytest.raises(ReportError, match="counts 5 problems"):
        report.load(root)


# ------------------------------------------------------------------ determinism and atomicity

def test_byte_identical_outputs(two_systems, tmp_path):
    first, second = tmp_path / "one", tmp_path / "two"
    report.report(two_systems, first, baseline="toy / base_cot")
    report.report(two_systems, second, baseline="toy / base_cot")
    names = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert Path("report/accuracy_vs_tokens.png") in names and Path("README.md") in names
    assert names == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert (first / "report/accuracy_vs_tokens.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_legend_sits_outside_the_data(two_systems):
    from marco_eval.report.plots import accuracy_figure
    from marco_eval.report.styles import system_styles

    loaded = report.load(two_systems)
    fig = accuracy_figure(loaded, system_styles(loaded))
    fig.canvas.draw()
    legend = fig.axes[-1].get_legend()
    box, right_edge = legend.get_window_extent(), max(ax.get_window_extent().x1 for ax in fig.axes)
    assert box.x0 >= right_edge and box.x1 <= fig.bbox.x1  # right of every panel, inside the image
    assert [t.get_text() for t in legend.get_texts()] == ["toy / base_cot", "toy / mcts_step"]


def test_regenerates_readme_in_place_unchanged(two_systems):
    report.report(two_systems, baseline="toy / base_cot")
    before = (two_systems / "README.md").read_bytes()
    report.report(two_systems, baseline="toy / base_cot")  # the tables' own files do not disturb a rerun
    assert (two_systems / "README.md").read_bytes() == before


def test_committed_results_readme_is_current(tmp_path, monkeypatch):
    """results/README.md and its tables are what the command written in it regenerates
    (text files; the PNG's bytes depend on the matplotlib/freetype build, so only its presence)."""
    readme = REPO / "results" / "README.md"
    line = next(x.strip() for x in readme.read_text().splitlines() if x.startswith("    marco-eval report"))
    args = build_parser().parse_args(shlex.split(line)[1:] + ["--out", str(tmp_path)])
    monkeypatch.chdir(REPO)
    assert args.func(args) == 0
    regenerated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for name in regenerated:
        committed = REPO / "results" / name
        assert committed.is_file(), f"results/{name} is missing: rerun `{line}`"
        if name.suffix != ".png":
            assert committed.read_bytes() == (tmp_path / name).read_bytes(), f"results/{name} is stale: rerun `{line}`"


def test_error_writes_nothing(two_systems, tmp_path):
    (two_systems / "mcts" / "run.json").write_text("{")
    with pytest.raises(ReportError):
        report.report(two_systems, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ errors

def test_malformed_results_json(two_systems):
    path = next((two_systems / "mcts").rglob("results_*.json"))
    path.write_text(path.read_text()[:40])
    with pytest.raises(ReportError, match=r"results_.*not valid lm-eval results JSON"):
        report.load(two_systems)


def test_run_folder_without_manifest_just_works(two_systems, tmp_path):
    """What `lm_eval --output_path results/make_eval` leaves (no run.json): the manifest is derived
    from the results file, the store beside it still counts, and the Runs table says so."""
    run_dir = two_systems / "mcts"
    (run_dir / "run.json").unlink()
    assert cli_main(["report", str(run_dir), "--out", str(tmp_path / "out")]) == 0
    (task,) = report.load(run_dir).tasks
    assert task.system == "toy-model / mcts_step" and task.manifest.derived and task.tokens_per_problem == 800
    runs = (tmp_path / "out" / "report" / "runs.md").read_text()
    assert ("(no run.json: rebuilt from the results file) `lm_eval --model marco_mcts --model_args "
            "pretrained=toy-model,config=mcts_step --tasks mgsm_en`") in runs
    assert {t.system for t in report.load(two_systems).tasks} == {"toy / base_cot", "toy-model / mcts_step"}


def test_slim_without_manifest_names_a_readme_section_that_exists(tmp_path):
    raw = write_run(tmp_path / "raw", "a", "toy / a", {"mgsm_en": [1, 0]})
    (raw / "run.json").unlink()
    with pytest.raises(ReportError, match="no run.json: write one") as caught:
        report.slim_run(raw, tmp_path / "slim")
    section = str(caught.value).split("README, '")[1].split("'")[0]
    headings = [line.lstrip("#").strip().replace("`", "") for line in (REPO / "README.md").read_text().splitlines()
                if line.startswith("## ")]
    assert section in headings


def test_folder_without_runs_is_a_one_line_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli_main(["report", str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no runs: no lm-eval results file (results_*.json) under it;" in err
    assert list(empty.iterdir()) == []  # nothing written
    write_run(empty / "runs", "raw", "toy / a", {"mgsm_en": [1, 0]})  # only gitignored scratch: skipped
    assert cli_main(["report", str(empty)]) == 2
    assert "under it outside runs/ (skipped; --exclude changes that)" in capsys.readouterr().err


@pytest.mark.parametrize("manifest, message", [
    ({"model": "m", "config": "c", "command": "x"}, "missing 'system'"),
    ({"system": "s", "model": "m", "config": "c", "command": "x", "sytem": "s"}, "unknown key 'sytem'"),
    ({"system": "s", "model": "m", "config": "c", "command": 3}, "'command' has the wrong type"),
    ({"system": " ", "model": "m", "config": "c", "command": "x"}, "'system' is empty"),
    ([], "must be a JSON object"),
])
def test_malformed_manifest(tmp_path, manifest, message):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(manifest))
    with pytest.raises(ReportError, match=message):
        report.load_manifest(path)


def test_manifest_that_does_not_match_the_run(tmp_path):
    root = tmp_path / "results"
    run = write_run(root, "a", "toy / a", {"mgsm_en": [1, 0]}, config="mcts_step")
    manifest = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**manifest, "config": "base_cot"}))
    with pytest.raises(ReportError, match="ran config=mcts_step but .* says config 'base_cot'"):
        report.load(root)
    (run / "run.json").write_text(json.dumps({**manifest, "model": "other-model"}))
    with pytest.raises(ReportError, match="ran pretrained=toy-model"):
        report.load(root)


def test_duplicate_system_and_task_names_both_files(tmp_path):
    root = tmp_path / "results"
    write_run(root, "first", "toy / a", {"mgsm_en": [1, 0]})
    write_run(root, "second", "toy / a", {"mgsm_en": [0, 0]})
    with pytest.raises(ReportError, match=r"two runs claim system 'toy / a' task mgsm_en: "
                                          r"first/toy-model/results_.*\.json and second/toy-model/results_.*\.json"):
        report.load(root)


def test_paired_rows_use_the_problems_both_scored(tmp_path):
    """A baseline on more problems (all 250) pairs with a run on the first 100 over those 100."""
    root = tmp_path / "results"
    write_run(root, "base", "toy / base", {"mgsm_en": [1, 0, 1, 0, 0]}, config="base_cot")
    write_run(root, "other", "toy / other", {"mgsm_en": [1, 1, 0]}, config="base_cot")
    report.report(root, tmp_path / "out", baseline="toy / base")
    other = {r["system"]: r for r in csv_rows(tmp_path / "out" / "report" / "mgsm.csv")}["toy / other"]
    assert other["mgsm_en_n_paired"] == "3" and other["mgsm_en_n"] == "3"
    assert float(other["mgsm_en_delta"]) == pytest.approx(2 / 3 - 2 / 3)  # [1,1,0] vs the base's [1,0,1]
    assert (other["mgsm_en_wins"], other["mgsm_en_losses"]) == ("1", "1")


def test_paired_rows_with_no_problem_in_common(tmp_path):
    root = tmp_path / "results"
    write_run(root, "base", "toy / base", {"mgsm_en": [1, 0, 1]})
    write_run(root, "other", "toy / other", {"mgsm_en": [1, 1]}, first_doc=3)
    report.load(root)  # loading is fine; pairing is not
    with pytest.raises(ReportError, match=r"mgsm_en: 'toy / other' \(other/.*\) and 'toy / base' \(base/.*\) "
                                          r"scored different problems \(n=2 vs n=3, no doc_id in common\)"):
        report.report(root, tmp_path / "out", baseline="toy / base")
    with pytest.raises(ReportError, match="not a system with MGSM runs"):
        report.report(root, tmp_path / "out", baseline="toy / nope")


def test_different_data_for_the_same_doc_ids(tmp_path):
    root = tmp_path / "results"
    write_run(root, "base", "toy / base", {"mgsm_en": [1, 0]})
    write_run(root, "other", "toy / other", {"mgsm_en": [1, 1]}, targets=["10", "99"])
    with pytest.raises(ReportError, match="disagree on problem doc_id 1"):
        report.report(root, tmp_path / "out", baseline="toy / base")


def test_samples_from_another_run(tmp_path):
    root = tmp_path / "results"
    run = write_run(root, "a", "toy / a", {"mgsm_en": [1, 0, 0]})
    results = next(run.rglob("results_*.json"))
    doc = json.loads(results.read_text())
    doc["results"]["mgsm_en"]["exact_match,flexible-extract"] = 0.9
    results.write_text(json.dumps(doc))
    with pytest.raises(ReportError, match="mean exact_match 0.333333 differs"):
        report.load(root)
    next(run.rglob("samples_*.jsonl")).unlink()
    with pytest.raises(ReportError, match="rerun lm_eval with --log_samples"):
        report.load(root)


def test_store_that_does_not_match(tmp_path):
    root = tmp_path / "results"
    run = write_run(root, "a", "toy / a", {"mgsm_en": [1, 0]}, candidates={"mgsm_en": [["10"], ["0"], ["1"]]})
    with pytest.raises(ReportError, match=r"requests\.jsonl: mgsm_en records do not match"):
        report.load(root)
    (run / "requests.jsonl").write_text('{"task": "mgsm_en"}\n')
    with pytest.raises(ReportError, match=r"requests\.jsonl:1: field 'doc_id' missing"):
        report.load(root)


def test_cli_errors_are_one_line(two_systems, capsys):
    (two_systems / "mcts" / "run.json").write_text("{")
    assert cli_main(["report", str(two_systems)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run.json" in err
    assert cli_main(["report", str(two_systems), "--keep-text"]) == 2
    assert "--keep-text only applies to --slim" in capsys.readouterr().err


def test_excluded_raw_runs(two_systems, tmp_path):
    raw = two_systems / "runs" / "raw"
    (raw / "m").mkdir(parents=True)
    shutil.copy(next((two_systems / "mcts").rglob("results_*.json")), raw / "m")  # no run.json yet: raw
    assert len(report.load(two_systems).runs) == 2  # results/runs/ is skipped by default
    with pytest.raises(ReportError, match="rerun lm_eval with --log_samples"):  # read when not excluded
        report.load(two_systems, exclude=())


# ------------------------------------------------------------------ translation and human judgement

def test_translation_and_judge_tables(tmp_path):
    root = tmp_path / "results"
    run = root / "tr"
    (run / "m").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"system": "toy / mcts_step", "model": "toy", "config": "mcts_step",
                                              "command": "x"}))
    doc = {"results": {"wmt22_zh_en": {"bleu,output": 21.5, "bleu_stderr,output": "N/A", "chrf++,output": 48.25,
                                       "ter,output": 70.0,
                                       "bleu_signature,output": "nrefs:2|case:mixed|tok:13a|smooth:exp|version:2.6.0",
                                       "bleu_signature_stderr,output": "N/A"}},
           "n-samples": {"wmt22_zh_en": {"original": 1875, "effective": 50}},
           "config": {"model": "marco_mcts", "model_args": {"pretrained": "toy"}}, "total_evaluation_time_seconds": "5"}
    (run / "m" / f"results_{STAMP}.json").write_text(json.dumps(doc))
    summary = {"schema_version": 1, "task": "colloquial_zh_en",
               "systems": [{"system": "toy / mcts_step", "n_items": 20, "n_ratings": 80, "adequacy_mean": 3.5,
                            "adequacy_ci": [3.1, 3.9], "fluency_mean": None, "fluency_ci": None}],
               "alpha": {"adequacy": 0.61, "fluency": None}}
    (root / "sheet.summary.json").write_text(json.dumps(summary))
    report.report(root, tmp_path / "out")
    tr = csv_rows(tmp_path / "out" / "report" / "translation.csv")
    assert tr == [{"system": "toy / mcts_step", "task": "wmt22_zh_en", "n": "50", "bleu": "21.5", "chrf++": "48.25",
                   "ter": "70.0", "comet": "", "signatures": "bleu_signature: nrefs:2|case:mixed|tok:13a|smooth:exp|version:2.6.0",
                   "sources": "R1"}]
    human = csv_rows(tmp_path / "out" / "report" / "human.csv")
    assert human[0]["adequacy"] == "3.5" and human[0]["fluency"] == "" and human[0]["sources"] == "J1"
    assert "adequacy = 0.610" in (tmp_path / "out" / "report" / "human.md").read_text()
    (root / "sheet.summary.json").write_text(json.dumps({"systems": [{"system": "x"}]}))
    with pytest.raises(ReportError, match=r"sheet\.summary\.json: systems\[0\] is malformed"):
        report.load(root)


def training_summary(**changes) -> dict:
    """The shape `marco-eval train` writes (marco_eval/train/sft.py), with invented figures."""
    doc = {"base_model": "toy", "base_model_path": "/models/toy", "train_rows": 12, "steps": 3, "epochs": 1.0,
           "config": {"output_dir": "checkpoints/toy-cot", "precision": "bf16", "max_length": 512, "learning_rate": 2e-5},
           "data": {"demo": {"read": 10, "dropped": {"tags": 2}, "kept": 8, "used": 8},
                    "synth": {"read": 4, "dropped": {}, "kept": 4, "used": 4}},
           "losses": [{"step": i + 1, "loss": x} for i, x in enumerate([1.0, 0.8, 0.7, 0.7, 0.6, 0.4])],
           "train_loss": 0.7, "train_seconds": 30.4, "wall_seconds": 41.0}
    return doc | changes


def test_training_table_from_summary_and_its_command(two_systems, tmp_path):
    folder = two_systems / "training" / "toy-cot"
    folder.mkdir(parents=True)
    (folder / "training_summary.json").write_text(json.dumps(training_summary()))
    (folder / "run.json").write_text(json.dumps({"command": "marco-eval train toy.yaml"}))
    lora = two_systems / "training" / "toy-lora"
    lora.mkdir()
    config = training_summary()["config"] | {"output_dir": "checkpoints/toy-lora", "lora": {"r": 8, "alpha": 16}}
    (lora / "training_summary.json").write_text(json.dumps(training_summary(config=config, command="marco-eval train l.yaml")))
    report.report(two_systems, tmp_path / "out")
    row, lora_row = csv_rows(tmp_path / "out" / "report" / "training.csv")
    assert (row["method"], lora_row["method"]) == ("full-parameter", "LoRA r=8")
    assert row["rows_per_source"] == "demo 8, synth 4" and row["train_rows"] == "12" and row["steps"] == "3"
    assert (row["loss_first_quarter"], row["loss_last_quarter"], row["train_loss"]) == ("0.9", "0.5", "0.7")
    assert row["command"] == "marco-eval train toy.yaml" and row["source"] == "T1"
    assert "0.900 → 0.500" in (tmp_path / "out" / "report" / "training.md").read_text()
    runs = (tmp_path / "out" / "report" / "runs.md").read_text()
    assert "| T1 | training/toy-cot/training_summary.json | (training) checkpoints/toy-cot |" in runs
    readme = (tmp_path / "out" / "README.md").read_text()
    assert readme.index("### Training runs") < readme.index("### Runs (sources)")

    # the command written by newer `marco-eval train` inside the summary wins; none at all is an error
    (folder / "training_summary.json").write_text(json.dumps(training_summary(command="marco-eval train new.yaml")))
    assert report.load(two_systems).training[0].command == "marco-eval train new.yaml"
    (folder / "run.json").unlink()
    (folder / "training_summary.json").write_text(json.dumps(training_summary()))
    with pytest.raises(ReportError, match="training_summary.json: no command recorded: write run.json beside it"):
        report.load(two_systems)
    (folder / "training_summary.json").write_text(json.dumps(training_summary(losses="low")))
    with pytest.raises(ReportError, match="'losses' is missing or not list"):
        report.load(two_systems)


# ------------------------------------------------------------------ compare and slim

def test_compare(two_systems, tmp_path):
    text, moved = report.compare(two_systems, two_systems)
    assert moved == 0 and "| toy / mcts_step | MGSM-En | 80.00" in text
    new = tmp_path / "new"
    shutil.copytree(two_systems, new)
    shutil.rmtree(new / "mcts")
    write_run(new, "mcts", "toy / mcts_step", {"mgsm_en": [0] * 10})  # collapsed to 0%
    text, moved = report.compare(two_systems, new)
    row = next(line for line in text.splitlines() if line.startswith("| toy / mcts_step"))
    assert "| 0.00 | -80.00 | yes |" in row and moved == 1
    assert cli_main(["report", "--compare", str(two_systems), str(new)]) == 1
    assert cli_main(["report", "--compare", str(two_systems), str(two_systems)]) == 0


def test_slim_drops_dataset_text(tmp_path):
    raw = write_run(tmp_path / "raw", "a", "toy / a", {"mgsm_en": [1, 0]},
                    candidates={"mgsm_en": [["10"], ["0"]]})
    samples = next(raw.rglob("samples_*.jsonl"))
    rows = [dict(json.loads(line), doc={"question": "Q?"}, arguments={"gen_args_0": {"arg_0": "Q?"}},
                 resps=[["Restating Q? first"]])
            for line in samples.read_text().splitlines()]
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (raw / "trees").mkdir()
    (raw / "trees" / "t.json").write_text("{}")
    written = report.slim_run(raw, tmp_path / "slim")
    names = sorted(p.relative_to(tmp_path / "slim").as_posix() for p in written)
    assert "trees/t.json" not in names and "requests.jsonl" in names and "run.json" in names
    slim_samples = next((tmp_path / "slim").rglob("samples_*.jsonl")).read_text()
    assert "Q?" not in slim_samples and '"exact_match"' in slim_samples and '"filtered_resps"' in slim_samples
    store = raw / "requests.jsonl"
    store.write_text("".join(json.dumps(dict(json.loads(line), text="Restating Q?")) + "\n"
                             for line in store.read_text().splitlines()))
    report.slim_run(raw, tmp_path / "slim")
    assert "Q?" not in (tmp_path / "slim" / "requests.jsonl").read_text()
    assert report.load(tmp_path / "slim").tasks[0].accuracy == 0.5
    report.slim_run(raw, tmp_path / "kept", keep_text=True)  # our own data: docs and texts stay
    kept = [json.loads(line) for line in next((tmp_path / "kept").rglob("samples_*.jsonl")).read_text().splitlines()]
    assert kept[0]["doc"] == {"question": "Q?"} and kept[0]["resps"] == [["Restating Q? first"]]
    assert "arguments" not in kept[0] and "Restating Q?" in (tmp_path / "kept" / "requests.jsonl").read_text()
