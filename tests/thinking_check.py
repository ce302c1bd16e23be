"""One check both backends run on the real small model: `think_end_token` returns what a
real completion has after its last think end (tests/test_real_model.py, test_vllm_real.py).

smollm2-135m writes no think block of its own, so the think end is a piece of text its
greedy completion is known to hold: the completion with think_end_token set must then
be lm-eval's response of the completion without it (after the last occurrence,
left-stripped), and a think end it never writes must give the completion whole."""

from __future__ import annotations

QUESTION = "Question: Tom has 3 apples and buys 4 more. How many apples does he have?\n"


def check_think_end_token(policy, **options) -> None:
    from marco_eval.engine import Engine
    from marco_eval.settings import build

    def answer(**more) -> str:
        engine = Engine(*build("base_cot", pretrained="smollm2-135m", chat_template="off", **options, **more))
        engine._policy = policy  # the loaded model, shared
        (result,) = engine.run([engine.make_search(QUESTION, max_gen_toks=40)])
        return engine.response_text(result, ())

    plain = answer()
    words = plain.split()
    assert len(words) >= 6, plain
    marker = " " + words[len(words) // 2] + " "  # a piece of the completion, from its middle
    assert marker in plain, (marker, plain)
    assert answer(think_end_token=marker) == plain.split(marker)[-1].lstrip()
    assert answer(think_end_token="</never-written>") == plain  # a trace that never closes: whole
