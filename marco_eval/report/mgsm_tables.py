"""The MGSM tables: accuracy with paired tests against a baseline, Test@N, cost, and the
"Does the search pay?" verdicts."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from marco_eval.report.picks import verifier_picks, verifier_rewarded
from marco_eval.report.reading import rel
from marco_eval.report.schema import MGSM_TASKS, Loaded, TaskRun
from marco_eval.report.statistics import Accuracy, Paired, accuracy_of, holm, paired, run_accuracy, test_at_n
from marco_eval.report.tables import (
    Table, acc_csv, acc_md, by_task_then_system, mgsm_runs, num, p_text, pct, signed, store_source, system_order)


def accuracy_table(loaded: Loaded, baseline: str | None) -> Table:
    runs = mgsm_runs(loaded)
    systems = system_order({s for s, _ in runs}, baseline)
    columns, csv_columns = ["System"], ["system"]
    for task, label in MGSM_TASKS.items():
        columns += [f"{label} % [95% CI]"] + ([f"Δ {label} [95% CI]", f"p {label}", f"n paired {label}"]
                                             if baseline else []) + [f"n {label}"]
        csv_columns += [f"{task}_acc", f"{task}_ci_lo", f"{task}_ci_hi"]
        csv_columns += [f"{task}_delta", f"{task}_delta_lo", f"{task}_delta_hi", f"{task}_wins", f"{task}_losses",
                        f"{task}_p_mcnemar", f"{task}_n_paired"] if baseline else []
        csv_columns += [f"{task}_n"]
    columns.append("Sources")
    csv_columns.append("sources")
    md_rows, csv_rows = [], []
    for system in systems:
        md, row, sources = [system], [system], []
        for task in MGSM_TASKS:
            run = runs.get((system, task))
            acc = run_accuracy(run) if run else None
            md.append(acc_md(acc))
            row += acc_csv(acc)
            if baseline:
                base = runs.get((baseline, task))
                pair = paired(run, base, loaded.root) if run and base and system != baseline else None
                md += [f"{signed(pair.delta)} [{signed(pair.lo)}, {signed(pair.hi)}]", p_text(pair.p), str(pair.n)] if pair else [
                    "baseline" if run and system == baseline else "—", "", ""]
                row += ([num(pair.delta), num(pair.lo), num(pair.hi), pair.wins, pair.losses, num(pair.p, 9), pair.n]
                        if pair else [""] * 7)
            md.append(str(run.n) if run else "—")
            row.append(run.n if run else "")
            sources += [run.source] if run and run.source not in sources else []
        md.append(", ".join(sources))
        row.append(" ".join(sources))
        md_rows.append(md)
        csv_rows.append(row)
    note = ("Accuracy: lm-eval `exact_match` per problem, filter `{filter}`; CI: percentile bootstrap over problems. "
            + (f"Δ: row minus baseline `{baseline}` on the problems both scored (n paired: a run on the first 100 "
               f"pairs with a 250-problem baseline on those 100), CI by paired bootstrap; "
               f"p: exact McNemar test (two-sided binomial on the problems exactly one of the two solved)."
               if baseline else "No baseline chosen (`--baseline SYSTEM` adds Δ and paired tests)."))
    return Table("mgsm", "MGSM accuracy (the seed's table)", note, columns, md_rows, csv_columns, csv_rows)


def shown_budgets(largest: int) -> list[int]:
    """The Test@N columns of the Markdown table: powers of two up to `largest`, and `largest`."""
    budgets = [2 ** i for i in range(largest.bit_length()) if 2 ** i <= largest]
    return budgets + ([largest] if largest not in budgets else [])


def test_at_table(loaded: Loaded) -> Table:
    runs = by_task_then_system(r for r in mgsm_runs(loaded).values() if r.candidates is not None)
    sizes = {(r.system, r.task): [len(c) for c in r.candidates.values()] for r in runs}
    largest = max((max(s) for s in sizes.values()), default=0)
    columns = ["System", "Task", "Candidates (fewest–most)", *(f"Test@{n} %" for n in shown_budgets(largest)),
               "Sources"]
    csv_columns = ["system", "task", "n", "candidates_min", "candidates_max", "problems_with_fewer", "test_at_n",
                   "ci_lo", "ci_hi", "sources"]
    md_rows, csv_rows = [], []
    for run in runs:
        fewest, most = min(sizes[run.system, run.task]), max(sizes[run.system, run.task])
        source = store_source(run, loaded.root)
        solved = {n: accuracy_of(test_at_n(run, n)) for n in range(1, most + 1)}
        md_rows.append([run.system, MGSM_TASKS[run.task], f"{fewest}–{most}" if fewest != most else str(most),
                        *(acc_md(solved.get(n)) for n in shown_budgets(largest)), source])
        csv_rows += [[run.system, run.task, n, fewest, most, sum(s < n for s in sizes[run.system, run.task]),
                      *acc_csv(acc), source] for n, acc in solved.items()]
    note = ("Test@N: a problem counts as solved when any of its first N candidate answers (every rollout or sample, "
            "in order, from the run's request store) equals the target; a problem with fewer than N candidates "
            "counts all it has (problems_with_fewer in the CSV says how many). Computed for every N up to the run's "
            "largest candidate count: the CSV has every N, this table powers of two and the largest. Unlike pass@k "
            "(\"Find or pick\" below) it reads the candidates in the order they were made. CI: percentile bootstrap "
            "over problems.")
    return Table("test_at_n", "Test@N (from the request stores)", note, columns, md_rows, csv_columns, csv_rows)


def cost_rows(loaded: Loaded) -> list[tuple[TaskRun, Accuracy]]:
    runs = mgsm_runs(loaded)
    return [(runs[k], run_accuracy(runs[k])) for k in sorted(runs)]


def cost_table(loaded: Loaded) -> Table:
    columns = ["System", "Task", "n", "Accuracy % [95% CI]", "Tokens / problem", "Policy calls / problem",
               "Seconds / problem", "Accuracy % per 1k tokens", "Sources"]
    csv_columns = ["system", "task", "n", "acc", "ci_lo", "ci_hi", "tokens_per_problem", "policy_calls_per_problem",
                   "seconds_per_problem", "acc_pct_per_1k_tokens", "tokens_file", "sources"]
    md_rows, csv_rows = [], []
    for run, acc in cost_rows(loaded):
        tokens = run.tokens_per_problem
        per_1k = 100 * acc.value / (tokens / 1000) if tokens else None
        tokens_file = rel(run.tokens_file, loaded.root) if run.tokens_file else ""
        md_rows.append([run.system, MGSM_TASKS[run.task], str(run.n), acc_md(acc),
                        f"{tokens:.1f}" if tokens is not None else "—",
                        f"{run.policy_calls_per_problem:.1f}" if run.policy_calls_per_problem is not None else "—",
                        f"{run.seconds_per_problem:.1f}" if run.seconds_per_problem is not None else "—",
                        f"{per_1k:.2f}" if per_1k is not None else "—",
                        run.source + (f" ({tokens_file})" if tokens_file else "")])
        csv_rows.append([run.system, run.task, run.n, *acc_csv(acc), num(tokens),
                         num(run.policy_calls_per_problem), num(run.seconds_per_problem), num(per_1k), tokens_file,
                         run.source])
    note = ("Tokens / problem: mean generated tokens per problem over all rollouts or samples (the request store, "
            "else tokens.json; — when the run has neither). Seconds / problem: lm-eval's "
            "total_evaluation_time_seconds of the results file (model load included) divided by all problems in "
            "that file. Accuracy % per 1k tokens = accuracy % / (tokens per problem / 1000).")
    return Table("cost", "Cost: tokens, time and accuracy per token", note, columns, md_rows, csv_columns, csv_rows)


SIGNIFICANCE = 0.05  # the verdict table's threshold on the Holm-corrected exact McNemar p


def verdict_pairs(loaded: Loaded) -> list[tuple[TaskRun, TaskRun]]:
    """(new configuration, run without search) of the same model and task: every MCTS row and
    every verifier pick of a verifier-rewarded run (picks.py) against greedy CoT and the
    compute-matched sampling baselines of the confidence reward."""
    runs = mgsm_runs(loaded).values()
    searches = by_task_then_system([r for r in runs if r.strategy == "mcts"]
                                   + [pick for r in runs for pick in verifier_picks(r)])
    against = by_task_then_system(r for r in runs if r.strategy == "sampling" and not verifier_rewarded(r))
    return [(s, b) for s in searches for b in against if b.task == s.task and b.manifest.model == s.manifest.model]


def verdict_word(delta: float, p: float) -> str:
    """The verdict of one comparison from its accuracy difference and its (corrected) p."""
    if p < SIGNIFICANCE:
        return "search better" if delta > 0 else "search worse"
    return "no significant difference"


@dataclass
class Verdict:
    """One search run against one run without search, as the verdict table shows it."""

    search: TaskRun
    against: TaskRun
    pair: Paired  # search minus against on the problems both scored
    p_holm: float  # pair.p after Holm's correction over every comparison of the table
    tokens_ratio: float | None  # the search's generated tokens per problem over the other's
    word: str  # verdict_word of the corrected p


def verdicts(loaded: Loaded) -> list[Verdict]:
    """Every comparison of "Does the search pay?", Holm-corrected as one family."""
    comparisons = [(s, b, paired(s, b, loaded.root)) for s, b in verdict_pairs(loaded)]
    corrected = holm([pair.p for _, _, pair in comparisons])
    return [Verdict(s, b, pair, p_holm,
                    s.tokens_per_problem / b.tokens_per_problem if s.tokens_per_problem and b.tokens_per_problem
                    else None, verdict_word(pair.delta, p_holm))
            for (s, b, pair), p_holm in zip(comparisons, corrected)]


def verdict_table(found: list[Verdict]) -> Table:
    """The verdicts (from `verdicts`) as a table, with one sentence each and the tally first."""
    columns = ["Task", "Search", "Against", "n paired", "Search %", "Against %", "Δ [95% CI]", "p (McNemar)",
               "p Holm", "Tokens ratio", "Verdict", "Sources"]
    csv_columns = ["task", "search", "against", "n_paired", "search_acc", "against_acc", "delta", "delta_lo",
                   "delta_hi", "wins", "losses", "p_mcnemar", "p_holm", "tokens_ratio", "verdict", "sources"]
    md_rows, csv_rows, findings = [], [], []
    for v in found:
        s, b, pair, p_holm, ratio, word = v.search, v.against, v.pair, v.p_holm, v.tokens_ratio, v.word
        search_acc, against_acc = pair.run_value, pair.run_value - pair.delta
        findings.append(f"{MGSM_TASKS[s.task]}, {s.system} against {b.system} on the {pair.n} problems both ran: "
                        f"{pct(search_acc)}% vs {pct(against_acc)}% "
                        f"(Δ {signed(pair.delta)} points, 95% CI [{signed(pair.lo)}, {signed(pair.hi)}], "
                        f"McNemar p = {p_text(pair.p)}, Holm-corrected {p_text(p_holm)}): **{word}**"
                        + (f", at {ratio:.2f}× the generated tokens." if ratio is not None else "."))
        md_rows.append([MGSM_TASKS[s.task], s.system, b.system, str(pair.n), pct(search_acc), pct(against_acc),
                        f"{signed(pair.delta)} [{signed(pair.lo)}, {signed(pair.hi)}]",
                        f"{p_text(pair.p)} ({pair.wins} vs {pair.losses})", p_text(p_holm),
                        f"{ratio:.2f}" if ratio is not None else "—", word, f"{s.source}, {b.source}"])
        csv_rows.append([s.task, s.system, b.system, pair.n, num(search_acc), num(against_acc),
                         num(pair.delta), num(pair.lo), num(pair.hi), pair.wins, pair.losses, num(pair.p, 9),
                         num(p_holm, 9), num(ratio), word, f"{s.source} {b.source}"])
    if findings:  # the answer in one line first, then each comparison
        counts, n = Counter(v.word for v in found), len(found)
        findings.insert(0, f"In short: of {n} comparisons, the search was better in {counts['search better']}, "
                           f"worse in {counts['search worse']} and not significantly different in "
                           f"{counts['no significant difference']} (each at p < {SIGNIFICANCE} after Holm's "
                           f"correction for making {n} comparisons; the uncorrected p is in the table too).")
    note = ("Every MCTS row (strategy `mcts` in the run's recorded config), and each verifier pick of a "
            "run whose reward was a verifier (verifier best-of-N, verifier-weighted vote: read from the same stored "
            "samples or MCTS rollouts; an MCTS run's own rule is its own row), against every row of the same model without search (strategy `sampling` "
            "with the confidence reward: greedy CoT, self-consistency, best-of-N) on the problems both "
            "scored, filter `{filter}`. p (McNemar): the exact McNemar test of that one comparison, uncorrected; "
            "p Holm: the same p after Holm's step-down correction over every comparison in this table (one "
            "family), which keeps the chance of any false \"better\" or \"worse\" below "
            f"{SIGNIFICANCE}. Verdict: \"search better\" or \"search worse\" when the Holm-corrected p < "
            f"{SIGNIFICANCE}, else \"no significant difference\". Tokens ratio: the search run's generated "
            "tokens per problem over the other's (each over its own problems). (a vs b): problems only the "
            "search solved vs only the other solved.")
    return Table("verdict", "Does the search pay? (MCTS against no search, same model)", note, columns, md_rows,
                 csv_columns, csv_rows, findings)
