"""Systems a verifier run's stored rollouts answer without running again.

A run whose reward is a verifier (`reward=PATH`) keeps every rollout with its verifier
value (the request store's `rollouts`): a self-consistency run's samples, or an MCTS run's
rollouts. Each flat final-answer rule over those same rollouts is a configuration of its
own, with a per-problem score the verdict table can test against greedy CoT and a vote like
any run:

    verifier best-of-N      the sample the verifier values highest (final_answer best_reward)
    verifier-weighted vote  the answer whose samples' values sum highest (final_answer vote)

The run's lm-eval scores are its configured rule's; these are recomputed from the store with
the report's answer matching (statistics.same_answer), the same for both rules. An MCTS run
is a row of its own under its configured rule (max_value walks the tree), so a pick that
repeats that rule is not added; a sampling run with a verifier is no row of its own.
"""

from __future__ import annotations

import dataclasses

from marco_eval.report.schema import TaskRun
from marco_eval.report.statistics import same_answer
from marco_eval.search.final_answer import best_reward, vote

PICKS = {"verifier best-of-N": best_reward, "verifier-weighted vote": vote}


def verifier_rewarded(run: TaskRun) -> bool:
    """Did a verifier (reward=PATH) make this run's rewards?"""
    return bool(run.settings) and run.settings.get("reward", "confidence") != "confidence"


def verifier_picks(run: TaskRun) -> list[TaskRun]:
    """One run per PICKS rule (but an MCTS run's own) for a run whose reward was a verifier
    and whose store kept every rollout; otherwise none."""
    if not verifier_rewarded(run) or not run.rollouts:
        return []
    out = []
    for label, rule in PICKS.items():
        if run.strategy != "sampling" and rule.__name__ == run.final_rule:
            continue
        answers = {d: rule(None, rs).answer if rs else None for d, rs in run.rollouts.items()}
        scores = {d: float(same_answer(a, run.targets[d])) for d, a in answers.items()}
        out.append(dataclasses.replace(run, system=f"{run.system} ({label})", scores=scores, final_rule=rule.__name__,
                                       answers=answers))
    return out
