"""`marco-eval report`, "Where the search gains and loses" (issue #19): pass@k, Holm, AUROC
and the budget crossing on hand-computed values, and the request store's per-rollout data
checked as it loads."""

import json

import numpy as np
import pytest
from test_report import write_run

from marco_eval import report
from marco_eval.report import ReportError
from marco_eval.report.search_stats import BudgetPoint, auroc_with_ci, overtakes, pass_at_k
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


def test_auroc_of_known_orderings():
    by_problem = lambda *xs: [np.array(x, dtype=float) for x in xs]  # noqa: E731
    labels = [np.array([True, False]), np.array([True, False])]
    # correct 0.9, 0.5 against wrong 0.5, 0.1: pairs 1 + 1 + 1/2 (the tie) + 1 = 3.5 of 4
    assert auroc_with_ci(by_problem([0.9, 0.5], [0.5, 0.1]), labels)[0] == pytest.approx(0.875)
    assert auroc_with_ci(by_problem([0.9, 0.1], [0.8, 0.2]), labels) == (1.0, 1.0, 1.0)  # every resample perfect
    assert auroc_with_ci(by_problem([0.1, 0.9], [0.2, 0.8]), labels)[0] == 0.0
    assert auroc_with_ci(by_problem([0.9], [0.1]), [np.array([True]), np.array([True])]) == (None, None, None)


def test_auroc_ci_resamples_problems_not_rollouts():
    """Problem A all right (0.9, 0.8), B all wrong (0.2, 0.1), C one of each (0.7, 0.3): every
    correct reward beats every wrong one, so each resample of problems that has both kinds has
    AUROC 1; those of only A or only B (2/27 of them) have no pair and are skipped, not scored."""
    rewards = [np.array([0.9, 0.8]), np.array([0.2, 0.1]), np.array([0.7, 0.3])]
    labels = [np.array([True, True]), np.array([False, False]), np.array([True, False])]
    assert auroc_with_ci(rewards, labels) == (1.0, 1.0, 1.0)


def test_overtakes_reads_the_budget_where_the_search_stays_above():
    def curve(points):
        return [BudgetPoint(k, x, Accuracy(y, y, y, 4)) for k, (x, y) in enumerate(points, 1)]

    vote = curve([(100, 0.2), (200, 0.25), (400, 0.3)])
    assert overtakes(curve([(100, 0.1), (200, 0.3), (400, 0.5)]), vote) == pytest.approx(200)
    assert overtakes(curve([(100, 0.3), (200, 0.2), (400, 0.5)]), vote) == pytest.approx(400)  # dips below at 200
    assert overtakes(curve([(100, 0.5), (200, 0.5), (400, 0.2)]), vote) is None  # below at the end
    assert overtakes(curve([(1000, 0.9)]), vote) is None  # no budget in common


# ------------------------------------------------------------------ older stores and bad ones

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


