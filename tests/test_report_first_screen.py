"""The report's figures (issue #46): one style per system, the same in every figure."""

from matplotlib.colors import to_hex
from test_report_in_short import voting_run
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
