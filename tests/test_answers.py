"""Tests for marco_eval.answers: number normalisation and answer extraction."""

import pytest

from marco_eval.answers import (
    answers_match,
    extract_answer,
    flexible_filter,
    normalize_number,
    strict_filter,
)

# --- normalize_number -------------------------------------------------------

NORMALIZE_CASES = [
    ("18", "18"),
    ("18.00", "18"),
    ("0.50", "0.5"),
    (".5", "0.5"),
    ("-3", "-3"),
    ("2,125", "2125"),
    ("1,000,000", "1000000"),
    ("2，125", "2125"),  # full-width comma as thousands separator
    ("１８", "18"),  # full-width digits
    ("－５", "-5"),  # full-width minus
    ("３．５", "3.5"),  # full-width decimal point
    ("$18", "18"),
    ("¥1,080", "1080"),
    ("￥30", "30"),
    ("€2.50", "2.5"),
    ("£7", "7"),
    ("-$18", "-18"),
    ("18 dollars", "18"),
    ("5 个", "5"),
    ("3元", "3"),
    ("40%", "40"),
    ("3/4", "0.75"),
    ("1/3", "1/3"),
    ("6/8", "0.75"),
    ("-1/2", "-0.5"),
    ("\\frac{3}{4}", "0.75"),
    ("1{,}080", "1080"),
    ("1800", "1800"),  # no exponent noise from Decimal.normalize
    ("0.000", "0"),
    ("-0", "0"),
    ("100.10", "100.1"),
    ("3.14.", "3.14"),
    ("18.", "18"),
    ("no digits here", None),
    ("", None),
]


@pytest.mark.parametrize("raw, expected", NORMALIZE_CASES)
def test_normalize_number(raw, expected):
    assert normalize_number(raw) == expected


# --- extract_answer: (text, strict, flexible) -----------------------------------

EXTRACT_CASES = {
    # <Output> blocks
    "output_english": (
        "<Thought>\n16 - 3 - 4 = 9 eggs, 9 * 2 = 18.\n</Thought>\n"
        "<Output>\nJanet makes $18 every day at the farmers' market.\n</Output>",
        "18", "18",
    ),
    "output_chinese": (
        "<Thought>\n16 - 3 - 4 = 9，9 × 2 = 18\n</Thought>\n<Output>\n珍妮特每天赚 18 美元。\n</Output>",
        "18", "18",
    ),
    "output_unclosed_at_end": (
        "<Thought>Let me compute 3 + 4 = 7.</Thought>\n<Output>\nThe total is 7 apples",
        "7", "7",
    ),
    "output_lowercase_tag": ("<output>She has 12 marbles.</output>", "12", "12"),
    "output_contradicts_thought": (
        "<Thought>\nSo the answer is 20.\nWait, I double counted. It is 15.\n</Thought>\n"
        "<Output>\nThe answer is 15.\n</Output>",
        "15", "15",
    ),
    "output_wins_over_thought_phrase": (
        "<Thought>The answer is 42.</Thought><Output>\n一共需要 40 分钟。\n</Output>",
        "40", "40",
    ),
    "output_phrase_beats_last_number": (
        "<Output>\nThe answer is 18. That is 9 eggs times 2 dollars.\n</Output>",
        "18", "18",
    ),
    "output_boxed_inside": (
        "<Output>\nShe pays 3 times, so $\\boxed{45}$ dollars in 2 weeks.\n</Output>",
        "45", "45",
    ),
    "last_output_block_wins": (
        "<Output>Draft: 10</Output>\n<Thought>Recheck.</Thought>\n<Output>Final: 12</Output>",
        "12", "12",
    ),
    "empty_output_falls_back_to_phrase": (
        "<Thought>The answer is 8.</Thought><Output>\n</Output>", "8", "8",
    ),
    "output_percent": ("<Output>The price went up by 40%.</Output>", "40", "40"),
    # \boxed
    "boxed_plain": ("So the final result is \\boxed{18}.", "18", "18"),
    "boxed_dollar": ("Total: \\boxed{\\$18}", "18", "18"),
    "boxed_text_unit": ("Hence \\boxed{18 \\text{ dollars}}.", "18", "18"),
    "boxed_frac": ("The fraction is \\boxed{\\frac{3}{4}}", "0.75", "0.75"),
    "boxed_latex_thousands": ("\\boxed{1{,}080}", "1080", "1080"),
    "boxed_equation": ("\\boxed{x = 12}", "12", "12"),
    "last_boxed_wins": ("First \\boxed{5}, corrected: \\boxed{6}. Check 7.", "6", "6"),
    "boxed_beats_phrase": ("The answer is 5. Actually \\boxed{7}", "7", "7"),
    # English answer phrases
    "answer_is_period": ("16 - 3 - 4 = 9. 9 * 2 = 18. The answer is 18.", "18", "18"),
    "answer_is_dollar_thousands": ("So she earns 1080 in total. The answer is $1,080.", "1080", "1080"),
    "answer_bold": ("Adding them up gives 42.\n\n**The answer is 42**", "42", "42"),
    "final_answer_is": ("Therefore, the final answer is 96 cups. Good.", "96", "96"),
    "answer_colon": ("Work: 5 + 7 = 12\nAnswer: 12", "12", "12"),
    "bold_answer_label_newline": ("**Answer:**\n\n 250", "250", "250"),
    "answer_latex_dollars": ("The answer is $18$.", "18", "18"),
    "multiple_phrases_last_wins": (
        "The answer is 10. Hmm, I forgot the tax. The answer is 12. Done in 3 steps.",
        "12", "12",
    ),
    "answer_negative": ("The temperature drops to -3 degrees. The answer is -3.", "-3", "-3"),
    "answer_decimal_trailing_zero": ("Each costs 2.50. The answer is 2.50", "2.5", "2.5"),
    "answer_millions": ("The answer is 1,234,567.", "1234567", "1234567"),
    "answer_with_unit": ("The answer is 18 dollars.", "18", "18"),
    "answer_pi_like_number_period": ("The answer is 3.14.", "3.14", "3.14"),
    "phrase_without_nearby_number_skipped": (
        "The answer is not obvious, so let us compute 16 - 3 - 4 = 9 carefully.",
        None, "9",
    ),
    # Chinese answer phrases and full-width digits
    "zh_answer_is": ("所以她每天赚 18 美元。答案是 18。", "18", "18"),
    "zh_answer_wei_colon": ("计算：5 + 13 = 18\n答案为：18", "18", "18"),
    "zh_answer_colon": ("答案：7个苹果", "7", "7"),
    "zh_final_answer": ("最终答案是 64", "64", "64"),
    "zh_fullwidth_digits": ("答案是１８", "18", "18"),
    "zh_unit_ge": ("答案是5个", "5", "5"),
    "zh_answer_thousands": ("答案是2，125元", "2125", "2125"),
    "zh_embedded_answer_phrase": ("所以答案是36。", "36", "36"),
    # Unmarked outputs: flexible falls back to the last number, strict gives up
    "unmarked_sentence_period": ("Janet sells 9 eggs and makes 18.", None, "18"),
    "unmarked_trailing_unit": ("She needs 5个 boxes, so she pays 18 dollars", None, "18"),
    "unmarked_decimal": ("Each one is 0.50 so 5 of them cost 2.50", None, "2.5"),
    "unmarked_negative": ("The balance ends at -40", None, "-40"),
    "unmarked_subtraction_not_negative": ("We compute 20-5", None, "5"),
    "unmarked_thousands": ("Total population: 1,234,567", None, "1234567"),
    "unmarked_pi_period": ("It is roughly 3.14.", None, "3.14"),
    "rambling_with_numbers": (
        "Let me think. There are 3 cats and 4 dogs. Hmm, maybe I should reconsider what",
        None, "4",
    ),
    # Failure shapes
    "empty": ("", None, None),
    "no_number": ("I cannot solve this problem.", None, None),
    "rambling_never_answers": (
        "Let me think about this carefully. First, we need to understand the question. "
        "Then we need to reconsider. Hmm, this is tricky, let me think again...",
        None, None,
    ),
    "output_block_without_number": (
        "<Output>\nI am not sure.\n</Output>", None, None,
    ),
}


