"""The reward's AUROC within a problem beside the pooled one (issue #33): a reward that only
knows which problems are easy scores high pooled and 0.5 within; one that orders each problem's
rollouts perfectly scores 1 within whatever the difficulty. On the statistics alone, on
hand-made stores through the report, and in "In short", whose verdict reads the within one."""

import numpy as np
import pytest
from test_report import csv_rows, write_run
from test_report_in_short import run_by_run_of
from test_report_search import MODEL, rollouts, trace

from marco_eval import report
from marco_eval.report.search_stats import Auroc, Separation, aurocs_with_ci
from marco_eval.report.search_tables import separation_sentence
from marco_eval.report.statistics import percentile_interval, resample_indices

# Reward = how easy the problem is, the same for all its rollouts (right: True).
#   P0 3 right, 1 wrong, all 0.9; P1 2 / 2 at 0.6; P2 1 / 3 at 0.3; P3 0 / 4 at 0.1.
# Pooled: right at 0.9 (3) each tie 1 wrong at 0.9, beat 9 -> 9.5; right at 0.6 (2) tie 2, beat 7
# -> 8; right at 0.3 (1) tie 3, beat 4 -> 5.5: 3 * 9.5 + 2 * 8 + 5.5 = 50 of 6 * 10 = 60 pairs.
# Within: P0 3 pairs, P1 4, P2 3, all ties -> 0.5 over 10 pairs in 3 problems.
DIFFICULTY_ONLY = [[(True, 0.9)] * 3 + [(False, 0.9)], [(True, 0.6)] * 2 + [(False, 0.6)] * 2,
                   [(True, 0.3)] + [(False, 0.3)] * 3, [(False, 0.1)] * 4]
# Each problem's right rollouts above its wrong ones, but the easy problem's rewards all low and
# the hard one's all high: P0 right 0.2, 0.15, 0.1, wrong 0.05; P1 right 0.9, wrong 0.8, 0.7, 0.6.
# Pooled: 0.2, 0.15, 0.1 beat only 0.05 (1 each), 0.9 beats all 4 -> 7 of 16. Within: 6 of 6.
ORDERED_WITHIN = [[(True, 0.2), (True, 0.15), (True, 0.1), (False, 0.05)],
                  [(True, 0.9), (False, 0.8), (False, 0.7), (False, 0.6)]]


def columns(problems):
    """(rewards, labels) per problem, as aurocs_with_ci takes them."""
    return ([np.array([r for _, r in p], dtype=float) for p in problems],
            [np.array([right for right, _ in p], dtype=bool) for p in problems])


def records_of(problems):
    """Store records for problems given as (right, reward) rollouts (target: doc_id + 10, a wrong
    rollout answers "0"); the pick is the highest-reward rollout's answer."""
    records = []
    for d, p in enumerate(problems):
        answers = [str(d + 10) if right else "0" for right, _ in p]
        rewards = [r for _, r in p]
        pick = answers[int(np.argmax(rewards))]
        records.append({"answer": pick, "rollouts": rollouts(answers, rewards), "trace": trace((pick, 100))})
    return records


def store(root, problems, name="mcts", system="toy / mcts_step", config="mcts_step"):
    records = records_of(problems)
    scores = [int(rec["answer"] != "0") for rec in records]
    return write_run(root, name, system, {"mgsm_en": scores}, config=config, model=MODEL,
                     candidates={"mgsm_en": [[rec["answer"]] for rec in records]}, records={"mgsm_en": records},
                     final_answer="max_value")


# ------------------------------------------------------------------ the statistics alone

def test_a_reward_that_only_knows_difficulty_is_high_pooled_and_half_within():
    pooled, within = aurocs_with_ci(*columns(DIFFICULTY_ONLY))
    assert pooled.value == pytest.approx(50 / 60) and (pooled.pairs, pooled.problems) == (60, 4)
    assert within == Auroc(0.5, 0.5, 0.5, 10, 3)  # every resample: ties only


