"""A report table (Markdown and CSV rows, built together), cell formatting, and the tables
that are not about MGSM accuracy: translation metrics, human judgement, training, runs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from marco_eval.report.reading import rel
from marco_eval.report.schema import MGSM_TASKS, TRANSLATION_METRICS, TRANSLATION_TASKS, Loaded, TaskRun
from marco_eval.report.statistics import Accuracy


@dataclass
class Table:
    name: str  # file stem
    title: str
    note: str
    columns: list[str]
    md_rows: list[list[str]]
    csv_columns: list[str]
    csv_rows: list[list[object]]
    findings: list[str] = field(default_factory=list)  # plain sentences, rendered above the table
    empty: str = "(no runs yet)"  # what the Markdown says instead of a table without rows


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def signed(x: float) -> str:
    return f"{100 * x:+.2f}"


def p_text(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def num(x: float | None, digits: int = 6):
    return "" if x is None else round(float(x), digits)


def acc_md(acc: Accuracy | None) -> str:
    return f"{pct(acc.value)} [{pct(acc.lo)}, {pct(acc.hi)}]" if acc else "—"


def acc_csv(acc: Accuracy | None) -> list:
    return [num(acc.value), num(acc.lo), num(acc.hi)] if acc else ["", "", ""]


def system_order(systems: set[str], baseline: str | None) -> list[str]:
    return sorted(systems, key=lambda s: (s != baseline, s))


def mgsm_runs(loaded: Loaded) -> dict[tuple[str, str], TaskRun]:
    return {(r.system, r.task): r for r in loaded.tasks if r.task in MGSM_TASKS}


def by_task_then_system(runs) -> list[TaskRun]:
    """MGSM runs in table order: MGSM-En first, then by system name."""
    return sorted(runs, key=lambda r: (list(MGSM_TASKS).index(r.task), r.system))


def store_source(run: TaskRun, root) -> str:
    """A row's source when it comes from the request store: "R3 (mgsm/en_x/requests.jsonl)"."""
    return f"{run.source} ({rel(run.tokens_file, root)})"


def metric_value(metrics: dict, metric: str) -> float | None:
    """A translation score under any of its names and any filter ("chrf++,output")."""
    for name in TRANSLATION_METRICS[metric][1]:
        for key in sorted(metrics):
            if key.split(",")[0] == name and isinstance(metrics[key], (int, float)):
                return float(metrics[key])
    return None


def signatures(metrics: dict) -> str:
    """sacrebleu signatures, wherever a task put them: any key mentioning 'signature'."""
    found = [f"{key.split(',')[0]}: {value}" for key, value in sorted(metrics.items())
             if "signature" in key.lower() and "_stderr" not in key and isinstance(value, str)]
    return "; ".join(found)


def translation_table(loaded: Loaded) -> Table:
    runs = sorted((r for r in loaded.tasks if r.task in TRANSLATION_TASKS), key=lambda r: (r.task, r.system))
    columns = ["System", "Task", "n", *(label for label, _ in TRANSLATION_METRICS.values()), "Signatures", "Sources"]
    csv_columns = ["system", "task", "n", *TRANSLATION_METRICS, "signatures", "sources"]
    md_rows, csv_rows = [], []
    for run in runs:
        values = [metric_value(run.metrics, m) for m in TRANSLATION_METRICS]
        sig = signatures(run.metrics)
        md_rows.append([run.system, TRANSLATION_TASKS[run.task], str(run.n),
                        *(f"{v:.2f}" if v is not None else "—" for v in values), sig or "—", run.source])
        csv_rows.append([run.system, run.task, run.n, *(num(v) for v in values), sig, run.source])
    note = ("Automatic metrics as lm-eval reported them (sacrebleu corpus BLEU, chrF++, TER; COMET when the task "
            "computed it); signatures as the task recorded them.")
    return Table("translation", "Translation: automatic metrics", note, columns, md_rows, csv_columns, csv_rows)


def human_table(loaded: Loaded) -> Table:
    columns = ["System", "Task", "Items", "Ratings", "Adequacy [95% CI]", "Fluency [95% CI]", "Sources"]
    csv_columns = ["system", "task", "n_items", "n_ratings", "adequacy", "adequacy_lo", "adequacy_hi", "fluency",
                   "fluency_lo", "fluency_hi", "sources"]

    def shown(m):
        return "{:.2f} [{:.2f}, {:.2f}]".format(*m) if m else "—"

    md_rows, csv_rows = [], []
    for row in sorted(loaded.judge, key=lambda r: (r.task, r.system)):
        md_rows.append([row.system, row.task or "—", str(row.n_items), str(row.n_ratings), shown(row.adequacy),
                        shown(row.fluency), row.source])
        csv_rows.append([row.system, row.task, row.n_items, row.n_ratings, *map(num, row.adequacy or (None,) * 3),
                         *map(num, row.fluency or (None,) * 3), row.source])
    alpha = "; ".join(f"{source} {name} = {value:.3f}" if isinstance(value, float) else f"{source} {name} = {value}"
                      for source, name, value in loaded.judge_alpha)
    note = ("Human adequacy and fluency from `marco-eval judge summarize` (its bootstrap CIs over items)."
            + (f" Krippendorff's alpha: {alpha}." if alpha else ""))
    return Table("human", "Translation: human judgement", note, columns, md_rows, csv_columns, csv_rows)


