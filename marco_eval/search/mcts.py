"""Marco-o1 search as a coroutine: the search yields policy requests and receives results.

    search = Search(config, prompt_ids, codec, max_new_tokens=512, until=("</Output>",))
    result = drive(search, policy)            # one tree
    results = run_searches(searches, policy)  # many trees at once (driver.py)

Writing the search as a generator keeps each MCTS phase a short function that reads like
the paper, while letting a driver put the requests of many trees into one batched model
call. Nothing here imports torch or a backend; tests drive it with a scripted fake policy.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from typing import Callable, Generator, Sequence

from marco_eval.search.config import SearchConfig
from marco_eval.search.final_answer import rule_for
from marco_eval.search.policy import Codec, Continue, Generation, Score
from marco_eval.search.reward import Reward, VerifierReward, rollout_reward
from marco_eval.search.tree import Node, Rollout, Tree

# A search yields either continuations (answered with Generations) or, when its reward is a
# verifier, finished sequences to value (answered with floats); never both in one yield.
Requests = list[Continue] | list[Score]
SearchGen = Generator[Requests, list[Generation] | list[float], "SearchResult"]


@dataclass(frozen=True)
class RolloutSummary:
    """One rollout (or sample) without its tokens: what request stores keep and the report
    reads back (report/rollouts.py), one type for both."""
    answer: str | None  # extracted final answer (None: none found, or no extractor)
    reward: float  # the search's reward (Search.reward made it), in [0, 1]
    tokens: int  # length of the whole completion
    finish: str  # how it ended: a stop string, "eos", "length", "budget"
    simulation: int = 0  # which simulation (sampling: which sample) made it, from 1 (0: not recorded)
    reflections: int = 0  # reflection phrases inserted on its way (reflection=thought_end)
    # Marco-o1's confidence reward of the same tokens, whatever made `reward` (None: a store
    # written before it was recorded, when `reward` was the confidence)
    confidence: float | None = None


@dataclass(frozen=True)
class TracePoint:
    """The anytime trace: after simulation (or sample) k, what the search would answer;
    stores keep it and the report reads it back."""
    answer: str | None  # the configured final-answer rule's answer at that point
    tokens: int  # tokens generated for this request so far


@dataclass
class SearchResult:
    text: str  # the completion handed back to lm-eval (cut at the task's stop strings)
    token_ids: list[int]  # generated ids of the chosen answer
    answer: str | None  # extracted final answer of the chosen completion
    candidates: list[str | None]  # extracted answers of every rollout (for Test@N)
    generated_tokens: int  # every token the policy generated for this request: the cost
    policy_calls: int
    chosen_path: list[int]
    tree: Tree = field(repr=False)
    rollouts: list[RolloutSummary] = field(default_factory=list)  # every rollout, in the order made
    trace: list[TracePoint] = field(default_factory=list)  # one point per simulation (sampling: per sample)


@dataclass
class _Partial:
    """A sequence being extended: a node's action, or a rollout/sample continuation."""
    ids: list[int] = field(default_factory=list)
    logprobs: list[float | None] = field(default_factory=list)
    top5: list[list[float] | None] = field(default_factory=list)
    generated: int = 0  # tokens on the whole path, including the ones above
    reflections: int = 0
    finish: str = ""
    terminal: bool = False


@dataclass(frozen=True)
class Origin:
    """How a caller made a search, for those that rebuild or record it (replicas, tree
    files). The search itself reads only `instance`."""
    answer: str | None = None  # the answer kind answer_fn reads (marco_eval/readers.py)
    task_until: tuple[str, ...] = ()  # the task's stop strings (under thinking the search has none)
    instance: int = 0  # which copy of a repeated request (lm-eval's `repeats`): enters the seed


