"""What `marco_mcts` does with each key of a task's `generation_kwargs` (and --gen_kwargs).

lm-eval hands every generate_until request the task's generation_kwargs. A search samples
as its config says (the tree needs its own temperature for every expansion), so only the
keys that bound or end the text are taken from the task:

    until          honoured: stop strings (lm-eval's handle_stop_sequences); under
                   think_end_token they cut the response after the thinking (thinking.py)
    max_gen_toks   honoured: the token budget, capped by the context and token_cap; a
                   positive integer, else a one-line error
    do_sample, temperature, top_p
                   not used: the config's `temperature` and `top_p` decide (strategy=sampling
                   with temperature=0 is greedy); a task value that differs from the
                   config's is said in one warning line per task
    anything else  (top_k, repetition_penalty, ...) not used; one warning line per task

`ignored_keys` finds what to warn about; the adapter (lm.py) prints each task's line once.
"""

from __future__ import annotations

from marco_eval.search import SearchConfig

HONOURED = ("until", "max_gen_toks")


def _differs(key: str, value, config: SearchConfig) -> bool:
    greedy = config.temperature == 0
    if key == "do_sample":
        return bool(value) == greedy
    if key == "temperature":
        return float(value) != config.temperature and not (greedy and float(value) == 0)
    if key == "top_p":
        return float(value) != config.top_p and not greedy
    return True


def ignored_keys(gen_kwargs: dict, config: SearchConfig) -> dict:
    """The task's generation_kwargs the search does not follow, where following would differ."""
    return {k: v for k, v in gen_kwargs.items() if k not in HONOURED and _differs(k, v, config)}


def warning_line(task: str, ignored: dict, config: SearchConfig) -> str:
    """One line for a task whose generation_kwargs the config overrides."""
    given = ", ".join(f"{k}={v!r}" for k, v in ignored.items())
    return (f"marco_mcts: {task}'s generation_kwargs {given} are not used: the search config decides "
            f"(temperature={config.temperature}, top_p={config.top_p}; set them in --model_args)")
