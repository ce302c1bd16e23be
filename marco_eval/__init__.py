"""marco-eval: Marco-o1-style MCTS reasoning as an lm-evaluation-harness model.

This file stays import-light on purpose: the startup hook (marco_eval/_hook.py) imports the
package on every interpreter start, so nothing heavy (torch, transformers, lm_eval) may be
imported here.
"""

__version__ = "0.1.0"
