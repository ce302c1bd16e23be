"""`marco-eval judge summarize`: unblind the ratings and report them.

Per system and aspect: the mean of all ratings (every rater's score counts once), with a
95% confidence interval from a bootstrap over items (items are resampled with replacement;
all ratings of a drawn item come along, so raters of one item are not treated as
independent). Seeded: the same ratings give the same interval.

Agreement: Krippendorff's alpha across raters, per aspect. A unit is one candidate of one
item; its values are the raters' scores. Coincidence-matrix form (Krippendorff, "Computing
Krippendorff's Alpha-Reliability", 2011):
    o_ck = sum over units u of (number of ordered rater pairs in u valued c, k) / (m_u - 1)
    n_c = sum_k o_ck,  n = sum_c n_c
    alpha = 1 - (n - 1) * sum_ck o_ck d2(c, k) / sum_ck n_c n_k d2(c, k)
with d2(c, k) = (c - k)^2 (interval) or (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2 (ordinal).
Units with one rating are not pairable and drop out.
"""

from __future__ import annotations

import csv
import io
import json
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np

from marco_eval.judge import JudgeError
from marco_eval.judge.export import KEYS_DIR, default_key_path, legacy_key_path, load_sheet, read_judge_json
from marco_eval.judge.store import ASPECTS, RatingStore, default_db_path
from marco_eval.files import write_atomic, write_json_atomic

LEVELS = ("interval", "ordinal")


def krippendorff_alpha(units: list[list[float]], level: str = "interval") -> float | None:
    """Alpha over units (each a list of the values its raters gave); None when undefined."""
    if level not in LEVELS:
        raise JudgeError(f"alpha level {level!r} is not one of {', '.join(LEVELS)}")
    coincidence: dict[tuple[float, float], float] = defaultdict(float)
    for values in units:
        m = len(values)
        if m < 2:
            continue
        for i, c in enumerate(values):
            for j, k in enumerate(values):
                if i != j:
                    coincidence[c, k] += 1 / (m - 1)
    n_c: dict[float, float] = defaultdict(float)
    for (c, _), o in coincidence.items():
        n_c[c] += o
    n = sum(n_c.values())
    if n < 2:
        return None
    values = sorted(n_c)

    def d2(c, k):
        if level == "interval":
            return (c - k) ** 2
        lo, hi = sorted((c, k))
        return (sum(n_c[g] for g in values if lo <= g <= hi) - (n_c[c] + n_c[k]) / 2) ** 2

    observed = sum(o * d2(c, k) for (c, k), o in coincidence.items())
    expected = sum(n_c[c] * n_c[k] * d2(c, k) for c in values for k in values)
    if expected == 0:
        return None  # every rating is the same value: agreement is undefined, not perfect
    return 1 - (n - 1) * observed / expected


def bootstrap_ci(scores_by_item: dict[str, list[int]], resamples: int, seed_parts: list[int],
                 confidence: float = 0.95) -> list[float] | None:
    """Percentile interval of the mean over all scores, items resampled with replacement."""
    items = sorted(scores_by_item)
    if len(items) < 2:
        return None  # one item has no spread to resample
    sums = np.array([sum(scores_by_item[i]) for i in items], dtype=float)
    counts = np.array([len(scores_by_item[i]) for i in items], dtype=float)
    rng = np.random.default_rng(seed_parts)
    draws = rng.integers(0, len(items), size=(resamples, len(items)))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return [round(float(lo), 4), round(float(hi), 4)]


def _sheet_id_of(path: Path) -> str | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc.get("sheet_id") if isinstance(doc, dict) else None


def find_key(sheet_path: Path, sheet: dict) -> Path:
    """The key `judge export` wrote for this sheet: judge-keys/<stem>.key.json, else any key in
    judge-keys/ with this sheet's id (a renamed sheet), else one beside the sheet (older exports).
    A key of another sheet found by name is returned when nothing matches, so load_key says so."""
    named = [p for p in (default_key_path(sheet_path), legacy_key_path(sheet_path)) if p.is_file()]
    for path in [*named, *sorted(KEYS_DIR.glob("*.key.json"))]:
        if _sheet_id_of(path) == sheet["sheet_id"]:
            return path
    if named:
        return named[0]
    raise JudgeError(f"no key for {sheet_path}: looked for {default_key_path(sheet_path)} (from the working "
                     f"directory) and {legacy_key_path(sheet_path)}; pass --key with the file `judge export` printed")


def load_key(path: Path, sheet: dict) -> dict:
    key = read_judge_json(path, "key file", ("candidates",), "pass the key `judge export` wrote for this sheet")
    if key.get("sheet_id") != sheet["sheet_id"]:
        raise JudgeError(f"key file {path} belongs to another sheet ({key.get('sheet_id')}, this sheet is "
                         f"{sheet['sheet_id']}): pass the key exported with this sheet")
    return key


def unblind(ratings: list[tuple], key: dict, key_path: Path) -> list[tuple[str, str, str, str, int]]:
    """(rater, item_id, cand_id, aspect, score) -> (rater, item_id, system, aspect, score)."""
    out = []
    for rater, item_id, cand_id, aspect, score in ratings:
        system = key["candidates"].get(cand_id)
        if system is None:
            raise JudgeError(f"candidate {cand_id} (item {item_id}, rater {rater}) is not in the key file "
                             f"{key_path}: pass the key exported with this sheet")
        out.append((rater, item_id, system, aspect, score))
    return out


