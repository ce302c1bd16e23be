"""`marco-eval report`, "Where the search gains and loses" (issue #19): every statistic on a
small hand-made store whose answers were worked out by hand (in the comments), plus Holm,
pass@k, AUROC, the reflection counts, and stores written before per-rollout data existed."""

import json
import math

import numpy as np
import pytest
from test_report import csv_rows, write_run

from marco_eval import report
from marco_eval.report import ReportError
from marco_eval.report.search_stats import BudgetPoint, aurocs_with_ci, overtakes, pass_at_k
from marco_eval.report.statistics import Accuracy, holm

MODEL = "toy-model"


def rollouts(answers, rewards, tokens=100):
    return [{"answer": a, "reward": r, "tokens": tokens, "finish": "</Output>", "simulation": i + 1}
            for i, (a, r) in enumerate(zip(answers, rewards))]


def trace(*points):
    return [{"answer": a, "tokens": t} for a, t in points]


# Four problems, targets 10, 11, 12, 13 (write_run's default: doc_id + 10).
#   P0 rollouts 10 (0.9), 7 (0.2), 10 (0.8)         pick 10: right    n=3 c=2
#   P1 rollouts 5 (0.6), 11 (0.5), 5 (0.7)          pick 5:  wrong, but 11 was found   n=3 c=1
#   P2 rollouts 1 (0.3), 2 (0.5), none (0.1)        pick 2:  wrong, never found        n=3 c=0
#   P3 rollouts 13 (0.95), 9 (0.1), 9 (0.2), 9 (0.3) pick 13: right                  n=4 c=1
SEARCH_RECORDS = [
    {"answer": "10", "rollouts": rollouts(["10", "7", "10"], [0.9, 0.2, 0.8]),
     "trace": trace(("10", 100), ("10", 200), ("10", 300))},
    {"answer": "5", "rollouts": rollouts(["5", "11", "5"], [0.6, 0.5, 0.7]),
     "trace": trace(("11", 100), ("5", 220))},  # a search that ended after 2 simulations
    {"answer": "2", "rollouts": rollouts(["1", "2", None], [0.3, 0.5, 0.1]),
     "trace": trace(("1", 50), ("1", 150), ("2", 260))},
    {"answer": "13", "rollouts": rollouts(["13", "9", "9", "9"], [0.95, 0.1, 0.2, 0.3]),
     "trace": trace(("13", 120), ("9", 240), ("13", 330))},
]


def search_run(root, name="mcts", system="toy / mcts_step", config="mcts_step", records=SEARCH_RECORDS,
               final_answer="max_value"):
    return write_run(root, name, system, {"mgsm_en": [1, 0, 0, 1]}, config=config, model=MODEL,
                     candidates={"mgsm_en": [[rec["answer"]] for rec in records]},
                     records={"mgsm_en": records}, final_answer=final_answer)


@pytest.fixture
def searched(tmp_path):
    root = tmp_path / "results"
    search_run(root)
    report.report(root, tmp_path / "out")
    return tmp_path / "out"


# ------------------------------------------------------------------ the statistics alone

def test_pass_at_k_known_values():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)  # c / n
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(4, 1, 3) == pytest.approx(1 - 1 / 4)  # 1 - C(3,3)/C(4,3)
    assert pass_at_k(5, 4, 2) == 1.0  # fewer wrong than k: always a right one
    assert pass_at_k(4, 0, 2) == 0.0 and pass_at_k(3, 3, 3) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_holm_known_values():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> kept non-decreasing: 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.2]) == [0.2] and holm([]) == []


def pooled_auroc(rewards, labels):
    """aurocs_with_ci's pooled AUROC as (value, lo, hi)."""
    pooled, _ = aurocs_with_ci(rewards, labels)
    return pooled.value, pooled.lo, pooled.hi


