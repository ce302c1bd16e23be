"""The README's "Run by run" (issue #19): each MCTS run's answers in one paragraph, and its
"In short" (issue #46): one sentence of them per MCTS run, on hand-made stores whose verdict,
coverage split and reflection counts were worked out by hand."""

from test_report import write_run
from test_report_search import MODEL, SEARCH_RECORDS, rollouts, search_run, trace

from marco_eval import report
from marco_eval.report.in_short import NO_SEARCH_YET
from marco_eval.report.run_by_run import NOTHING_YET


def voting_run(root, answers_per_problem, scores, name="vote"):
    """A self-consistency run: one rollout per problem with the given answer, a one-point trace."""
    records = [{"answer": a, "rollouts": rollouts([a], [0.5]), "trace": trace((a, 90))} for a in answers_per_problem]
    return write_run(root, name, "toy / self_consistency", {"mgsm_en": scores}, config="self_consistency",
                     model=MODEL, candidates={"mgsm_en": [[a] for a in answers_per_problem]},
                     records={"mgsm_en": records}, final_answer="vote")


def section_items(readme: str, title: str) -> list[str]:
    section = readme.split(f"### {title}\n\n")[1].split("\n###")[0]
    return [line.removeprefix("- ") for line in section.strip().splitlines()]


def run_by_run_of(root, out):
    """The paragraphs of "Run by run", in "Where the search gains and loses"."""
    report.report(root, out)
    readme = (out / "README.md").read_text()
    assert readme.index("### Where the search gains and loses") < readme.index("### Run by run")
    return section_items(readme, "Run by run")


def in_short_of(root, out):
    """The sentences of "In short", on the first screen: before every section but the headline."""
    report.report(root, out)
    readme = (out / "README.md").read_text()
    assert readme.index("### At a glance") < readme.index("### In short") < readme.index("### MGSM accuracy")
    return section_items(readme, "In short")


def test_a_search_that_finds_as_often_but_picks_worse_is_a_selection_failure(tmp_path):
    root = tmp_path / "results"
    search_run(root)  # picks right on P0, P3; some rollout right on P0, P1, P3 (see test_report_search)
    voting_run(root, ["10", "11", "0", "13"], [1, 1, 0, 1])  # right on P0, P1, P3: the same oracle
    (paragraph,) = run_by_run_of(root, tmp_path / "out")
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


def never_finding_runs(root):
    """A search whose rollouts never reach the answer on 6 problems a vote solves every one of."""
    wrong = [{"answer": "0", "rollouts": rollouts(["0", "1"], [0.9, 0.8]), "trace": trace(("0", 100), ("0", 200))}
             for _ in range(6)]
    write_run(root, "mcts", "toy / mcts_step", {"mgsm_en": [0] * 6}, config="mcts_step", model=MODEL,
              candidates={"mgsm_en": [["0"]] * 6}, records={"mgsm_en": wrong}, final_answer="max_value")
    voting_run(root, [str(d + 10) for d in range(6)], [1] * 6)


def test_a_search_whose_rollouts_never_reach_the_answer_is_a_coverage_failure(tmp_path):
    root = tmp_path / "results"
    never_finding_runs(root)
    (paragraph,) = run_by_run_of(root, tmp_path / "out")
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
    assert run_by_run_of(root, tmp_path / "out") == [
        NOTHING_YET,
        "Reflection, MGSM-En, toy / cot_reflection: of the 5 problems greedy CoT got wrong, reflection fixed 2 "
        "(40.00%; the Marco-o1 paper: about half), and it broke 1 of the 3 greedy CoT got right: net +12.50 points "
        "(McNemar p = 1.000)."]


def test_every_mcts_run_with_rollouts_gets_its_own_paragraph(tmp_path):
    root = tmp_path / "results"
    search_run(root)
    search_run(root, "mcts8", "toy / mcts_step_8sims", "mcts_step_8sims", SEARCH_RECORDS)
    paragraphs = run_by_run_of(root, tmp_path / "out")
    assert [p.split("**")[1] for p in paragraphs] == ["MGSM-En, toy / mcts_step.", "MGSM-En, toy / mcts_step_8sims."]
    assert all("No run without search of this model and task to compare with." in p for p in paragraphs)


def greedy_run(root, scores):
    return write_run(root, "greedy", "toy / base_cot", {"mgsm_en": scores}, config="base_cot", model=MODEL,
                     settings={"samples": 1, "temperature": 0.0})


def test_in_short_says_in_one_sentence_what_a_search_lost_and_that_it_lost_it_picking(tmp_path):
    root = tmp_path / "results"
    search_run(root)  # as in the selection-failure paragraph above
    voting_run(root, ["10", "11", "0", "13"], [1, 1, 0, 1])
    greedy_run(root, [1, 0, 0, 1])  # the search's own scores: Δ 0, McNemar p = 1
    assert in_short_of(root, tmp_path / "out") == [
        "**MGSM-En, toy / mcts_step**: 50.00%, +0.00 points against greedy CoT (50.00%; no significant difference, "
        "Holm p = 1.000), -25.00 points against self-consistency (75.00%; no significant difference, Holm p = 1.000); "
        "it falls short at picking: its rollouts reach the answer about as often as self_consistency's samples "
        "(75.00% vs 75.00%, McNemar p = 1.000), but its pick keeps 50.00% against the vote's 75.00% (it lost 1 "
        "problem of 4 a rollout had solved)."]


def test_in_short_says_when_the_search_falls_short_at_finding(tmp_path):
    root = tmp_path / "results"
    never_finding_runs(root)
    (sentence,) = in_short_of(root, tmp_path / "out")
    assert "-100.00 points against self-consistency (100.00%; search worse, Holm p = 0.031)" in sentence
    assert sentence.endswith("; it falls short at finding: its rollouts reach the answer less often than "
                             "self_consistency's samples (0.00% vs 100.00%, McNemar p = 0.031).")


def test_in_short_keeps_a_sentence_for_a_search_without_rollouts_and_none_for_the_rest(tmp_path):
    root = tmp_path / "results"
    write_run(root, "old", "toy / mcts_step", {"mgsm_en": [1, 0]}, config="mcts_step", model=MODEL)  # no store
    write_run(root, "refl", "toy / cot_reflection", {"mgsm_en": [1, 1]}, config="cot_reflection", model=MODEL)
    assert in_short_of(root, tmp_path / "out") == [
        "**MGSM-En, toy / mcts_step**: 50.00%, no run without search of its model to compare with; its store has no "
        "per-rollout data, so finding and picking cannot be told apart."]
    (tmp_path / "results2").mkdir()
    greedy_run(tmp_path / "results2", [1, 0])
    assert in_short_of(tmp_path / "results2", tmp_path / "out2") == [NO_SEARCH_YET]
