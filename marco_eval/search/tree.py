"""The search tree: reasoning states as token-id paths, with MCTS statistics.

A node's state is the prompt plus the action tokens of every node from the root to it.
Nodes live in one list and point to parents by index, which keeps ids stable, export
trivial and the tree freed in one go when its request completes.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Node:
    id: int
    parent: int | None
    depth: int
    action_ids: list[int] = field(default_factory=list)
    # Per action token: raw log-prob and top-5 (None for tokens the search inserted).
    action_logprobs: list[float | None] = field(default_factory=list)
    action_top5: list[list[float] | None] = field(default_factory=list)
    finish: str = ""  # how the action ended: stop string, "eos", "length", "reflection", "budget"
    terminal: bool = False
    reflections: int = 0  # reflection phrases on the path root..this node
    generated: int = 0  # tokens on the path root..this node
    children: list[int] = field(default_factory=list)
    visits: int = 0
    value_sum: float = 0.0
    rollout_visits: int = 0
    rollout: int | None = None  # index of this node's own rollout in Tree.rollouts

    @property
    def value(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0


@dataclass
class Rollout:
    """One completed answer: `node`'s action tokens followed by its continuation."""
    node: int
    token_ids: list[int]
    logprobs: list[float | None]
    top5: list[list[float] | None]
    continuation_start: int  # token_ids[:continuation_start] is the node's action
    reward: float
    finish: str
    answer: str | None = None  # the extracted final answer, when an extractor is given
    tokens: int = 0  # length of the whole completion: the path from the root + the continuation
    simulation: int = 0  # the MCTS simulation (or, for sampling, the sample) that made it, from 1
    reflections: int = 0  # reflection phrases the search inserted on its way (path and continuation)
    confidence: float = 0.0  # Marco-o1's confidence reward of the same tokens, whatever `reward` is


class Tree:
    def __init__(self, prompt_ids: list[int]):
        self.prompt_ids = list(prompt_ids)
        self.nodes: list[Node] = [Node(id=0, parent=None, depth=0)]
        self.rollouts: list[Rollout] = []

    @property
    def root(self) -> Node:
        return self.nodes[0]

    def add_child(self, parent: Node, **fields) -> Node:
        node = Node(id=len(self.nodes), parent=parent.id, depth=parent.depth + 1, **fields)
        self.nodes.append(node)
        parent.children.append(node.id)
        return node

    def path(self, node: Node) -> list[Node]:
        """Nodes from the root to `node`, inclusive."""
        out = []
        cur: Node | None = node
        while cur is not None:
            out.append(cur)
            cur = self.nodes[cur.parent] if cur.parent is not None else None
        return out[::-1]

    def path_ids(self, node: Node) -> list[int]:
        """Generated token ids from the root to `node` (prompt excluded)."""
        return [t for n in self.path(node) for t in n.action_ids]

    def completion_ids(self, rollout: Rollout) -> list[int]:
        """Everything generated on one rollout: the path down to its node, then its own
        tokens (which start with the node's action)."""
        path = self.path_ids(self.nodes[rollout.node])
        return path[: len(path) - rollout.continuation_start] + rollout.token_ids