def test_auroc_of_known_orderings():
    by_problem = lambda *xs: [np.array(x, dtype=float) for x in xs]  # noqa: E731
    labels = [np.array([True, False]), np.array([True, False])]
    # correct 0.9, 0.5 against wrong 0.5, 0.1: pairs 1 + 1 + 1/2 (the tie) + 1 = 3.5 of 4
    assert pooled_auroc(by_problem([0.9, 0.5], [0.5, 0.1]), labels)[0] == pytest.approx(0.875)
    assert pooled_auroc(by_problem([0.9, 0.1], [0.8, 0.2]), labels) == (1.0, 1.0, 1.0)  # every resample perfect
    assert pooled_auroc(by_problem([0.1, 0.9], [0.2, 0.8]), labels)[0] == 0.0
    assert pooled_auroc(by_problem([0.9], [0.1]), [np.array([True]), np.array([True])]) == (None, None, None)


def test_auroc_ci_resamples_problems_not_rollouts():
    """Problem A all right (0.9, 0.8), B all wrong (0.2, 0.1), C one of each (0.7, 0.3): every
    correct reward beats every wrong one, so each resample of problems that has both kinds has
    AUROC 1; those of only A or only B (2/27 of them) have no pair and are skipped, not scored."""
    rewards = [np.array([0.9, 0.8]), np.array([0.2, 0.1]), np.array([0.7, 0.3])]
    labels = [np.array([True, True]), np.array([False, False]), np.array([True, False])]
    assert pooled_auroc(rewards, labels) == (1.0, 1.0, 1.0)


def test_overtakes_reads_the_budget_where_the_search_stays_above():
    def curve(points):
        return [BudgetPoint(k, x, Accuracy(y, y, y, 4)) for k, (x, y) in enumerate(points, 1)]

    vote = curve([(100, 0.2), (200, 0.25), (400, 0.3)])
    assert overtakes(curve([(100, 0.1), (200, 0.3), (400, 0.5)]), vote) == pytest.approx(200)
    assert overtakes(curve([(100, 0.3), (200, 0.2), (400, 0.5)]), vote) == pytest.approx(400)  # dips below at 200
    assert overtakes(curve([(100, 0.5), (200, 0.5), (400, 0.2)]), vote) is None  # below at the end
    assert overtakes(curve([(1000, 0.9)]), vote) is None  # no budget in common


# ------------------------------------------------------------------ the section on a hand-made store

def test_find_or_pick_on_a_known_store(searched):
    (row,) = csv_rows(searched / "report" / "search_coverage.csv")
    assert (row["final_answer"], row["problems"], row["k"]) == ("max_value", "4", "3")
    # pass@1 = mean(2/3, 1/3, 0, 1/4) = 1.25 / 4; pass@3 = mean(1, 1, 0, 1 - C(3,3)/C(4,3)) = 2.75 / 4
    assert float(row["pass_at_1"]) == pytest.approx(1.25 / 4, abs=1e-6)
    assert float(row["pass_at_k"]) == pytest.approx(2.75 / 4)
    assert float(row["pick"]) == 0.5 and float(row["oracle"]) == 0.75
    # majority: P0 10 (right), P1 5, P2 1 (tie 1-1: first seen), P3 9 -> 1 of 4
    # reward-weighted: P0 10 (1.7 vs 0.2), P1 5 (1.3 vs 0.5), P2 2 (0.5 vs 0.3), P3 13 (0.95 vs 0.6) -> 2 of 4
    assert float(row["majority_vote"]) == 0.25 and float(row["weighted_vote"]) == 0.5
    assert (row["found_not_picked"], row["never_found"], row["picked_unfound"]) == ("1", "1", "0")
    readme = (searched / "README.md").read_text()
    assert ("- MGSM-En, toy / mcts_step: some rollout had the right answer on 75.00% of the 4 problems, its max_value "
            "pick on 50.00%. Of the 2 problems the pick got wrong, 1 failed at the pick (some rollout had the answer) "
            "and 1 at the search (no rollout had it).") in readme
    assert "Runs with per-rollout data: toy / mcts_step MGSM-En (R1)." in readme


