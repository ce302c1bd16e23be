"""Final-answer rules: which finished rollout a search hands back.

A rule reads the tree and a list of rollouts and returns one of them; the answer is that
rollout's path from the root plus its continuation. `RULES` maps the config's
`final_answer` names to rules, so a new rule is one function and one table entry, never a
branch inside the algorithm.

    max_value     from the root follow the child with the highest Q to a leaf; its rollout
    most_visited  the same, following visit counts (ties: higher Q)
    vote          reward-weighted majority over the rollouts' answers; the best-rewarded
                  rollout with the winning answer (no answer anywhere: best_reward)
    best_reward   the single rollout with the highest reward

The tree-walking rules read the whole tree and ignore `rollouts`; the others read only
`rollouts` (anything `Scored`: the report reruns them on stored rollouts, with no tree),
which lets a search ask "what would I answer after the first k samples" (the anytime
trace) without a second search. A flat set of samples (strategy=sampling)
has no path to follow, so there the tree-walking rules fall back to best_reward.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Protocol, Sequence, TypeVar

from marco_eval.search.tree import Node, Rollout, Tree


class Scored(Protocol):
    """What the flat rules read of a rollout: a tree's Rollout, or a stored RolloutSummary."""
    answer: str | None
    reward: float


R = TypeVar("R", bound=Scored)
Rule = Callable[[Tree, Sequence[Rollout]], Rollout]


def _walk(tree: Tree, key: Callable[[Node], tuple]) -> Rollout:
    node = tree.root
    while node.children:
        node = max((tree.nodes[c] for c in node.children), key=key)
    return tree.rollouts[node.rollout]


def max_value(tree: Tree, rollouts: Sequence[Rollout]) -> Rollout:
    return _walk(tree, lambda n: (n.value, n.visits))


def most_visited(tree: Tree, rollouts: Sequence[Rollout]) -> Rollout:
    return _walk(tree, lambda n: (n.visits, n.value))


def best_reward(tree: Tree | None, rollouts: Sequence[R]) -> R:
    return max(rollouts, key=lambda r: r.reward)  # ties: the earlier rollout


def vote(tree: Tree | None, rollouts: Sequence[R]) -> R:
    weight: dict[str, float] = defaultdict(float)
    for r in rollouts:
        if r.answer is not None:
            weight[r.answer] += r.reward
    if not weight:
        return best_reward(tree, rollouts)
    winner = max(weight, key=lambda a: weight[a])  # dict order breaks ties: first seen
    return best_reward(tree, [r for r in rollouts if r.answer == winner])


RULES: dict[str, Rule] = {"max_value": max_value, "most_visited": most_visited, "vote": vote,
                          "best_reward": best_reward}
WALKS_THE_TREE = ("max_value", "most_visited")


def rule_for(name: str, strategy: str) -> Rule:
    """The rule a search with this `final_answer` and `strategy` applies."""
    if strategy == "sampling" and name in WALKS_THE_TREE:
        return best_reward
    return RULES[name]
