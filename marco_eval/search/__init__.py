"""The search algorithm: pure Python, no torch, no backend, no lm-eval.

config.SearchConfig   every knob, documented          reward        Marco-o1's confidence reward
policy.Policy         what a backend must provide     tree          nodes, rollouts, statistics
mcts.Search           select/expand/simulate/backup   final_answer  which rollout is the answer
driver                many trees: streamed or rounds  export        tree JSON files
"""

from marco_eval.search.config import SearchConfig
from marco_eval.search.driver import run_searches
from marco_eval.search.final_answer import RULES
from marco_eval.search.mcts import Origin, RolloutSummary, Search, SearchResult, TracePoint, drive
from marco_eval.search.policy import Codec, Continue, Generation, Policy, StreamingPolicy
from marco_eval.search.reward import RewardFn, rollout_reward, token_confidence

__all__ = ["SearchConfig", "Search", "Origin", "SearchResult", "RolloutSummary", "TracePoint", "drive", "run_searches",
           "Codec", "Continue", "Generation", "Policy", "StreamingPolicy", "RULES", "RewardFn", "rollout_reward",
           "token_confidence"]