def test_reward_separation_and_calibration_on_a_known_store(searched):
    (row,) = csv_rows(searched / "report" / "reward_auroc.csv")
    # correct rewards 0.9, 0.8, 0.5, 0.95 against the 9 wrong ones (0.2, 0.6, 0.7, 0.3, 0.5, 0.1, 0.1, 0.2, 0.3):
    # 0.9, 0.8 and 0.95 beat all 9 (27 pairs); 0.5 beats 6, ties 1 (0.5), loses 2 -> 33.5 of 36
    assert (row["rollouts"], row["correct"], row["pairs"]) == ("13", "4", "36")
    assert float(row["auroc"]) == pytest.approx(33.5 / 36, abs=1e-6)
    assert float(row["auroc_lo"]) <= float(row["auroc"]) <= float(row["auroc_hi"]) <= 1
    # within a problem: P0 0.9, 0.8 beat 0.2 (2 of 2); P1 0.5 loses to 0.6, 0.7 (0 of 2); P2 has no
    # right rollout; P3 0.95 beats 0.1, 0.2, 0.3 (3 of 3) -> 5 of 7 pairs in 3 problems
    assert float(row["auroc_within"]) == pytest.approx(5 / 7, abs=1e-6)
    assert (row["pairs_within"], row["problems_within"]) == ("7", "3")
    assert float(row["auroc_within_lo"]) <= float(row["auroc_within"]) <= float(row["auroc_within_hi"]) <= 1
    assert float(row["mean_reward_correct"]) == pytest.approx(3.15 / 4)
    assert float(row["mean_reward_wrong"]) == pytest.approx(3.0 / 9)
    readme = (searched / "README.md").read_text()
    assert "MGSM-En, toy / mcts_step: pooled over problems, a correct rollout outranked a wrong one by reward in " \
           "93.1% of the 36 pairs (ties count half; AUROC 0.931, 95% CI " \
           f"[{float(row['auroc_lo']):.3f}, {float(row['auroc_hi']):.3f}]); within a problem, where a pick is made, " \
           "in 71.4% of the 7 pairs of the 3 problems with both right and wrong rollouts (AUROC 0.714, 95% CI " \
           f"[{float(row['auroc_within_lo']):.3f}, {float(row['auroc_within_hi']):.3f}])" in readme
    bins = {float(r["bin_lo"]): (int(r["rollouts"]), int(r["correct"]))
            for r in csv_rows(searched / "report" / "reward_calibration.csv")}
    assert len(bins) == 10 and sum(n for n, _ in bins.values()) == 13
    assert bins[0.9] == (2, 2) and bins[0.5] == (2, 1) and bins[0.0] == (0, 0) and bins[0.1] == (2, 0)


def test_accuracy_by_budget_from_the_traces(searched):
    rows = csv_rows(searched / "report" / "accuracy_by_budget.csv")
    # k=1: 10 11 1 13 -> 3 right; k=2: 10 5 1 9 -> 1; k=3: 10 5 (P1 stopped at 2) 2 13 -> 2
    assert [(r["k"], float(r["tokens_per_problem"]), float(r["acc"])) for r in rows] == [
        ("1", 92.5, 0.75), ("2", 202.5, 0.25), ("3", 277.5, 0.5)]
    plot = searched / "report" / "budget_toy-model_mgsm_en.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (searched / "report" / "reward_calibration.png").is_file()
    readme = (searched / "README.md").read_text()
    assert "](report/budget_toy-model_mgsm_en.png)" in readme and "](report/reward_calibration.png)" in readme