@pytest.mark.parametrize(
    "text, expected", [(case[0], case[1]) for case in EXTRACT_CASES.values()],
    ids=list(EXTRACT_CASES),
)
def test_extract_answer_strict(text, expected):
    assert extract_answer(text, mode="strict") == expected


@pytest.mark.parametrize(
    "text, expected", [(case[0], case[2]) for case in EXTRACT_CASES.values()],
    ids=list(EXTRACT_CASES),
)
def test_extract_answer_flexible(text, expected):
    assert extract_answer(text, mode="flexible") == expected


def test_extract_answer_default_mode_is_flexible():
    assert extract_answer("She ends with 7 apples") == "7"


def test_extract_answer_rejects_unknown_mode():
    with pytest.raises(ValueError):
        extract_answer("The answer is 3.", mode="lenient")


# --- answers_match ------------------------------------------------------------

@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("2125", "2,125", True),
        ("2,125", "2125", True),
        ("18", 18, True),
        ("18", "18.0", True),
        ("18.0", 18.0, True),
        ("0.75", "3/4", True),
        ("1/3", "2/6", True),
        ("-3", -3, True),
        ("１８", 18, True),
        ("18", 19, False),
        ("2125", "21,250", False),
        ("-3", 3, False),
        (None, 18, False),
        ("[invalid]", 18, False),
        ("", "0", False),
    ],
)
def test_answers_match(pred, gold, expected):
    assert answers_match(pred, gold) is expected


# --- lm-eval custom filter functions ---------------------------------------------

RESPONSES = [
    ["<Output>\nJanet makes $18.\n</Output>", "I don't know"],
    ["She has 7 left.", "The answer is 1,080."],
]
DOCS = [{"question": "q1", "answer_number": 18}, {"question": "q2", "answer_number": 7}]


def test_strict_filter_keeps_shape_and_marks_invalid():
    assert strict_filter(RESPONSES, DOCS) == [["18", "[invalid]"], ["[invalid]", "1080"]]


def test_flexible_filter_falls_back_to_last_number():
    assert flexible_filter(RESPONSES, DOCS) == [["18", "[invalid]"], ["7", "1080"]]


def test_filters_accept_iterables_and_empty_responses():
    resps = iter([("",), ()])
    assert flexible_filter(resps, DOCS) == [["[invalid]"], []]


@pytest.mark.parametrize("text", [
    "<Output>18</Output>", "so 5 - 2 = 3\n<Output>\nJanet makes $18.\n</Output> then 4", "no number at all",
    "The answer is **-3.5**", "\\boxed{\\frac{3}{4}} and later 9", "答案是 ３６", "<Output></Output> 12 and 13",
    "1,250 eggs, the final answer: 2,125", "", "<Output>about twenty</Output>", "-7 degrees"])
def test_the_stand_in_reads_as_the_same_answer_in_both_modes(text):
    from marco_eval.answers import number_stand_in

    stand_in = number_stand_in(text)
    assert all(extract_answer(stand_in, m) == extract_answer(text, m) for m in ("strict", "flexible"))
    assert len(stand_in) <= 40  # a number and its marker, nothing of the text