class Search:
    def __init__(
        self,
        config: SearchConfig,
        prompt_ids: Sequence[int],
        codec: Codec,
        *,
        max_new_tokens: int,
        until: Sequence[str] = (),
        answer_fn: Callable[[str], str | None] | None = None,
        reward: Reward = rollout_reward,
        origin: Origin = Origin(),
    ):
        """Args:
            config: every knob of the search (config.py).
            prompt_ids: the prompt's token ids; the tree's root state.
            codec: decodes generated ids (answers, stop strings) and encodes the reflection
                phrase; any Policy is one.
            max_new_tokens: the request's token budget along any one path.
            until: the task's stop strings: a completion ends before the first of them.
            answer_fn: reads a completion's final answer (votes, candidates, the trace);
                None: answers are not read.
            reward: a rollout's reward: a function of its tokens' raw log-probs and top-5
                log-probs (None for inserted tokens), default Marco-o1's confidence reward;
                or a VerifierReward, the value a verifier gives its whole sequence (the
                search then yields Score requests, which the policy answers).
            origin: how the caller made it (Origin). Copies of one request with other
                `instance`s draw other request seeds, so they are independent searches; instance
                0 draws the seeds of a search made without one.
        """
        if max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens={max_new_tokens}: must be positive")
        self.config = config
        self.codec = codec
        self.max_new_tokens = max_new_tokens
        self.until = tuple(until)
        self.answer_fn = answer_fn
        self.reward = reward
        self.choose_rollout = rule_for(config.final_answer, config.strategy)
        self.tree = Tree(list(prompt_ids))
        self.origin = origin
        salt = f"{config.seed}:{origin.instance}" if origin.instance else f"{config.seed}"
        digest = hashlib.sha256(f"{salt}:{list(prompt_ids)}".encode()).digest()
        self._rng = random.Random(int.from_bytes(digest[:8], "big"))  # request seeds only
        self._terminal_stops = (config.answer_end, *self.until)
        self._reflection_ids: list[int] | None = None
        self.generated_tokens = 0
        self.policy_calls = 0
        self.simulation = 0  # the simulation (sampling: the sample) under way, from 1
        self.trace: list[TracePoint] = []

    # ------------------------------------------------------------------ entry point
    def run(self) -> SearchGen:
        if self.config.strategy == "sampling":
            return (yield from self._run_sampling())
        return (yield from self._run_mcts())

    def _run_mcts(self) -> SearchGen:
        for self.simulation in range(1, self.config.simulations + 1):
            leaf = self.select()
            if not self.expandable(leaf):
                self.backup_again(leaf)
            else:
                children = yield from self.expand(leaf)
                yield from self.simulate(children)
                for child in children:
                    self.backpropagate(child, self.tree.rollouts[child.rollout].reward)
            self.trace.append(TracePoint(self.choose_rollout(self.tree, self.tree.rollouts).answer,
                                         self.generated_tokens))
        return self.result()

    def _run_sampling(self) -> SearchGen:
        root = self.tree.root
        parts = [_Partial() for _ in range(self.config.samples)]
        yield from self._complete(parts)
        for self.simulation, part in enumerate(parts, 1):
            self._record_rollout(root, part, continuation_start=0)
        yield from self._verify(self.tree.rollouts)
        for rollout in self.tree.rollouts:
            root.rollout_visits += 1
            self.backpropagate(root, rollout.reward)
        # The samples were drawn together, but each is independent of the others: the
        # first k of them are what a run with samples=k would have drawn.
        spent = 0
        for k, rollout in enumerate(self.tree.rollouts, 1):
            spent += rollout.tokens
            self.trace.append(TracePoint(self.choose_rollout(self.tree, self.tree.rollouts[:k]).answer, spent))
        return self.result()

    # ------------------------------------------------------------------ MCTS phases
    def select(self) -> Node:
        node = self.tree.root
        while node.children:
            node = max((self.tree.nodes[c] for c in node.children), key=lambda c: self.uct(node, c))
        return node

    def uct(self, parent: Node, child: Node) -> tuple[float, int]:
        if child.visits == 0:
            return (math.inf, -child.id)
        explore = self.config.exploration * math.sqrt(math.log(parent.visits) / child.visits) if parent.visits > 1 else 0.0
        return (child.value + explore, -child.id)  # -id: ties go to the older child

    def expandable(self, node: Node) -> bool:
        return (not node.terminal and node.depth < self.config.max_depth
                and node.generated < self.max_new_tokens)

    def expand(self, leaf: Node) -> Generator[Requests, list[Generation], list[Node]]:
        config = self.config
        if config.action == "step":
            limit, stops = config.action_max_tokens, (*config.step_delimiters, config.thought_end, *self._terminal_stops)
        else:
            limit, stops = config.mini_step_tokens, self._continuation_stops(leaf.reflections)
        prefix = (*self.tree.prompt_ids, *self.tree.path_ids(leaf))
        budget = min(limit, self.max_new_tokens - leaf.generated)
        gens = yield from self._call([self._request(prefix, budget, stops) for _ in range(config.children)])
        children = []
        for gen in gens:
            part = _Partial(generated=leaf.generated, reflections=leaf.reflections)
            self._extend(part, gen)
            children.append(self.tree.add_child(
                leaf, action_ids=part.ids, action_logprobs=part.logprobs, action_top5=part.top5,
                finish=part.finish, terminal=part.terminal, reflections=part.reflections,
                generated=part.generated))
        return children

    def simulate(self, children: list[Node]) -> Generator[Requests, list[Generation], None]:
        """Roll each new child out to a terminal state, all children in one batch."""
        parts = [_Partial(ids=list(c.action_ids), logprobs=list(c.action_logprobs), top5=list(c.action_top5),
                          generated=c.generated, reflections=c.reflections, finish=c.finish, terminal=c.terminal)
                 for c in children]
        yield from self._complete(parts, [self.tree.path_ids(c) for c in children])
        for child, part in zip(children, parts):
            self._record_rollout(child, part, continuation_start=len(child.action_ids))
            child.rollout_visits = 1
        yield from self._verify([self.tree.rollouts[c.rollout] for c in children])

    def backpropagate(self, node: Node, reward: float) -> None:
        for n in self.tree.path(node):
            n.visits += 1
            n.value_sum += reward

    def backup_again(self, leaf: Node) -> None:
        """Selection landed on a leaf that cannot grow: back up its stored reward again."""
        leaf.rollout_visits += 1
        self.backpropagate(leaf, self.tree.rollouts[leaf.rollout].reward)

    # ------------------------------------------------------------------ final answer
    def result(self) -> SearchResult:
        """What the search answers now: the configured final-answer rule's pick, as a result."""
        return self._result(*self.choose())

    def choose(self) -> tuple[Node, list[int]]:
        """(node, continuation ids after that node's path) of the configured rule's rollout."""
        r = self.choose_rollout(self.tree, self.tree.rollouts)
        return self.tree.nodes[r.node], r.token_ids[r.continuation_start:]

    # ------------------------------------------------------------------ helpers
    def _request(self, prefix: Sequence[int], max_new: int, stops: Sequence[str], keep_cache: bool = True) -> Continue:
        return Continue(prefix=tuple(prefix), max_new_tokens=max_new, stop=tuple(dict.fromkeys(stops)),
                        temperature=self.config.temperature, top_p=self.config.top_p,
                        seed=self._rng.getrandbits(63), keep_cache=keep_cache)

    def _call(self, requests: Requests) -> Generator[Requests, list[Generation], list[Generation]]:
        gens = yield requests
        if len(gens) != len(requests):
            raise RuntimeError(f"policy returned {len(gens)} generations for {len(requests)} requests")
        self.policy_calls += 1
        self.generated_tokens += sum(len(g.token_ids) for g in gens)
        return gens

    def _continuation_stops(self, reflections: int) -> tuple[str, ...]:
        reflect = self.config.reflection == "thought_end" and reflections < self.config.reflection_max
        return (*self._terminal_stops, *((self.config.thought_end,) if reflect else ()))

    def _complete(self, parts: list[_Partial], prefixes: list[list[int]] | None = None):
        """Continue every non-terminal partial until it is terminal (rollouts, samples).

        One policy call per round; a round is repeated only for partials that had a
        reflection inserted and must keep thinking."""
        prefixes = prefixes or [[] for _ in parts]
        start = [len(p.ids) for p in parts]
        while live := [i for i, p in enumerate(parts) if not p.terminal]:
            reqs = []
            for i in live:
                p = parts[i]
                budget = min(self.config.rollout_max_tokens - (len(p.ids) - start[i]), self.max_new_tokens - p.generated)
                if budget <= 0:
                    p.terminal, p.finish = True, "budget"
                    continue
                prefix = (*self.tree.prompt_ids, *prefixes[i], *p.ids[start[i]:])
                # a rollout is never extended (a reflection continues from a cut prefix): no cache,
                # unless a verifier will read the finished sequence
                reqs.append((i, self._request(prefix, budget, self._continuation_stops(p.reflections),
                                              keep_cache=isinstance(self.reward, VerifierReward))))
            if not reqs:
                return
            gens = yield from self._call([r for _, r in reqs])
            for (i, _), gen in zip(reqs, gens):
                self._extend(parts[i], gen)
                # Only an inserted reflection makes a rollout go on; any other stop ends it
                # (the rollout cap, "length", included).
                parts[i].terminal = parts[i].finish != "reflection"

    def _extend(self, part: _Partial, gen: Generation) -> None:
        """Append one generation to a partial: reflection, terminal state, token budget."""
        ids, lps, top5 = list(gen.token_ids), list(gen.logprobs), list(gen.top_logprobs)
        finish = gen.stop if gen.finish == "stop" else gen.finish
        terminal = gen.finish == "eos" or (gen.finish == "stop" and gen.stop in self._terminal_stops)
        if gen.finish == "stop" and gen.stop == self.config.thought_end and not terminal and \
                self.config.reflection == "thought_end" and part.reflections < self.config.reflection_max:
            keep = self._cut_before(ids, self.config.thought_end)
            phrase = self._reflection_tokens()
            ids, lps, top5 = ids[:keep] + phrase, lps[:keep] + [None] * len(phrase), top5[:keep] + [None] * len(phrase)
            part.reflections += 1
            finish = "reflection"
        part.ids += ids
        part.logprobs += lps
        part.top5 += top5
        part.generated += len(ids)
        part.finish = finish
        part.terminal = terminal
        if not terminal and part.generated >= self.max_new_tokens:
            part.terminal, part.finish = True, "budget"

    def _cut_before(self, ids: list[int], marker: str) -> int:
        """Number of leading tokens whose text ends before `marker` starts."""
        pos = self.codec.decode(ids).find(marker)
        for keep in range(len(ids), -1, -1):
            if len(self.codec.decode(ids[:keep])) <= pos:
                return keep
        return 0

    def _reflection_tokens(self) -> list[int]:
        if self._reflection_ids is None:  # the fixed phrase, encoded on its own once
            self._reflection_ids = list(self.codec.encode("\n\n" + self.config.reflection_phrase + "\n\n"))
        return list(self._reflection_ids)

    def _record_rollout(self, node: Node, part: _Partial, continuation_start: int) -> Rollout:
        """A finished rollout into the tree; a verifier's reward is filled in by `_verify`."""
        confidence = rollout_reward(part.logprobs, part.top5)
        reward = confidence if isinstance(self.reward, VerifierReward) else self.reward(part.logprobs, part.top5)
        rollout = Rollout(node=node.id, token_ids=part.ids, logprobs=part.logprobs, top5=part.top5,
                          continuation_start=continuation_start, reward=reward, finish=part.finish,
                          simulation=self.simulation, reflections=part.reflections, confidence=confidence)
        full = self.tree.completion_ids(rollout)
        rollout.tokens = len(full)
        if self.answer_fn is not None:
            rollout.answer = self.answer_fn(self.cut_at_until(self.codec.decode(full)))
        self.tree.rollouts.append(rollout)
        node.rollout = len(self.tree.rollouts) - 1
        return rollout

    def _verify(self, rollouts: Sequence[Rollout]) -> Generator[Requests, list[float], None]:
        """With a verifier reward: ask for every rollout's value and make it the reward."""
        if not isinstance(self.reward, VerifierReward) or not rollouts:
            return
        requests = [Score((*self.tree.prompt_ids, *self.tree.completion_ids(r))) for r in rollouts]
        values = yield requests
        if len(values) != len(requests):
            raise RuntimeError(f"verifier returned {len(values)} values for {len(requests)} sequences")
        for rollout, value in zip(rollouts, values):
            rollout.reward = float(value)

    def cut_at_until(self, text: str) -> str:
        """lm-eval's convention: the completion ends before the first task stop string."""
        for s in self.until:
            if s and s in text:
                text = text[: text.index(s)]
        return text

    def _result(self, node: Node, continuation: list[int]) -> SearchResult:
        ids = self.tree.path_ids(node) + continuation
        text = self.cut_at_until(self.codec.decode(ids))
        answer = self.answer_fn(text) if self.answer_fn else None
        return SearchResult(
            text=text, token_ids=ids, answer=answer, candidates=[r.answer for r in self.tree.rollouts],
            generated_tokens=self.generated_tokens, policy_calls=self.policy_calls,
            chosen_path=[n.id for n in self.tree.path(node)], tree=self.tree,
            rollouts=[RolloutSummary(r.answer, r.reward, r.tokens, r.finish, r.simulation, r.reflections, r.confidence)
                      for r in self.tree.rollouts],
            trace=list(self.trace))


def drive(search: Search, policy) -> SearchResult:
    """Run one search to the end against a policy (no cross-tree batching)."""
    gen = search.run()
    try:
        requests = next(gen)
        while True:
            requests = gen.send(policy.generate(requests))
    except StopIteration as stop:
        return stop.value