def test_search_overtaking_a_vote_is_said_in_words(tmp_path):
    root = tmp_path / "results"
    search_run(root)
    vote = [{"answer": "0", "rollouts": rollouts(["0"], [0.5]), "trace": trace(("0", 90), ("0", 180), ("0", 270))}
            for _ in range(4)]  # never right
    search_run(root, "vote", "toy / self_consistency", "self_consistency", vote, final_answer="vote")
    greedy = [{"answer": "0", "rollouts": rollouts(["0"], [0.5]), "trace": trace(("0", 60))} for _ in range(4)]
    search_run(root, "greedy", "toy / base_cot", "base_cot", greedy, final_answer=None)  # one point, no vote
    report.report(root, tmp_path / "out")
    md = (tmp_path / "out" / "report" / "accuracy_by_budget.md").read_text()
    assert ("- MGSM-En, toy / mcts_step against the vote of toy / self_consistency: the search's curve is above "
            "from 92.5 tokens per problem on, up to the largest budget both reach, 270.0 (on the 4 problems both "
            "ran).") in md
    assert md.count("against the vote of") == 1  # greedy CoT is no vote
    assert (tmp_path / "out" / "report" / "budget_toy-model_mgsm_en.png").is_file()


def test_overtaking_is_read_on_the_problems_both_runs_traced(tmp_path):
    """A search on the first 2 problems against a vote on 6: over all 6 the vote is worse (2 of 6
    against the search's 1 of 2), on the 2 they share it is better (2 of 2)."""
    root = tmp_path / "results"
    mine = [{"answer": a, "rollouts": rollouts([a], [0.5]), "trace": trace((a, 100), (a, 200))} for a in ("10", "0")]
    write_run(root, "mcts", "toy / mcts_step", {"mgsm_en": [1, 0]}, config="mcts_step", model=MODEL,
              candidates={"mgsm_en": [["10"], ["0"]]}, records={"mgsm_en": mine}, final_answer="max_value")
    answers = ["10", "11", "0", "0", "0", "0"]  # right on the two problems the search ran, wrong after
    theirs = [{"answer": a, "rollouts": rollouts([a], [0.5]), "trace": trace((a, 90), (a, 180))} for a in answers]
    write_run(root, "vote", "toy / self_consistency", {"mgsm_en": [1, 1, 0, 0, 0, 0]}, config="self_consistency",
              model=MODEL, candidates={"mgsm_en": [[a] for a in answers]}, records={"mgsm_en": theirs},
              final_answer="vote")
    report.report(root, tmp_path / "out")
    md = (tmp_path / "out" / "report" / "accuracy_by_budget.md").read_text()
    assert ("the search's curve does not stay above the vote's at any budget both reach (on the 2 problems both "
            "ran)") in md


def test_a_curve_above_at_its_last_shared_budget_only_is_not_said_to_stay_above():
    from marco_eval.report.search_tables import Overtake, overtake_words

    assert overtake_words(Overtake(100, 1234.7, 1234.7)) == (
        "the search's curve is above only at the largest budget both reach, 1,234.7 tokens per problem (on the 100 "
        "problems both ran)")


def test_budget_plot_legend_sits_outside_the_data(tmp_path):
    from marco_eval.report.search_plots import budget_figure
    from marco_eval.report.search_tables import budget_table
    from marco_eval.report.styles import system_styles

    root = tmp_path / "results"
    search_run(root)
    loaded = report.load(root)
    _, curves = budget_table(loaded)
    fig = budget_figure(MODEL, "mgsm_en", {"toy / mcts_step": curves["toy / mcts_step", "mgsm_en"]},
                        system_styles(loaded))
    fig.canvas.draw()
    (ax,) = fig.axes
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1


# ------------------------------------------------------------------ older stores and bad ones

