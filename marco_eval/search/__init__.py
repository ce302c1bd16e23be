"""The search algorithm: pure Python, no torch, no backend, no lm-eval.

config.SearchConfig   every knob, documented          reward    Marco-o1's confidence reward
policy.Policy         what a backend must provide     tree      nodes, rollouts, statistics
mcts.Search           select/expand/simulate/backup   driver    many trees in lock-step
export                tree JSON files
"""

from marco_eval.search.config import SearchConfig
from marco_eval.search.driver import run_searches
from marco_eval.search.mcts import Search, SearchResult, drive
from marco_eval.search.policy import Continue, Generation, Policy
from marco_eval.search.reward import rollout_reward, token_confidence

__all__ = ["SearchConfig", "Search", "SearchResult", "drive", "run_searches", "Continue", "Generation",
           "Policy", "rollout_reward", "token_confidence"]
