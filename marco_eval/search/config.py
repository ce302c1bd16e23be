"""Every knob of the decoder in one plain dataclass.

`model_configs/*.yaml` hold values for these fields (OmegaConf merges the YAML, then any
`--model_args key=value` overrides, onto these defaults); unknown keys are an error.

strategy
  "mcts"      Monte Carlo Tree Search over reasoning actions (Marco-o1).
  "sampling"  `samples` independent completions from the prompt, one picked by
              `final_answer`: greedy CoT is samples=1, temperature=0; self-consistency is
              final_answer=vote; best-of-N is final_answer=best_reward.

MCTS, one simulation = select -> expand -> simulate -> backpropagate:
  select       from the root, while the node has children, go to the child maximising
                 UCT(c) = Q(c) + exploration * sqrt(ln N(parent) / N(c))
               Q = mean rollout reward below c, N = visit count; ties go to the older child.
               Default exploration = 1.0 (rewards lie in [0, 1]).
  expand       sample `children` actions from the leaf in one batched policy call:
                 action=step       text up to and including a `step_delimiters` string, the
                                   end of the thought, or the end of the answer;
                 action=mini_step  exactly `mini_step_tokens` tokens, fewer only when the
                                   sequence terminates (or a reflection is inserted).
  simulate     each new child is rolled out to a terminal state (answer end, EOS, a task
               stop string, or the token budget); its reward is the mean token confidence
               of its action + rollout tokens (see reward.py).
  backpropagate  every node on the path gets visits += 1 and value_sum += reward.
  Invariant kept: visits(n) = rollout_visits(n) + sum(visits(children of n)), where
  rollout_visits counts rollouts that ended at n itself (one when n was created, plus one
  each time selection lands on n while it is terminal or at max_depth and its stored
  reward is backed up again).

final_answer (rules in final_answer.py)
  max_value     from the root follow the child with the highest Q to a leaf; answer = that
                path + the leaf's own rollout (default).
  most_visited  the same, following visit counts (ties: higher Q).
  vote          reward-weighted majority over the answers of all rollouts; the
                best-rewarded rollout with the winning answer is returned.
  best_reward   the single rollout with the highest reward.

reflection
  "off" (default) or "thought_end": when a path's thought ends (the model writes
  `thought_end`) and fewer than `reflection_max` reflections are on that path, the
  end-of-thought tokens are dropped, `reflection_phrase` is inserted and the model keeps
  thinking. Inserted tokens carry no log-probability and do not count in rewards.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from marco_eval.errors import require
from marco_eval.search.final_answer import RULES

REFLECTION_PHRASE = "Wait! Maybe I made some mistakes! I need to rethink from scratch."

STRATEGIES = ("mcts", "sampling")
ACTIONS = ("step", "mini_step")
FINAL_ANSWERS = tuple(RULES)
REFLECTIONS = ("off", "thought_end")
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 2.0  # vLLM's sampling range, applied to every backend


@dataclass
class SearchConfig:
    strategy: str = "mcts"
    simulations: int = 8
    children: int = 2
    exploration: float = 1.0
    action: str = "step"
    mini_step_tokens: int = 32
    step_delimiters: list[str] = field(default_factory=lambda: ["\n\n"])
    thought_end: str = "</Thought>"
    answer_end: str = "</Output>"
    max_depth: int = 12
    action_max_tokens: int = 256
    rollout_max_tokens: int = 1024
    samples: int = 1
    temperature: float = 0.7
    top_p: float = 0.95
    reflection: str = "off"
    reflection_max: int = 1
    reflection_phrase: str = REFLECTION_PHRASE
    final_answer: str = "max_value"
    seed: int = 1234

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field and the allowed range."""
        require(self.strategy in STRATEGIES, f"strategy={self.strategy!r}: use one of {STRATEGIES}")
        require(self.action in ACTIONS, f"action={self.action!r}: use one of {ACTIONS}")
        require(self.final_answer in FINAL_ANSWERS, f"final_answer={self.final_answer!r}: use one of {FINAL_ANSWERS}")
        require(self.reflection in REFLECTIONS, f"reflection={self.reflection!r}: use one of {REFLECTIONS}")
        for name in ("simulations", "children", "mini_step_tokens", "max_depth",
                     "action_max_tokens", "rollout_max_tokens", "samples"):
            value = getattr(self, name)
            require(isinstance(value, int) and not isinstance(value, bool) and value > 0,
                 f"{name}={value!r}: must be a positive integer")
        require(isinstance(self.reflection_max, int) and self.reflection_max >= 0,
             f"reflection_max={self.reflection_max!r}: must be an integer >= 0")
        require(self.temperature >= 0, f"temperature={self.temperature}: must be >= 0 (0 = greedy)")
        # vLLM refuses temperatures above 2 and silently raises those below 0.01 to 0.01;
        # both backends take exactly the same range, so a config means the same on either.
        require(self.temperature == 0 or MIN_TEMPERATURE <= self.temperature <= MAX_TEMPERATURE,
                f"temperature={self.temperature}: use 0 (greedy) or a value in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}]")
        for name in ("thought_end", "answer_end"):  # stop strings: an empty one would end every step at once
            require(isinstance(getattr(self, name), str) and getattr(self, name),
                    f"{name}={getattr(self, name)!r}: must be a non-empty string")
        require(0 < self.top_p <= 1, f"top_p={self.top_p}: must be in (0, 1]")
        require(self.exploration >= 0, f"exploration={self.exploration}: must be >= 0")
        require(isinstance(self.step_delimiters, (list, tuple)) and len(self.step_delimiters) > 0
             and all(isinstance(d, str) and d for d in self.step_delimiters),
             f"step_delimiters={self.step_delimiters!r}: must be a non-empty list of non-empty strings")
        require(isinstance(self.seed, int), f"seed={self.seed!r}: must be an integer")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