def test_stores_without_per_rollout_data_still_load_and_are_named(tmp_path):
    root = tmp_path / "results"
    write_run(root, "old", "toy / base_cot", {"mgsm_en": [1, 0]}, config="base_cot", model=MODEL,
              candidates={"mgsm_en": [["10"], ["0"]]})
    partial = [SEARCH_RECORDS[0], {"answer": "0"}, SEARCH_RECORDS[2], SEARCH_RECORDS[3]]  # one record from before
    search_run(root, "mixed", "toy / mcts_step", records=partial)
    write_run(root, "tok", "toy / mcts_mini32", {"mgsm_en": [1, 1]}, config="mcts_mini32", model=MODEL)
    report.report(root, tmp_path / "out")
    readme = (tmp_path / "out" / "README.md").read_text()
    assert ("Runs without per-rollout data, so not in this section: store written before per-rollout data was "
            "recorded: toy / base_cot (MGSM-En R2), toy / mcts_step (MGSM-En R1); no request store: "
            "toy / mcts_mini32 (MGSM-En R3).") in readme
    assert "No run in these results has per-rollout data yet, so the tables below are empty." in readme
    assert csv_rows(tmp_path / "out" / "report" / "search_coverage.csv") == []


@pytest.mark.parametrize("change, message", [
    (lambda rec: rec["rollouts"][0].update(reward=1.5), r"rollouts\[0\] has reward 1.5, outside \[0, 1\]"),
    (lambda rec: rec["rollouts"][1].pop("finish"), r"rollouts\[1\] needs 'finish'"),
    (lambda rec: rec.update(trace=[{"answer": 3, "tokens": 1}]), r"trace\[0\] needs 'answer'"),
    (lambda rec: rec.update(rollouts="many"), "field 'rollouts' must be a list"),
])
def test_malformed_per_rollout_data_is_a_one_line_error(tmp_path, change, message):
    records = json.loads(json.dumps(SEARCH_RECORDS))
    change(records[0])
    search_run(tmp_path / "results", records=records)
    with pytest.raises(ReportError, match=r"requests\.jsonl:1: " + message):
        report.load(tmp_path / "results")


# ------------------------------------------------------------------ reflection against greedy CoT

def test_reflection_fixed_and_broken_counts(tmp_path):
    root = tmp_path / "results"
    greedy = [1, 1, 0, 0, 0, 0, 1, 0]  # wrong on 2, 3, 4, 5, 7; right on 0, 1, 6
    reflect = [1, 0, 1, 1, 0, 0, 1, 0]  # fixes 2 and 3, breaks 1
    write_run(root, "greedy", "toy / base_cot", {"mgsm_en": greedy}, config="base_cot", model=MODEL)
    write_run(root, "refl", "toy / cot_reflection", {"mgsm_en": reflect}, config="cot_reflection", model=MODEL)
    write_run(root, "other", "other / cot_reflection", {"mgsm_en": reflect}, config="cot_reflection", model="other")
    report.report(root, tmp_path / "out")
    (row,) = csv_rows(tmp_path / "out" / "report" / "reflection.csv")
    assert (row["greedy_wrong"], row["fixed"], row["greedy_right"], row["broken"]) == ("5", "2", "3", "1")
    assert float(row["fixed_share"]) == pytest.approx(0.4) and float(row["broken_share"]) == pytest.approx(1 / 3)
    assert float(row["delta"]) == pytest.approx(1 / 8)  # 4 right against 3
    assert float(row["p_mcnemar"]) == pytest.approx(1.0)  # 2 vs 1: 2 * (C(3,0) + C(3,1)) / 8 capped at 1
    assert row["paper_claim"] == "fixed about half of the hard problems"
    readme = (tmp_path / "out" / "README.md").read_text()
    assert ("of the 5 problems greedy CoT got wrong, reflection fixed 2 (40.00%, 95% CI" in readme
            and "and it broke 1 of the 3 greedy CoT got right: net +12.50 points (McNemar p = 1.000)." in readme)
    assert "- MGSM-En, other / cot_reflection: no base_cot run of model other on this task to compare with." in readme
    assert math.isfinite(float(row["fixed_share_lo"]))


