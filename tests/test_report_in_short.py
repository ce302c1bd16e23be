"""The README's "In short" (issue #19): each MCTS run's answers in one paragraph, on hand-made
stores whose verdict, coverage split and reflection counts were worked out by hand."""

from test_report import write_run
from test_report_search import MODEL, SEARCH_RECORDS, rollouts, search_run, trace

from marco_eval import report
from marco_eval.report.in_short import NOTHING_YET


def voting_run(root, answers_per_problem, scores, name="vote"):
    """A self-consistency run: one rollout per problem with the given answer, a one-point trace."""
    records = [{"answer": a, "rollouts": rollouts([a], [0.5]), "trace": trace((a, 90))} for a in answers_per_problem]
    return write_run(root, name, "toy / self_consistency", {"mgsm_en": scores}, config="self_consistency",
                     model=MODEL, candidates={"mgsm_en": [[a] for a in answers_per_problem]},
                     records={"mgsm_en": records}, final_answer="vote")


def in_short_of(root, out):
    report.report(root, out)
    readme = (out / "README.md").read_text()
    assert readme.index("### In short") < readme.index("### MGSM accuracy")
    section = readme.split("### In short\n\n")[1].split("\n###")[0]
    return [line.removeprefix("- ") for line in section.strip().splitlines()]


def test_a_search_that_finds_as_often_but_picks_worse_is_a_selection_failure(tmp_path):
    root = tmp_path / "results"
    search_run(root)  # picks right on P0, P3; some rollout right on P0, P1, P3 (see test_report_search)
    voting_run(root, ["10", "11", "0", "13"], [1, 1, 0, 1])  # right on P0, P1, P3: the same oracle
    (paragraph,) = in_short_of(root, tmp_path / "out")
    # search 2 of 4 against the vote's 3 of 4: one discordant problem (P1), McNemar p = 1, one comparison
    assert paragraph.startswith(
        "**MGSM-En, toy / mcts_step.** Against no search: 50.00% vs self_consistency's 75.00% on 4 problems "
        "(Δ -25.00 points, Holm p = 1.000, 1.00× its tokens): no significant difference from self_consistency.")
    # the vote's trace is one point at 90 tokens, below the search's first (92.5): no budget both reach
    assert ("At equal tokens (point estimates), against self_consistency's vote, the search's curve does not stay "
            "above the vote's at any budget both reach (on the 4 problems both ran).") in paragraph
    assert ("Find or pick: some rollout reached the answer on 75.00% of its 4 problems; its max_value pick kept "
            "50.00% and lost 1 problem a rollout had solved, where a vote over the same rollouts scores 25.00% "
            "(majority) or 50.00% (reward-weighted).") in paragraph
    assert ("On the 4 problems both ran, its rollouts reach the answer about as often as self_consistency's samples "
            "(75.00% vs 75.00%, McNemar p = 1.000), yet its pick scores 50.00% against the vote's 75.00%: it falls "
            "short at picking (selection), not at finding.") in paragraph
    assert ("Its reward: pooled over problems, a correct rollout outranked a wrong one by reward in 93.1% of the 36 "
            "pairs") in paragraph
    assert "; within a problem, where a pick is made, in 71.4% of the 7 pairs of the 3 problems" in paragraph


def test_a_search_whose_rollouts_never_reach_the_answer_is_a_coverage_failure(tmp_path):
    root = tmp_path / "results"
    wrong = [{"answer": "0", "rollouts": rollouts(["0", "1"], [0.9, 0.8]), "trace": trace(("0", 100), ("0", 200))}
             for _ in range(6)]
    write_run(root, "mcts", "toy / mcts_step", {"mgsm_en": [0] * 6}, config="mcts_step", model=MODEL,
              candidates={"mgsm_en": [["0"]] * 6}, records={"mgsm_en": wrong}, final_answer="max_value")
    voting_run(root, [str(d + 10) for d in range(6)], [1] * 6)
    (paragraph,) = in_short_of(root, tmp_path / "out")
    # 6 problems only the vote solved: exact McNemar p = 2 / 2^6 = 0.031, below 0.05 after Holm (one comparison)
    assert "0.00% vs self_consistency's 100.00% on 6 problems (Δ -100.00 points, Holm p = 0.031" in paragraph
    assert "): worse than self_consistency." in paragraph
    assert ("its rollouts reach the answer less often than self_consistency's samples (0.00% vs 100.00%, McNemar "
            "p = 0.031): it falls short at finding (coverage).") in paragraph
    assert "Its reward:" not in paragraph  # no correct rollout: no AUROC to put in words


def test_without_mcts_rollouts_it_says_so_and_still_sums_up_reflection(tmp_path):
    root = tmp_path / "results"
    greedy = [1, 1, 0, 0, 0, 0, 1, 0]  # wrong on 2, 3, 4, 5, 7
    reflect = [1, 0, 1, 1, 0, 0, 1, 0]  # fixes 2 and 3, breaks 1
    write_run(root, "greedy", "toy / base_cot", {"mgsm_en": greedy}, config="base_cot", model=MODEL)
    write_run(root, "refl", "toy / cot_reflection", {"mgsm_en": reflect}, config="cot_reflection", model=MODEL)
    write_run(root, "old", "toy / mcts_step", {"mgsm_en": greedy}, config="mcts_step", model=MODEL)  # no store
    assert in_short_of(root, tmp_path / "out") == [
        NOTHING_YET,
        "Reflection, MGSM-En, toy / cot_reflection: of the 5 problems greedy CoT got wrong, reflection fixed 2 "
        "(40.00%; the Marco-o1 paper: about half), and it broke 1 of the 3 greedy CoT got right: net +12.50 points "
        "(McNemar p = 1.000)."]


def test_every_mcts_run_with_rollouts_gets_its_own_paragraph(tmp_path):
    root = tmp_path / "results"
    search_run(root)
    search_run(root, "mcts8", "toy / mcts_step_8sims", "mcts_step_8sims", SEARCH_RECORDS)
    paragraphs = in_short_of(root, tmp_path / "out")
    assert [p.split("**")[1] for p in paragraphs] == ["MGSM-En, toy / mcts_step.", "MGSM-En, toy / mcts_step_8sims."]
    assert all("No run without search of this model and task to compare with." in p for p in paragraphs)
