"""Answer readers: how a search reads each rollout's final answer, one table entry a kind.

A reader turns a completion into an answer key (or None: no answer found). Votes,
candidates (Test@N), the anytime trace, find-vs-pick and the reward AUROC all group
rollouts by these keys, so a kind must group what the task's own scorer calls equal:

    number  MGSM, GSM8K: the number the task's filters read (answers.extract_answer,
            flexible); a marked answer that is not a number reads as None
    math    MATH-500, Minerva math, AIME: math-verify, as lm-eval's `math_verify` metric
            reads it; equal forms share a key (math_answers.MathAnswerReader)
    choice  generative multiple choice (GPQA, MMLU-Pro): a letter A-J (answers.extract_choice)
    output  free text (translation): the <Output> block's text (answers.extract_output_text)
    none    answers are not read (the vote falls back to the best reward)

`answer=auto` (the default) picks the kind per request from lm-eval's task name, first
match in TASK_KINDS; a task it does not know reads as `none`, with one warning line.
"""

from __future__ import annotations

import re
from typing import Callable

from marco_eval.answers import extract_answer, extract_choice, extract_output_text

AnswerFn = Callable[[str], "str | None"]


def _number() -> AnswerFn:
    return lambda text: extract_answer(text, "flexible")


def _math() -> AnswerFn:
    from marco_eval.math_answers import MathAnswerReader  # math-verify and sympy load only when used

    return MathAnswerReader()


def _choice() -> AnswerFn:
    return extract_choice


def _output() -> AnswerFn:
    return lambda text: extract_output_text(text) or None


# kind -> a factory of fresh readers (a math reader remembers the answers it has seen);
# None: answers are not read.
READERS: dict[str, Callable[[], AnswerFn] | None] = {
    "number": _number, "math": _math, "choice": _choice, "output": _output, "none": None}
KINDS = (*READERS, "auto")

# lm-eval task name (a regular expression, matched from the start) -> the kind `auto`
# gives it. First match wins: the specific names come before the families.
TASK_KINDS: list[tuple[str, str]] = [
    (r"(minerva_math|hendrycks_math|leaderboard_math|math500|aime|amc|olympiad|math_)", "math"),
    (r"(mgsm|gsm8k|gsm_|gsm$|asdiv|svamp|multiarith|arithmetic)", "number"),
    (r"(gpqa|mmlu_pro|mmlu|arc_|commonsense_qa|agieval|bbh_cot|supergpqa|medqa)", "choice"),
    (r"(wmt|colloquial|iwslt|flores|translation)", "output"),
]


def kind_for_task(task_name: str | None) -> str | None:
    """The kind `answer=auto` gives lm-eval's task `task_name`; None when the table has none."""
    for pattern, kind in TASK_KINDS:
        if task_name and re.match(pattern, task_name):
            return kind
    return None


def answer_reader(kind: str) -> AnswerFn | None:
    """A fresh reader of one kind (one per search: see module docstring).

    Args:
        kind: one of READERS ("auto" is resolved per request first, by kind_for_task).
    Returns:
        A function text -> answer key or None; None for kind "none".
    """
    factory = READERS[kind]
    return factory() if factory is not None else None