def test_reflection_says_on_how_many_problems_the_phrase_went_in(tmp_path):
    root = tmp_path / "results"
    greedy = [1, 1, 0, 0]
    reflect = [1, 0, 1, 0]
    fired = [0, 1, 1, 0]  # the phrase went in on problems 1 and 2 only
    write_run(root, "greedy", "toy / base_cot", {"mgsm_en": greedy}, config="base_cot", model=MODEL)
    records = [{"rollouts": [{"answer": "1", "reward": 0.5, "tokens": 9, "finish": "</Output>", "reflections": f}],
                "trace": [{"answer": "1", "tokens": 9}]} for f in fired]
    write_run(root, "refl", "toy / cot_reflection", {"mgsm_en": reflect}, config="cot_reflection", model=MODEL,
              candidates={"mgsm_en": [["1"]] * 4}, records={"mgsm_en": records})
    report.report(root, tmp_path / "out")
    (row,) = csv_rows(tmp_path / "out" / "report" / "reflection.csv")
    assert (row["reflected"], row["fixed"], row["broken"]) == ("2", "1", "1")
    # problem 1 (reflected) broke, problem 2 (reflected) fixed; nothing changed elsewhere
    assert (row["fixed_reflected"], row["broken_reflected"], row["fixed_elsewhere"], row["broken_elsewhere"]) == \
        ("1", "1", "0", "0")
    assert "The phrase went in on 2 of the 4 problems" in (tmp_path / "out" / "README.md").read_text()


def test_a_verifier_run_reads_best_of_n_and_both_rewards_from_the_same_rollouts(tmp_path):
    """reward=PATH: the store's reward is the verifier's, `confidence` the Marco-o1 reward of
    the same tokens. The coverage table reads the verifier's best-of-N and weighted vote from
    the rollouts; the AUROC table gets a row per reward."""
    records = [dict(rec, rollouts=[dict(r, confidence=round(1 - r["reward"], 2)) for r in rec["rollouts"]])
               for rec in SEARCH_RECORDS]
    root = tmp_path / "results"
    search_run(root, name="sc", system="toy / self_consistency", config="self_consistency", records=records,
               final_answer="vote")
    report.report(root, tmp_path / "out")
    (row,) = csv_rows(tmp_path / "out" / "report" / "search_coverage.csv")
    # best reward: P0 0.9 -> 10 (right), P1 0.7 -> 5, P2 0.5 -> 2, P3 0.95 -> 13 (right)
    assert float(row["best_reward"]) == 0.5
    verifier, confidence = csv_rows(tmp_path / "out" / "report" / "reward_auroc.csv")
    assert (verifier["system"], confidence["system"]) == ("toy / self_consistency",
                                                          "toy / self_consistency (confidence reward)")
    assert float(verifier["auroc_within"]) == pytest.approx(5 / 7, abs=1e-6)
    assert float(confidence["auroc_within"]) == pytest.approx(2 / 7, abs=1e-6)  # the reverse order, ties aside


