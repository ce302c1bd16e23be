"""The answer readers (marco_eval/readers.py): each kind, `auto`'s task table, and votes
that group what the task's scorer calls equal."""

import threading

import pytest

from marco_eval.answers import extract_answer, extract_choice
from marco_eval.math_answers import MathAnswerReader, math_answers_match
from marco_eval.readers import KINDS, READERS, answer_reader, kind_for_task
from marco_eval.search.final_answer import vote


# --- number: the phrase bug, and no non-number read as a number --------------------------
@pytest.mark.parametrize("text, expected", [
    ("The answer is 16 - 3 - 4 = 9", "9"),
    ("The answer is 16 - 3 - 4 = 9 eggs. Then she sells 9 * 2 = 18.", "9"),
    ("So the answer is 5 + 7 = 12.", "12"),
    ("答案是 16 - 3 - 4 = 9。", "9"),
    ("The answer is 18.", "18"),
])
def test_the_answer_phrase_reads_the_value_after_its_last_equals(text, expected):
    assert extract_answer(text, "strict") == expected == extract_answer(text, "flexible")


# MATH-500 gold answers (as \boxed{}) that the number reader used to read as another value.
NOT_NUMBERS = [r"\sqrt{51}", r"3\sqrt{13}", "6 - 5i", r"-\frac{\pi}{6}", "(6,31,-1)", "x^3+3x-6",
               r"\frac{3\sqrt{3}}{4}", r"\left( 3, \frac{\pi}{2} \right)", r"2\pi", "5i"]


@pytest.mark.parametrize("answer", NOT_NUMBERS)
@pytest.mark.parametrize("wrap", [r"\boxed{%s}", "<Output>%s</Output>", "The answer is %s."])
def test_a_number_reader_never_turns_a_non_number_into_a_number(answer, wrap):
    text = "We work out 4 + 5 = 9 first. " + wrap % answer
    assert extract_answer(text, "strict") is None and extract_answer(text, "flexible") is None


@pytest.mark.parametrize("text, expected", [
    (r"\boxed{\frac{1}{2}}", "0.5"), (r"\boxed{1{,}250}", "1250"), (r"\boxed{90^\circ}", "90"),
    ("<Output>In total, 18 dollars</Output>", "18"), ("<Output>-3</Output>", "-3"),
])
def test_plain_numbers_still_read(text, expected):
    assert extract_answer(text, "strict") == expected


# --- math ---------------------------------------------------------------------------------
def keys(texts):
    read = answer_reader("math")
    return [read(t) for t in texts]


@pytest.mark.parametrize("forms", [
    [r"$\frac{1}{2}$", "The answer is $0.5$.", r"\boxed{\dfrac12}"],
    [r"\boxed{3\sqrt{13}}", r"$\sqrt{117}$"],
    [r"$\left( 3, \frac{\pi}{2} \right)$", r"\boxed{(3,\pi/2)}"],
    [r"\boxed{x^2 - 1}", r"\boxed{(x-1)(x+1)}"],  # printing differs: verify merges them
])
def test_math_forms_the_scorer_calls_equal_share_one_key(forms):
    found = keys(forms)
    assert found[0] is not None and len(set(found)) == 1, found


@pytest.mark.parametrize("a, b", [(r"\boxed{\sqrt{51}}", r"\boxed{51}"), (r"\boxed{6 - 5i}", r"\boxed{6}"),
                                  (r"\boxed{-\frac{\pi}{6}}", r"\boxed{6}"), (r"\boxed{(6,31,-1)}", r"\boxed{6}")])
def test_math_keeps_different_answers_apart(a, b):
    first, second = keys([a, b])
    assert first is not None and second is not None and first != second


def test_a_vote_over_sqrt51_51_sqrt51_picks_sqrt51():
    read = answer_reader("math")

    class Rollout:
        def __init__(self, text):
            self.answer, self.reward = read(text), 0.5

    rollouts = [Rollout(r"so $\boxed{\sqrt{51}}$"), Rollout(r"$\boxed{51}$"), Rollout(r"it is $\sqrt{51}$")]
    winner = vote(None, rollouts)
    assert math_answers_match(winner.answer, r"\sqrt{51}") and not math_answers_match(winner.answer, "51")


def test_math_reads_no_answer_as_none():
    assert keys(["I cannot tell."]) == [None]


def test_math_keys_read_back_against_the_gold():
    (key,) = keys([r"Hence the answer is $\boxed{\frac{3\sqrt{3}}{4}}$."])
    assert math_answers_match(key, r"\frac{3\sqrt{3}}{4}") and not math_answers_match(key, "3")


def test_math_reads_off_the_main_thread():
    """math-verify's own timeouts use signal.alarm (main thread only); a worker thread's
    reads go through the watchdog instead and still parse."""
    out = []
    worker = threading.Thread(target=lambda: out.append(keys([r"\boxed{\frac{1}{2}}", "$0.5$"])))
    worker.start()
    worker.join(30)
    assert out and out[0][0] is not None and len(set(out[0])) == 1


# --- choice -------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("... 12 apples ... The answer is B", "B"), ("The answer is (C).", "C"), ("Answer: D", "D"),
    ("**Answer:** (A)", "A"), ("the correct option is E.", "E"), ("答案是 B", "B"), ("答案：C", "C"),
    ("我选 D。", "D"), (r"\boxed{B}", "B"), (r"$\boxed{\text{(C)}}$", "C"), ("<Output>B</Output>", "B"),
    ("<Output>The answer is (J)</Output>", "J"), ("So (A) is wrong and (C) fits.", "C"),
    ("the answer is a prime", None), ("nothing here", None),
])
def test_choice_reads_a_letter_from_the_usual_phrasings(text, expected):
    assert extract_choice(text) == expected


# --- the table and auto ---------------------------------------------------------------------
@pytest.mark.parametrize("task, kind", [
    ("mgsm_en", "number"), ("mgsm_native_cot_zh", "number"), ("gsm8k_cot_self_consistency", "number"),
    ("minerva_math500", "math"), ("math500", "math"), ("leaderboard_math_hard", "math"),
    ("aime24", "math"), ("aime25", "math"), ("gpqa_diamond_cot_zeroshot", "choice"), ("mmlu_pro", "choice"),
    ("wmt22_zh_en", "output"), ("colloquial_zh_en", "output"), ("lambada_openai", None), (None, None),
])
def test_auto_picks_the_kind_from_the_task_name(task, kind):
    assert kind_for_task(task) == kind


def test_every_kind_has_a_reader_and_a_fresh_one_each_call():
    assert set(KINDS) == {*READERS, "auto"}
    assert answer_reader("none") is None
    assert answer_reader("math") is not answer_reader("math")  # one per search: it remembers answers
    assert answer_reader("number")("<Output>3</Output>") == "3"
    assert answer_reader("output")("<Output>Hello there.</Output>") == "Hello there."
