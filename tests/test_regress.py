"""`marco-eval regress BASELINE CANDIDATE` (issue #31): the exit status a CI trusts, on hand-made
runs whose p values were worked out by hand, and on the committed runs. Invented problems and
sentences only (no dataset text)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from test_report import STAMP, write_run

from marco_eval import translation
from marco_eval.cli import build_parser
from marco_eval.cli import main as cli_main
from marco_eval.report import ReportError
from marco_eval.report.regress import regress
from marco_eval.report.statistics import mcnemar_worse, paired_corpus_bootstrap, shifted_bootstrap_p

REPO = Path(__file__).resolve().parent.parent
SETTINGS = {"simulations": 8, "children": 2, "temperature": 0.0, "store": "requests.jsonl", "max_batch": 16}


def pair(tmp_path, base: dict, cand: dict, base_settings=None, cand_settings=None, **kwargs) -> tuple[Path, Path]:
    """Two runs of two models with the same config (settings unless overridden)."""
    a = write_run(tmp_path, "old", "old-ckpt / mcts_step", base, model="old-ckpt",
                  settings=SETTINGS if base_settings is None else base_settings)
    b = write_run(tmp_path, "new", "new-ckpt / mcts_step", cand, model="new-ckpt",
                  settings=SETTINGS if cand_settings is None else cand_settings, **kwargs)
    return a, b


def run_cli(capsys, *args) -> tuple[int, str, str]:
    status = cli_main(["regress", *map(str, args)])
    out = capsys.readouterr()
    return status, out.out, out.err


# ------------------------------------------------------------------ the tests themselves

def test_one_sided_mcnemar_known_values():
    assert mcnemar_worse(0, 0) == 1.0  # no discordant problem: nothing says worse
    assert mcnemar_worse(0, 5) == 1 / 32 and mcnemar_worse(5, 0) == 1.0
    assert mcnemar_worse(3, 13) == pytest.approx((1 + 16 + 120 + 560) / 2 ** 16)  # the committed runs' counts


def test_shifted_bootstrap_p():
    estimates = np.linspace(-1, 1, 1001)  # centred on 0
    assert shifted_bootstrap_p(estimates, 0.0) == pytest.approx(502 / 1002)
    assert shifted_bootstrap_p(estimates, -2.0) == 1 / 1002  # below every null estimate
    assert shifted_bootstrap_p(estimates, -1.5, margin=1.5) == pytest.approx(502 / 1002)  # on the H0 boundary
    assert shifted_bootstrap_p(estimates, -2.0, margin=1.5) == pytest.approx(252 / 1002)  # null in [-2.5, -0.5]


# ------------------------------------------------------------------ MGSM: exit statuses

def test_clear_regression_exits_1(tmp_path, capsys):
    a, b = pair(tmp_path, {"mgsm_en": [1] * 15 + [0] * 5}, {"mgsm_en": [1] * 5 + [0] * 15})
    status, out, _ = run_cli(capsys, a, b)
    assert status == 1
    row = next(line for line in out.splitlines() if line.startswith("| MGSM-En"))
    assert "| 20 | 75.00 | 25.00 | -50.00 [" in row and "| 0/10 | <0.001 |" in row and row.endswith("| worse |")
    assert "paired on the 20 problems both scored (baseline 20, candidate 20)" in out
    assert "Verdict: worse on MGSM-En (exit 1)." in out


def test_tie_exits_0(tmp_path, capsys):
    scores = {"mgsm_en": [1, 0] * 10, "mgsm_zh": [0, 1] * 10}
    a, b = pair(tmp_path, scores, scores)
    status, out, _ = run_cli(capsys, a, b)
    assert status == 0 and out.count("not significantly worse") == 2
    assert "Verdict: no task is significantly worse (exit 0)." in out


def test_a_better_candidate_is_not_worse(tmp_path):
    a, b = pair(tmp_path, {"mgsm_en": [0] * 20}, {"mgsm_en": [1] * 20})
    (row,) = regress(a, b).rows
    assert row.delta == 100 and row.p == 1.0 and not row.worse


def test_different_search_settings_exit_2_naming_the_first_difference(tmp_path, capsys):
    a, b = pair(tmp_path, {"mgsm_en": [1, 0]}, {"mgsm_en": [1, 0]}, cand_settings={**SETTINGS, "simulations": 4})
    status, out, err = run_cli(capsys, a, b)
    assert status == 2 and out == "" and err.count("\n") == 1
    assert err == ("marco-eval: error: search settings differ: simulations=8 (baseline) vs 4 (candidate) in "
                   "mgsm_en; compare runs of the same config\n")


def test_model_hardware_and_output_keys_are_not_settings(tmp_path):
    other = {**SETTINGS, "store": "elsewhere.jsonl", "max_batch": 64, "dtype": "float32", "tree_dir": "trees"}
    a, b = pair(tmp_path, {"mgsm_en": [1, 0]}, {"mgsm_en": [1, 0]}, cand_settings=other)
    assert regress(a, b).exit_status == 0  # pretrained differs too: it is what is compared


def test_a_key_an_older_run_did_not_record_counts_as_its_default(tmp_path):
    a, b = pair(tmp_path, {"mgsm_en": [1, 0]}, {"mgsm_en": [1, 0]}, cand_settings={**SETTINGS, "token_cap": None})
    assert regress(a, b).exit_status == 0
    b2 = write_run(tmp_path, "new2", "new-ckpt / mcts_step", {"mgsm_en": [1, 0]}, model="new-ckpt",
                   settings={**SETTINGS, "token_cap": 256})
    with pytest.raises(ReportError, match=r"token_cap=null \(baseline\) vs 256 \(candidate\)"):
        regress(a, b2)


def test_no_shared_problems_exits_2(tmp_path, capsys):
    a, b = pair(tmp_path, {"mgsm_en": [1] * 5}, {"mgsm_en": [1] * 5}, first_doc=5)
    status, out, err = run_cli(capsys, a, b)
    assert status == 2 and out == "" and err.count("\n") == 1
    assert "scored different problems (n=5 vs n=5, no doc_id in common)" in err


def test_pairs_on_the_shared_problems_only(tmp_path):
    # the candidate ran problems 5..14, the baseline 0..14: 10 shared, the candidate loses 4 of them
    a, b = pair(tmp_path, {"mgsm_en": [0] * 5 + [1] * 10}, {"mgsm_en": [0] * 4 + [1] * 6}, first_doc=5)
    (row,) = regress(a, b).rows
    assert (row.n, row.baseline, row.candidate, row.wins, row.losses) == (10, 100.0, 60.0, 0, 4)


def test_different_tasks_exit_2(tmp_path, capsys):
    a, b = pair(tmp_path, {"mgsm_en": [1, 0], "mgsm_zh": [1, 0]}, {"mgsm_en": [1, 0]})
    status, _, err = run_cli(capsys, a, b)
    assert status == 2 and "tasks differ: baseline ran mgsm_en, mgsm_zh, candidate ran mgsm_en" in err


def test_a_folder_of_several_systems_and_a_missing_path_exit_2(tmp_path, capsys):
    a, b = pair(tmp_path, {"mgsm_en": [1, 0]}, {"mgsm_en": [1, 0]})
    status, _, err = run_cli(capsys, tmp_path, b)
    assert status == 2 and "holds 2 systems" in err and err.count("\n") == 1
    status, _, err = run_cli(capsys, a, tmp_path / "nowhere")
    assert status == 2 and "candidate" in err and "no such run folder or results file" in err


def test_holm_turns_a_borderline_task_around(tmp_path):
    # MGSM-En: 5 losses, no win: one-sided p = 1/32 = 0.031, worse on its own at alpha 0.05 ...
    en_base, en_cand = [1] * 5 + [0] * 5, [0] * 10
    alone = regress(*pair(tmp_path / "alone", {"mgsm_en": en_base}, {"mgsm_en": en_cand}))
    assert alone.rows[0].p == alone.rows[0].p_holm == 1 / 32 and alone.exit_status == 1
    # ... but one of two tests (MGSM-Zh tied): Holm doubles the smaller p, 0.0625, not worse
    tied = [1, 0] * 5
    both = regress(*pair(tmp_path / "both", {"mgsm_en": en_base, "mgsm_zh": tied}, {"mgsm_en": en_cand, "mgsm_zh": tied}))
    en, zh = both.rows
    assert (en.task, en.p, en.p_holm, en.worse) == ("mgsm_en", 1 / 32, 1 / 16, False)
    assert (zh.p, zh.p_holm) == (1.0, 1.0) and both.exit_status == 0
    # a looser alpha lets it through again
    assert regress(*pair(tmp_path / "loose", {"mgsm_en": en_base, "mgsm_zh": tied},
                         {"mgsm_en": en_cand, "mgsm_zh": tied}), alpha=0.1).exit_status == 1


def test_margin(tmp_path, capsys):
    # 100 problems, the candidate loses 10 and wins none: 10 points worse
    a, b = pair(tmp_path, {"mgsm_en": [1] * 50 + [0] * 50}, {"mgsm_en": [1] * 40 + [0] * 60})
    assert run_cli(capsys, a, b)[0] == 1
    status, out, _ = run_cli(capsys, a, b, "--margin", "2")  # worse by more than 2 points: yes
    assert status == 1 and "worse by more than 2 points" in out and "paired bootstrap, shifted" in out
    status, out, _ = run_cli(capsys, a, b, "--margin", "20")  # by more than 20: no
    assert status == 0
    (row,) = regress(a, b, margin=20).rows
    assert row.mcnemar_p == mcnemar_worse(0, 10) and row.p > 0.5  # McNemar still shown, not the test


def test_json_beside_the_table(tmp_path, capsys):
    a, b = pair(tmp_path, {"mgsm_en": [1] * 15 + [0] * 5}, {"mgsm_en": [1] * 5 + [0] * 15})
    status, out, _ = run_cli(capsys, a, b, "--json", tmp_path / "r.json")
    doc = json.loads((tmp_path / "r.json").read_text())
    assert status == doc["exit_status"] == 1 and "| MGSM-En |" in out
    assert doc["worse_tasks"] == ["mgsm_en"] and doc["rows"][0]["wins"] == 0 and doc["rows"][0]["losses"] == 10
    assert doc["baseline"] == "old-ckpt / mcts_step" and doc["alpha"] == 0.05
    status, out, _ = run_cli(capsys, a, b, "--json", "-")
    assert status == 1 and json.loads(out) == doc


def test_results_files_as_arguments(tmp_path):
    a, b = pair(tmp_path, {"mgsm_en": [1] * 15 + [0] * 5}, {"mgsm_en": [1] * 5 + [0] * 15})
    files = [next(p.rglob("results_*.json")) for p in (a, b)]
    result = regress(*files)
    assert result.exit_status == 1 and result.baseline == "old-ckpt / mcts_step"  # run.json found above the file


def test_bad_alpha_is_a_one_line_error(tmp_path, capsys):
    a, b = pair(tmp_path, {"mgsm_en": [1, 0]}, {"mgsm_en": [1, 0]})
    status, _, err = run_cli(capsys, a, b, "--alpha", "1.5")
    assert status == 2 and "--alpha must lie in (0, 1)" in err


# ------------------------------------------------------------------ translation

REFS = [f"the {c} cat sat on the {w} mat today" for c, w in zip(
    ["red", "big", "old", "shy", "fat", "tiny", "grey", "calm", "wild", "lazy"] * 4,
    ["blue", "warm", "flat", "new", "soft", "wet", "dry", "long", "wide", "odd"] * 4)]


def write_translation_run(root: Path, name: str, model: str, hypotheses: list[str], *, keep_doc: bool = True,
                          references: list[list[str]] | None = None) -> Path:
    """A colloquial_zh_en run as lm-eval writes it (filter "output"), invented sentences."""
    references = references or [[r] for r in REFS]
    run = root / name
    (run / "m").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"system": f"{model} / base_cot", "model": model, "config": "base_cot",
                                              "command": "x"}))
    items = list(zip(references, hypotheses))
    doc = {"results": {"colloquial_zh_en": {"bleu,output": translation.corpus_score("bleu", items),
                                            "chrf++,output": translation.corpus_score("chrf++", items)}},
           "n-samples": {"colloquial_zh_en": {"original": len(items), "effective": len(items)}},
           "config": {"model": "marco_mcts", "model_args": {"pretrained": model, "config": "base_cot"},
                      "marco_eval_config": {**SETTINGS, "pretrained": model}}}
    (run / "m" / f"results_{STAMP}.json").write_text(json.dumps(doc))
    rows = [{"doc_id": i, **({"doc": {"references": refs}} if keep_doc else {}), "target": refs[0],
             "filtered_resps": [hyp], "filter": "output", "doc_hash": f"h{i}"} for i, (refs, hyp) in enumerate(items)]
    (run / "m" / f"samples_colloquial_zh_en_{STAMP}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_translation_regression_and_tie(tmp_path, capsys):
    good = [r.replace("today", "now") for r in REFS]
    bad = [r.split(" on ")[0] for r in REFS[:20]] + good[20:]  # half the sentences lose their second half
    a = write_translation_run(tmp_path, "old", "old-ckpt", good)
    b = write_translation_run(tmp_path, "new", "new-ckpt", bad)
    status, out, _ = run_cli(capsys, a, b)
    assert status == 1 and "Verdict: worse on Colloquial zh-en (exit 1)." in out
    assert "paired on the 40 sentences both scored" in out
    rows = regress(a, b).rows
    assert [r.metric for r in rows] == ["bleu", "chrf++"] and all(r.worse and r.hi < 0 for r in rows)
    assert rows[0].baseline == pytest.approx(translation.corpus_score("bleu", zip([[r] for r in REFS], good)))
    assert rows[0].p_holm == min(1.0, 2 * min(r.p for r in rows))  # Holm over both metrics
    c = write_translation_run(tmp_path, "same", "same-ckpt", good)
    assert run_cli(capsys, a, c)[0] == 0


def test_paired_corpus_bootstrap_matches_sacrebleu(tmp_path):
    good = [r.replace("today", "now") for r in REFS]
    bad = [r.split(" on ")[0] for r in REFS]
    refs = [[r] for r in REFS]
    for metric in ("bleu", "chrf++"):
        sys_score, base_score, deltas = paired_corpus_bootstrap(metric, refs, bad, good, resamples=200)
        assert sys_score == pytest.approx(translation.corpus_score(metric, zip(refs, bad)))
        assert base_score == pytest.approx(translation.corpus_score(metric, zip(refs, good)))
        assert len(deltas) == 200 and np.all(deltas < 0)  # every resample keeps the bad one worse
        again = paired_corpus_bootstrap(metric, refs, bad, good, resamples=200)[2]
        assert np.array_equal(deltas, again)  # seeded


def test_slimmed_multi_reference_run_is_refused(tmp_path, capsys):
    refs = [[r, r.replace("cat", "dog")] for r in REFS]
    hyps = [r.replace("cat", "dog") for r in REFS]
    a = write_translation_run(tmp_path, "old", "old-ckpt", hyps, references=refs, keep_doc=False)
    b = write_translation_run(tmp_path, "new", "new-ckpt", hyps, references=refs)
    status, _, err = run_cli(capsys, a, b)
    assert status == 2 and err.count("\n") == 1 and "a slimmed multi-reference run keeps only the first" in err


# ------------------------------------------------------------------ the committed runs and the CLI's help

def test_committed_checkpoint_regression(capsys, monkeypatch):
    """The issue's check: the SFT checkpoint marco-o1-cot is 10 points below its base model's
    greedy CoT on the 100 MGSM-En problems both ran: 3 wins, 13 losses, p = 0.011."""
    monkeypatch.chdir(REPO)
    status, out, _ = run_cli(capsys, "results/mgsm/en_base_cot", "results/mgsm/en_marco_o1_cot")
    assert status == 1 and "Verdict: worse on MGSM-En (exit 1)." in out
    assert "| MGSM-En | accuracy | 100 | 26.00 | 16.00 | -10.00 [" in out and "| 3/13 | 0.011 |" in out
    assert "paired on the 100 problems both scored (baseline 250, candidate 100)" in out
    readme = (REPO / "README.md").read_text()
    shown = readme.split("```\nBaseline:  qwen2.5-coder-0.5b / base_cot")[1].split("\n```")[0]
    assert "Baseline:  qwen2.5-coder-0.5b / base_cot" + shown == out.strip()  # the README shows the real output


def test_compare_help_says_it_is_a_same_system_drift_check():
    report_parser = build_parser()._subparsers._group_actions[0].choices["report"]
    compare = next(a for a in report_parser._actions if a.dest == "compare")
    assert "same-system drift check" in compare.help and "marco-eval regress" in compare.help
    assert math.isclose(build_parser().parse_args(["regress", "a", "b"]).alpha, 0.05)
