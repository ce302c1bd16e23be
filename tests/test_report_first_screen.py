"""The report's first screen (issue #46): the headline table and the accuracy-against-tokens
figure under the title, and one style per system, the same in every figure."""

from matplotlib.colors import to_hex
from test_report_in_short import greedy_run, voting_run
from test_report_search import search_run

from marco_eval import report
from marco_eval.report.search_tables import budget_table
from marco_eval.report.write import figures


def styles_in(fig) -> dict[str, set]:
    """system -> the (colour, marker) pairs its labelled artists are drawn in."""
    found = {}
    for ax in fig.axes:
        drawn = [(line.get_label(), line) for line in ax.get_lines()]
        drawn += [(c.get_label(), c.lines[0]) for c in ax.containers]  # an error bar's data line
        for label, line in drawn:
            if not label.startswith("_"):
                found.setdefault(label, set()).add((to_hex(line.get_color()), line.get_marker()))
    return found


def test_no_two_systems_share_colour_and_marker_and_each_keeps_its_style(tmp_path):
    root = tmp_path / "results"
    for i in range(11):  # more systems than colours: a colour comes round again, with another marker
        search_run(root, f"mcts{i}", f"toy / mcts_step_{i:02d}", f"mcts_step_{i:02d}")
    voting_run(root, ["10", "11", "0", "13"], [1, 1, 0, 1])
    loaded = report.load(root)
    drawn = figures(loaded, budget_table(loaded)[1])
    assert set(drawn) == {"accuracy_vs_tokens.png", "reward_calibration.png", "budget_toy-model_mgsm_en.png"}
    everywhere = {}
    for name, fig in drawn.items():
        styles = styles_in(fig)
        assert len(styles) == 12, name
        assert all(len(pairs) == 1 for pairs in styles.values()), f"{name}: a system drawn in two styles"
        pairs = [next(iter(p)) for p in styles.values()]
        assert len(set(pairs)) == len(pairs), f"{name}: two systems share colour and marker"
        for system, (pair,) in styles.items():
            assert everywhere.setdefault(system, pair) == pair, f"{system} changes style in {name}"
    assert len({colour for colour, _ in everywhere.values()}) == 10  # all ten colours in use, so some repeat


def test_the_first_screen_is_the_headline_table_then_the_figure_then_in_short(tmp_path):
    root = tmp_path / "results"
    search_run(root)  # 2 of 4 right, as the greedy run; the vote gets 3 of 4
    voting_run(root, ["10", "11", "0", "13"], [1, 1, 0, 1])
    greedy_run(root, [1, 0, 0, 1])
    report.report(root, tmp_path / "out")
    readme = (tmp_path / "out" / "README.md").read_text()
    top = readme.split("### In short")[0]
    assert top.startswith("# Results\n\n### At a glance\n")
    assert top.rstrip().endswith("![accuracy against generated tokens per problem](report/accuracy_vs_tokens.png)")
    rows = {line.split(" | ")[0].removeprefix("| "): line for line in top.splitlines() if line.startswith("| toy")}
    assert rows["toy / mcts_step"] == (
        "| toy / mcts_step | 50.00 [0.00, 100.00] | — | En 100 | En +0.00, n.s. (p 1.000) | En -25.00, n.s. (p 1.000) |")
    assert rows["toy / base_cot"].endswith("| — | — |") and rows["toy / self_consistency"].endswith("| — | — |")
    assert readme.index("### In short") < readme.index("### How this file is made") < readme.index("### MGSM accuracy")
