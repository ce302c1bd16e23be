"""Per-rollout data in request stores: every rollout (or sample) with its answer, reward,
length and ending, and the anytime trace (the configured rule's answer and the tokens spent
after each simulation or sample). Stores written before these fields existed lack both and
still load: the run then simply has no per-rollout data, and the report says so."""

from __future__ import annotations

from pathlib import Path

from marco_eval.errors import ReportError
from marco_eval.report.schema import ROLLOUT_FIELDS, TRACE_FIELDS, TaskRun
from marco_eval.search.mcts import RolloutSummary, TracePoint


def check_entries(row: dict, name: str, fields: dict, where: str) -> None:
    """Raise a one-line ReportError unless row[name] (when present) is a list of objects with `fields`."""
    if name not in row:
        return
    entries = row[name]
    if not isinstance(entries, list):
        raise ReportError(f"{where}: field {name!r} must be a list")
    for i, entry in enumerate(entries):
        bad = next((key for key, kind in fields.items() if not isinstance(entry, dict) or key not in entry
                    or not isinstance(entry[key], kind) or isinstance(entry[key], bool)), None)
        if bad is not None:
            raise ReportError(f"{where}: {name}[{i}] needs {bad!r} ({', '.join(fields)}): "
                              f"the store was written by another version; rerun the run or drop the field")


def check_search_fields(row: dict, path: Path, number: int) -> None:
    """Validate a store record's optional `rollouts` and `trace` (rewards in [0, 1]).

    Args:
        row: the record.
        path, number: where it was read, for the message.
    """
    where = f"{path}:{number}"
    check_entries(row, "rollouts", ROLLOUT_FIELDS, where)
    check_entries(row, "trace", TRACE_FIELDS, where)
    for i, rollout in enumerate(row.get("rollouts", [])):
        if not 0 <= rollout["reward"] <= 1:
            raise ReportError(f"{where}: rollouts[{i}] has reward {rollout['reward']}, outside [0, 1]")


def attach_search_data(run: TaskRun, records: dict[int, dict]) -> None:
    """Copy the store's picks, rollouts and traces into the run: rollouts (traces) only when every
    record has them, so that every statistic is over the same problems as the run's accuracy.

    Args:
        run: the task run; its store_records, answers, rollouts and traces are set.
        records: doc_id -> store record, one per problem the run scored.
    """
    docs = sorted(records)
    run.store_records = len(docs)
    run.answers = {d: records[d].get("answer") for d in docs}
    if all("rollouts" in records[d] for d in docs):
        run.rollouts = {d: [RolloutSummary(**{k: r[k] for k in ROLLOUT_FIELDS},
                                           **{k: r[k] for k in ("simulation", "reflections", "confidence") if k in r})
                            for r in records[d]["rollouts"]] for d in docs}
    if all("trace" in records[d] for d in docs):
        run.traces = {d: [TracePoint(**{k: t[k] for k in TRACE_FIELDS}) for t in records[d]["trace"]]
                      for d in docs}


def lacking_search_data(run: TaskRun) -> str | None:
    """Why a run has no per-rollout data (None when it has rollouts): shown beside the section."""
    if run.rollouts is not None:
        return None
    if not run.store_records:
        return "no request store"
    return "store written before per-rollout data was recorded"