def training_table(loaded: Loaded) -> Table:
    columns = ["Source", "Checkpoint", "Base model", "Method", "Rows kept per source", "Rows", "Steps",
               "Loss, first → last quarter", "Mean loss", "Precision", "Train s", "Command"]
    csv_columns = ["source", "summary_file", "output_dir", "base_model", "method", "rows_per_source", "train_rows", "steps",
                   "epochs", "loss_first_quarter", "loss_last_quarter", "train_loss", "precision", "max_length", "learning_rate",
                   "train_seconds", "wall_seconds", "command"]
    md_rows, csv_rows = [], []
    for t in loaded.training:
        d, c = t.summary, t.summary["config"]
        per_source = ", ".join(f"{label} {n.get('used', n.get('kept'))}" for label, n in d["data"].items())
        losses = [e["loss"] for e in d["losses"] if isinstance(e, dict) and isinstance(e.get("loss"), (int, float))]
        k = math.ceil(len(losses) / 4)  # per-step losses are noisy: compare quarter means
        first, last = (sum(losses[:k]) / k, sum(losses[-k:]) / k) if losses else (None, None)
        shown = f"{first:.3f} → {last:.3f}" if losses else "—"
        mean = d.get("train_loss")
        rank = (c.get("lora") or {}).get("r")
        method = f"LoRA r={rank}" if rank else "full-parameter"
        md_rows.append([t.source, c.get("output_dir", ""), d["base_model"], method, per_source, str(d["train_rows"]),
                        str(d["steps"]), shown, f"{mean:.3f}" if isinstance(mean, (int, float)) else "—",
                        str(c.get("precision", "")), f"{d['train_seconds']:.0f}", f"`{t.command}`"])
        csv_rows.append([t.source, rel(t.path, loaded.root), c.get("output_dir", ""), d["base_model"], method, per_source,
                         d["train_rows"], d["steps"], num(d.get("epochs")), num(first), num(last), num(mean),
                         c.get("precision", ""), c.get("max_length", ""), c.get("learning_rate", ""),
                         num(d["train_seconds"], 3), num(d["wall_seconds"], 3), t.command])
    note = ("Checkpoints this project trained (`marco-eval train`), from each `training_summary.json` copied out of "
            "the checkpoint. Losses are the trainer's per-logging-step values (completion tokens only), averaged over "
            "the first and the last quarter of the logged steps (one step's rows alone are noisy); the "
            "checkpoint's evaluations are the rows named after its output folder in the tables above.")
    return Table("training", "Training runs", note, columns, md_rows, csv_columns, csv_rows)


def runs_table(loaded: Loaded) -> Table:
    columns = ["Source", "Results file", "System", "Tasks", "Wall s (lm-eval)", "Per-problem files", "Command"]
    csv_columns = ["source", "results_file", "system", "model", "config", "tasks", "wall_seconds_lm_eval",
                   "wall_seconds_manifest", "samples_files", "tokens_file", "command", "notes"]
    md_rows, csv_rows = [], []
    root = loaded.root
    for run in loaded.runs:
        m = run.manifest
        files = [rel(p, root) for p in run.samples] + ([rel(run.tokens_file, root)] if run.tokens_file else [])
        wall = f"{run.wall_seconds:.0f}" if run.wall_seconds is not None else "—"
        md_rows.append([run.source, rel(run.path, root), m.system, ", ".join(run.tasks), wall,
                        "<br>".join(files) or "—",
                        ("(no run.json: rebuilt from the results file) " if m.derived else "") + f"`{m.command}`"])
        csv_rows.append([run.source, rel(run.path, root), m.system, m.model, m.config, " ".join(run.tasks),
                         num(run.wall_seconds, 3), num(m.wall_seconds, 3), " ".join(rel(p, root) for p in run.samples),
                         rel(run.tokens_file, root) if run.tokens_file else "", m.command, m.notes])
    for i, path in enumerate(sorted({r.path for r in loaded.judge}), 1):
        source = next(r.source for r in loaded.judge if r.path == path)
        md_rows.append([source, rel(path, root), "(judge summary)", "", "—", "—", "`marco-eval judge summarize`"])
        csv_rows.append([source, rel(path, root), "", "", "", "", "", "", "", "", "marco-eval judge summarize", ""])
    for t in loaded.training:
        md_rows.append([t.source, rel(t.path, root), f"(training) {t.summary['config'].get('output_dir', '')}", "",
                        f"{t.summary['wall_seconds']:.0f}", "—", f"`{t.command}`"])
        csv_rows.append([t.source, rel(t.path, root), "", t.summary["base_model"], "", "", "",
                         num(t.summary["wall_seconds"], 3), "", "", t.command, ""])
    note = ("Every number above names its source here. Paths are relative to the results folder; commands are "
            "from each run.json" + ("; a run without one shows the command rebuilt from its lm-eval results file "
                                    "(lm-eval does not record its command line)."
                                    if any(r.manifest.derived for r in loaded.runs) else "."))
    return Table("runs", "Runs (sources)", note, columns, md_rows, csv_columns, csv_rows)

