"""`marco-eval report --compare OLD NEW`: what moved between two results folders."""

from __future__ import annotations

from pathlib import Path

from marco_eval.report.load import load
from marco_eval.report.reading import rel
from marco_eval.report.schema import DEFAULT_EXCLUDE, MGSM_TASKS, TRANSLATION_METRICS, TRANSLATION_TASKS, Loaded
from marco_eval.report.statistics import mcnemar_exact, run_accuracy
from marco_eval.report.tables import acc_md, metric_value, mgsm_runs, p_text, pct, signed


def compare(old_dir: Path, new_dir: Path, filter_name: str = "flexible-extract",
            exclude: tuple[str, ...] = DEFAULT_EXCLUDE) -> tuple[str, int]:
    """Markdown of every system/task in either folder: accuracy old -> new, Δ, and whether the new
    accuracy lies outside the old run's 95% CI (and, on the same problems, McNemar's p).
    Returns (text, number of rows that moved outside the CI or appeared/disappeared)."""
    old, new = load(Path(old_dir), filter_name, exclude), load(Path(new_dir), filter_name, exclude)
    old_runs, new_runs = mgsm_runs(old), mgsm_runs(new)
    lines = ["| System | Task | Old % [95% CI] | New % | Δ | Outside old CI | McNemar p | Old source | New source |",
             "|---|---|---|---|---|---|---|---|---|"]
    moved = 0
    for key in sorted(set(old_runs) | set(new_runs)):
        a, b = old_runs.get(key), new_runs.get(key)
        if a is None or b is None:
            moved += 1
            status = "new" if a is None else "removed"
            src = rel((b or a).results_file, (new if a is None else old).root)
            lines.append(f"| {key[0]} | {MGSM_TASKS[key[1]]} | {status} | | | | | "
                         f"{'' if a is None else src} | {src if a is None else ''} |")
            continue
        acc_old, acc_new = run_accuracy(a), b.accuracy
        outside = not (acc_old.lo <= acc_new <= acc_old.hi)
        moved += outside
        same = set(a.scores) == set(b.scores) and all(a.targets[d] == b.targets[d] for d in a.scores)
        p = p_text(mcnemar_exact(b.score_vector(), a.score_vector())[2]) if same else "different problems"
        lines.append(f"| {key[0]} | {MGSM_TASKS[key[1]]} | {acc_md(acc_old)} | "
                     f"{pct(acc_new)} | {signed(acc_new - acc_old.value)} | {'yes' if outside else 'no'} | {p} | "
                     f"{rel(a.results_file, old.root)} | {rel(b.results_file, new.root)} |")
    lines += translation_compare(old, new)
    summary = f"{moved} of {len(set(old_runs) | set(new_runs))} MGSM system/task rows moved outside the old 95% CI or (dis)appeared."
    return "\n".join(lines + ["", summary, ""]), moved


def translation_compare(old: Loaded, new: Loaded) -> list[str]:
    def index(loaded):
        return {(r.system, r.task): r for r in loaded.tasks if r.task in TRANSLATION_TASKS}

    old_runs, new_runs = index(old), index(new)
    keys = sorted(set(old_runs) & set(new_runs))
    if not keys:
        return []
    lines = ["", "| System | Task | Metric | Old | New | Δ |", "|---|---|---|---|---|---|"]
    for key in keys:
        for metric, (label, _) in TRANSLATION_METRICS.items():
            a, b = metric_value(old_runs[key].metrics, metric), metric_value(new_runs[key].metrics, metric)
            if a is not None and b is not None:
                lines.append(f"| {key[0]} | {TRANSLATION_TASKS[key[1]]} | {label} | {a:.2f} | {b:.2f} | {b - a:+.2f} |")
    return lines