def test_verifier_picks_get_verdicts_against_runs_of_the_confidence_reward(tmp_path):
    """The verifier's best-of-N and weighted vote are read from one run's samples and each is
    tested against greedy CoT and self-consistency; the verifier run is never a baseline."""
    records = [dict(rec, rollouts=[dict(r, confidence=0.5) for r in rec["rollouts"]]) for rec in SEARCH_RECORDS]
    for r in records[3]["rollouts"][1:]:  # P3: 13 (0.95) against 9 three times at 0.4: 9 wins the vote (1.2)
        r["reward"] = 0.4
    root = tmp_path / "results"
    search_run(root, name="scv", system="toy / sc_verifier", config="self_consistency", records=records,
               final_answer="vote")
    # the verifier run's own config says so (reward=PATH)
    doc_path = next((root / "scv").rglob("results_*.json"))
    doc = json.loads(doc_path.read_text())
    doc["config"]["marco_eval_config"]["reward"] = "checkpoints/v"
    doc_path.write_text(json.dumps(doc))
    for name, scores in (("base", [0, 0, 0, 1]), ("sc", [1, 0, 0, 0])):
        write_run(root, name, f"toy / {name}", {"mgsm_en": scores}, config=name, model=MODEL)
    report.report(root, tmp_path / "out")
    rows = csv_rows(tmp_path / "out" / "report" / "verdict.csv")
    got = {(r["search"], r["against"]): float(r["search_acc"]) for r in rows}
    # best reward: P0 10 (right), P1 5, P2 2, P3 13 (right); weighted vote: P0 10 (1.7, right), P1 5 (1.3), P2 2, P3 9
    assert got == {("toy / sc_verifier (verifier best-of-N)", "toy / base"): 0.5,
                   ("toy / sc_verifier (verifier best-of-N)", "toy / sc"): 0.5,
                   ("toy / sc_verifier (verifier-weighted vote)", "toy / base"): 0.25,
                   ("toy / sc_verifier (verifier-weighted vote)", "toy / sc"): 0.25}
    readme = (tmp_path / "out" / "README.md").read_text()
    # majority over the same samples: P0 10, P1 5, P2 1 (first of the ties), P3 9: 1 of 4
    assert ("**MGSM-En, toy / sc_verifier.** Against no search: verifier best-of-N 50.00% against base's 25.00% "
            "on 4 problems (Δ +25.00 points, Holm p = 1.000: no significant difference), sc's 25.00% on 4 problems "
            "(Δ +25.00 points") in readme
    assert ("From the same 4 problems' samples: majority vote 25.00%, verifier-weighted vote 25.00% (Δ +0.00 points "
            "over the majority, 0 vs 0 problems, McNemar p = 1.000), verifier best-of-3 50.00%, any sample right "
            "75.00%.") in readme
    assert "The verifier: pooled over problems" in readme and "The confidence reward of the same samples: " in readme


@pytest.mark.parametrize("final_answer, picks", [("max_value", ["verifier best-of-N", "verifier-weighted vote"]),
                                                  ("vote", ["verifier best-of-N"])])
def test_an_mcts_run_with_a_verifier_is_also_read_by_the_flat_picks(tmp_path, final_answer, picks):
    """An MCTS run whose reward was a verifier is its own row under its configured rule; the
    verifier picks read from its rollouts are rows beside it, but not a repeat of its own rule."""
    root = tmp_path / "results"
    records = [dict(rec, rollouts=[dict(r, confidence=0.5) for r in rec["rollouts"]]) for rec in SEARCH_RECORDS]
    search_run(root, name="mv", system="toy / mcts_v", records=records, final_answer=final_answer)
    doc_path = next((root / "mv").rglob("results_*.json"))
    doc = json.loads(doc_path.read_text())
    doc["config"]["marco_eval_config"]["reward"] = "checkpoints/v"
    doc_path.write_text(json.dumps(doc))
    write_run(root, "base", "toy / base", {"mgsm_en": [0, 0, 0, 1]}, config="base", model=MODEL)
    report.report(root, tmp_path / "out")
    rows = csv_rows(tmp_path / "out" / "report" / "verdict.csv")
    assert [r["search"] for r in rows] == ["toy / mcts_v"] + [f"toy / mcts_v ({label})" for label in picks]
    # best reward: P0 10 (right), P1 5, P2 2, P3 13 (right)
    assert float(rows[1]["search_acc"]) == 0.5
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "Read from its own rollouts: verifier best-of-N 50.00% against base's 25.00% on 4 problems" in readme


def test_a_confidence_run_has_one_reward_row(searched):
    assert len(csv_rows(searched / "report" / "reward_auroc.csv")) == 1
    (row,) = csv_rows(searched / "report" / "search_coverage.csv")
    assert float(row["best_reward"]) == 0.5
