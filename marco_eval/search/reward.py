"""Marco-o1's confidence reward.

For each rollout token i, with log-probability lp_i of the chosen token and the model's
top-5 log-probabilities lp_1..lp_5 at that position (raw distribution, no temperature):

    c_i = exp(lp_i) / sum_{k in top5 ∪ {chosen}} exp(lp_k)

When the chosen token is among the top 5 the union is just the top 5. When sampling picked
a token outside the top 5, it joins the denominator (six terms), so c_i stays in (0, 1] and
a low-ranked choice is scored low rather than undefined.

The rollout reward is v = mean(c_i) over the rollout's model-generated tokens. Tokens the
search inserted itself (the reflection phrase) carry no log-probability and are skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

# A rollout reward: (raw log-prob of each token, its top-5 log-probs) -> reward; None marks
# a token the search inserted. The search takes any such function (Search(reward=...)).
RewardFn = Callable[[Sequence["float | None"], Sequence["Sequence[float] | None"]], float]

# Two log-probs closer than this are the same token's value computed twice.
_SAME_TOKEN_TOL = 1e-6


def token_confidence(logprob: float, top5: Sequence[float], chosen_in_top5: bool | None = None) -> float:
    """c_i for one token. `chosen_in_top5` may be given by a backend that knows token ids;
    otherwise membership is decided by value (ties with a top-5 value count as inside)."""
    if chosen_in_top5 is None:
        chosen_in_top5 = any(abs(logprob - t) <= _SAME_TOKEN_TOL for t in top5) or (
            len(top5) > 0 and logprob > min(top5)
        )
    terms = list(top5) if chosen_in_top5 else [*top5, logprob]
    m = max(terms)  # log-sum-exp for stability
    denom = sum(math.exp(t - m) for t in terms)
    return math.exp(logprob - m) / denom


def rollout_reward(logprobs: Sequence[float | None], top5: Sequence[Sequence[float] | None]) -> float:
    """v = mean c_i over the tokens that have a log-probability (0.0 if none do)."""
    scores = [token_confidence(lp, t5) for lp, t5 in zip(logprobs, top5, strict=True) if lp is not None]
    return sum(scores) / len(scores) if scores else 0.0


@dataclass(frozen=True)
class VerifierReward:
    """A rollout's reward is a verifier's value of its whole sequence (prompt + completion),
    asked of the policy with Score requests (policy.Verifier answers them)."""
    name: str  # which verifier: its checkpoint, as tree files and stores name it


Reward = RewardFn | VerifierReward  # what Search(reward=...) takes
VERIFIER_PREFIX = "verifier:"  # how a tree file names a VerifierReward: the prefix, then its checkpoint

# Rewards a tree file can name and `marco-eval tree check` can recompute from the file alone.
REWARDS: dict[str, RewardFn] = {"confidence": rollout_reward}


def reward_name(reward: Reward) -> str:
    """The name a tree file records for `reward`: its REWARDS key, "verifier:NAME", else the
    function's name."""
    if isinstance(reward, VerifierReward):
        return f"{VERIFIER_PREFIX}{reward.name}"
    return next((name for name, fn in REWARDS.items() if fn is reward), getattr(reward, "__name__", repr(reward)))