def test_a_reward_that_orders_each_problem_is_perfect_within_whatever_the_difficulty():
    pooled, within = aurocs_with_ci(*columns(ORDERED_WITHIN))
    assert pooled.value == pytest.approx(7 / 16) and (pooled.pairs, pooled.problems) == (16, 2)
    assert within == Auroc(1.0, 1.0, 1.0, 6, 2)


def test_problems_with_one_kind_only_add_no_within_pairs():
    """P0 all right, P1 all wrong, P2 one of each: the pooled AUROC counts P0 against P1, the
    within one only P2's single pair."""
    pooled, within = aurocs_with_ci(*columns([[(True, 0.1)] * 2, [(False, 0.9)] * 2, [(True, 0.6), (False, 0.4)]]))
    # right 0.1, 0.1, 0.6 against wrong 0.9, 0.9, 0.4: only 0.6 > 0.4 -> 1 of 9
    assert pooled.value == pytest.approx(1 / 9) and (pooled.pairs, pooled.problems) == (9, 3)
    assert (within.value, within.pairs, within.problems) == (1.0, 1, 1)
    none = aurocs_with_ci(*columns([[(True, 0.9)], [(False, 0.1)], [(True, 0.2)]]))[1]
    assert none == Auroc(None, None, None, 0, 0)  # pooled has pairs, no problem has both


def test_both_cis_come_from_the_same_resamples_as_a_naive_bootstrap():
    """The matrix shortcut against the definition: each resample's problems as separate problems
    (a problem drawn twice is two problems), every pair counted directly."""
    rng = np.random.default_rng(7)
    problems = [[(bool(rng.random() < p), float(np.round(rng.random() * 0.5 + 0.5 * p, 1))) for _ in range(n)]
                for p, n in zip(rng.random(9), rng.integers(1, 6, 9))]
    rewards, labels = columns(problems)
    resamples = 300

    def share(pos, neg):
        pos, neg = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
        return ((pos > neg) + 0.5 * (pos == neg)).sum(), pos.size * neg.size

    pooled_est, within_est = [], []
    for idx in np.concatenate(list(resample_indices(len(problems), resamples))):
        wins, pairs = share(np.concatenate([rewards[i][labels[i]] for i in idx]),
                            np.concatenate([rewards[i][~labels[i]] for i in idx]))
        if pairs:
            pooled_est.append(wins / pairs)
        own = [share(rewards[i][labels[i]], rewards[i][~labels[i]]) for i in idx]
        if sum(p for _, p in own):
            within_est.append(sum(w for w, _ in own) / sum(p for _, p in own))
    pooled, within = aurocs_with_ci(rewards, labels, resamples=resamples)
    assert (pooled.lo, pooled.hi) == pytest.approx(percentile_interval(np.array(pooled_est)))
    assert (within.lo, within.hi) == pytest.approx(percentile_interval(np.array(within_est)))


@pytest.mark.parametrize("lo, hi, ending", [
    (0.55, 0.7, ", 95% CI [0.550, 0.700]): better than chance at picking: the within-problem CI lies above 0.5."),
    (0.45, 0.7, ", 95% CI [0.450, 0.700]): not distinguishable from chance at picking: the within-problem CI spans "
                "0.5."),
    (0.3, 0.45, ", 95% CI [0.300, 0.450]): worse than chance at picking: within a problem wrong rollouts score "
                "higher, the CI lies below 0.5."),
    (None, None, "; too few problems for a CI, so no verdict on picking).")])