def summarize_ratings(rows: list[tuple[str, str, str, str, int]], systems: list[str], level: str = "interval",
                      resamples: int = 2000, seed: int = 0) -> dict:
    """The summary document (without file paths) from unblinded rows."""
    if resamples < 1:
        raise JudgeError(f"--bootstrap must be at least 1, got {resamples}")
    by_system: dict[tuple[str, str], dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    by_unit: dict[str, dict[tuple[str, str], list[int]]] = {a: defaultdict(list) for a in ASPECTS}
    for rater, item_id, system, aspect, score in rows:
        by_system[system, aspect][item_id].append(score)
        by_unit[aspect][item_id, system].append(score)
    report = []
    for system in systems:
        entry = {"system": system, "n_items": len({i for a in ASPECTS for i in by_system[system, a]}),
                 "n_ratings": sum(len(v) for a in ASPECTS for v in by_system[system, a].values())}
        for a_index, aspect in enumerate(ASPECTS):
            per_item = by_system[system, aspect]
            flat = [s for v in per_item.values() for s in v]
            entry[f"{aspect}_mean"] = round(sum(flat) / len(flat), 4) if flat else None
            # Seeded by the system's name, so adding a system leaves the others' intervals alone.
            entry[f"{aspect}_ci"] = bootstrap_ci(per_item, resamples, [seed, zlib.crc32(system.encode()), a_index])
            entry[f"{aspect}_n"] = len(flat)
        report.append(entry)
    alpha = {}
    for aspect in ASPECTS:
        value = krippendorff_alpha(list(by_unit[aspect].values()), level)
        alpha[aspect] = None if value is None else round(value, 4)
    per_rater: dict[str, list[str]] = defaultdict(list)
    for rater, item_id, *_ in rows:
        per_rater[rater].append(item_id)
    return {"systems": report, "alpha": alpha, "alpha_level": level,
            "alpha_units": {a: sum(len(v) >= 2 for v in by_unit[a].values()) for a in ASPECTS},
            "raters": [{"rater": r, "n_ratings": len(ids), "n_items": len(set(ids))} for r, ids in sorted(per_rater.items())],
            "bootstrap": {"resamples": resamples, "seed": seed, "confidence": 0.95, "unit": "item"}}


def _fmt(mean: float | None, ci: list[float] | None) -> str:
    if mean is None:
        return "–"
    return f"{mean:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{mean:.2f}"


def to_markdown(summary: dict) -> str:
    task = summary.get("task") or "translations"
    lines = [f"### Hand judging: {task}", "",
             "| system | items | ratings | adequacy (95% CI) | fluency (95% CI) |",
             "|---|---:|---:|---|---|"]
    for s in summary["systems"]:
        lines.append(f"| {s['system']} | {s['n_items']} | {s['n_ratings']} | "
                     f"{_fmt(s['adequacy_mean'], s['adequacy_ci'])} | {_fmt(s['fluency_mean'], s['fluency_ci'])} |")
    alpha = summary["alpha"]
    shown = {a: ("undefined" if v is None else f"{v:.3f}") for a, v in alpha.items()}
    raters = ", ".join(f"{r['rater']} ({r['n_ratings']})" for r in summary["raters"])
    boot = summary["bootstrap"]
    lines += ["", f"Scores 1–5 (mean of all ratings); 95% CI: bootstrap over items "
                  f"({boot['resamples']} resamples, seed {boot['seed']}).",
              f"Krippendorff's alpha ({summary['alpha_level']}) across raters: adequacy {shown['adequacy']}, "
              f"fluency {shown['fluency']} ({summary['alpha_units']['adequacy']} candidates rated by two or more).",
              f"Raters (ratings): {raters}.", ""]
    return "\n".join(lines)


def to_csv(summary: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["system", "n_items", "n_ratings", *(f"{a}_{f}" for a in ASPECTS for f in ("mean", "ci_lo", "ci_hi", "n"))])
    for s in summary["systems"]:
        row = [s["system"], s["n_items"], s["n_ratings"]]
        for a in ASPECTS:
            ci = s[f"{a}_ci"] or [None, None]
            row += [s[f"{a}_mean"], ci[0], ci[1], s[f"{a}_n"]]
        w.writerow(["" if v is None else v for v in row])
    return buf.getvalue()


def summarize(sheet_path: Path, key_path: Path | None = None, db_path: Path | None = None,
              out_dir: Path | None = None, level: str = "interval", resamples: int = 2000,
              seed: int = 0) -> tuple[dict, dict[str, Path]]:
    """Read sheet + key + store; write <sheet>.summary.{md,csv,json}; return (summary, paths)."""
    sheet_path = Path(sheet_path)
    sheet = load_sheet(sheet_path)
    key_path = Path(key_path) if key_path else find_key(sheet_path, sheet)
    key = load_key(key_path, sheet)
    store = RatingStore(db_path or default_db_path(sheet_path), sheet, create=False)
    try:
        ratings = store.all_ratings()
    finally:
        store.close()
    if not ratings:
        raise JudgeError(f"{store.path} has no ratings yet: rate some with `marco-eval judge serve` first")
    systems = list(key.get("systems") or dict.fromkeys(key["candidates"].values()))
    summary = summarize_ratings(unblind(ratings, key, key_path), systems, level, resamples, seed)
    summary = {"schema_version": 1, "task": sheet.get("task"), "sheet": str(sheet_path),
               "sheet_id": sheet["sheet_id"], **summary}
    out_dir = Path(out_dir) if out_dir else sheet_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_dir / f"{sheet_path.stem}.summary.{ext}" for ext in ("md", "csv", "json")}
    write_atomic(paths["md"], to_markdown(summary))
    write_atomic(paths["csv"], to_csv(summary))
    write_json_atomic(paths["json"], summary)
    return summary, paths