def test_the_verdict_reads_the_within_problem_ci_not_the_pooled_one(lo, hi, ending):
    pooled = Auroc(0.8, 0.7, 0.9, 100, 20)  # well above chance pooled, whatever the within one says
    sentence = separation_sentence(Separation(30, 10, pooled, Auroc(0.6, lo, hi, 12, 4), 0.9, 0.8))
    assert sentence.startswith("pooled over problems, a correct rollout outranked a wrong one by reward in 80.0% of "
                               "the 100 pairs (ties count half; AUROC 0.800, 95% CI [0.700, 0.900]); within a "
                               "problem, where a pick is made, in 60.0% of the 12 pairs of the 4 problems with both "
                               "right and wrong rollouts (AUROC 0.600")
    assert sentence.endswith("right and wrong rollouts (AUROC 0.600" + ending)
    assert sentence.count("chance") <= 1  # the pooled AUROC gets no verdict of its own
    no_pair = Auroc(None, None, None, 0, 0)
    assert separation_sentence(Separation(10, 0, no_pair, no_pair, None, 0.8)) is None  # no correct rollout


def test_no_problem_with_both_kinds_is_said_not_numbered():
    s = Separation(4, 2, Auroc(0.75, None, None, 4, 4), Auroc(None, None, None, 0, 0), 0.9, 0.8)
    assert separation_sentence(s).endswith("; within a problem, where a pick is made: no problem has both right and "
                                           "wrong rollouts, so nothing to say about picking.")


# ------------------------------------------------------------------ hand-made stores, through the report

def test_both_figures_in_the_table_of_a_hand_made_store(tmp_path):
    root = tmp_path / "results"
    store(root, DIFFICULTY_ONLY)
    store(root, ORDERED_WITHIN, "sc", "toy / self_consistency", "self_consistency")
    store(root, [[(True, 0.9)], [(False, 0.2)], [(True, 0.4)]], "refl", "toy / cot_reflection", "cot_reflection")
    report.report(root, tmp_path / "out")
    rows = {r["system"]: r for r in csv_rows(tmp_path / "out" / "report" / "reward_auroc.csv")}
    row = rows["toy / mcts_step"]
    assert float(row["auroc"]) == pytest.approx(50 / 60, abs=1e-6) and row["pairs"] == "60"
    assert (row["auroc_within"], row["auroc_within_lo"], row["auroc_within_hi"]) == ("0.5", "0.5", "0.5")
    assert (row["pairs_within"], row["problems_within"]) == ("10", "3")
    row = rows["toy / self_consistency"]
    assert float(row["auroc"]) == pytest.approx(7 / 16, abs=1e-6)
    assert (row["auroc_within"], row["pairs_within"], row["problems_within"]) == ("1.0", "6", "2")
    row = rows["toy / cot_reflection"]  # one rollout a problem: a pooled figure, no within one
    assert float(row["auroc"]) == pytest.approx(1.0) and (row["auroc_within"], row["pairs_within"]) == ("", "0")
    md = (tmp_path / "out" / "report" / "reward_auroc.md").read_text()
    assert "| 0.833 [" in md and "| 0.500 [0.500, 0.500] | 10 (3) |" in md
    assert "| — (no problem has both) | 0 (0) |" in md
    assert ("MGSM-En, toy / cot_reflection: pooled over problems, a correct rollout outranked a wrong one by reward in "
            "100.0% of the 2 pairs") in md and "no problem has both right and wrong rollouts" in md


def test_in_short_names_both_and_judges_picking_on_the_within_one(tmp_path):
    """Twelve problems of every difficulty, reward = difficulty: the pooled CI lies above 0.5, the
    within one is 0.5 in every resample, so the reward does not help to pick."""
    root = tmp_path / "results"
    problems = [[(i < right, 0.05 + 0.08 * right) for i in range(4)] for right in (0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 1, 3)]
    store(root, problems)
    (paragraph,) = run_by_run_of(root, tmp_path / "out")
    reward = paragraph.split("Its reward: ")[1]
    assert reward.startswith("pooled over problems, a correct rollout outranked a wrong one by reward in ")
    lo = float(reward.split("95% CI [")[1].split(",")[0])
    assert lo > 0.5  # pooled: clearly above chance
    assert reward.endswith("within a problem, where a pick is made, in 50.0% of the 26 pairs of the 8 problems with "
                           "both right and wrong rollouts (AUROC 0.500, 95% CI [0.500, 0.500]): not distinguishable "
                           "from chance at picking: the within-problem CI spans 0.5.")
