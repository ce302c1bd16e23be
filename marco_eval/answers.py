"""Turn model output text into a normalised numeric answer (MGSM, en + zh).

This is the only place in the project that parses answers out of generations.
Standard library only, no package-relative imports, so lm-eval's
``!function`` loader can import this file on its own.

Precedence in ``extract_answer(text, mode="strict")`` (first hit wins):

1. The last ``<Output>`` block (closed or left open at the end of the text,
   case-insensitive). Inside it: the last ``\\boxed{N}``, else the last answer
   phrase ("The answer is N", "答案是 N", ...), else the last number in the block.
   A block with no number falls through to 2.
2. The last ``\\boxed{...}`` anywhere that contains a number (nested braces,
   ``\\frac``, ``\\$``, ``\\text{...}`` handled; after "=" only the right side).
3. The last answer phrase anywhere: "the (final) answer is N", "Answer: N",
   "(最终)答案是/为/： N", with optional ``$``, ``**bold**`` or ``$N$`` around N.
   The number must start within a few characters of the phrase; when the phrase's
   sentence goes on to an "=", the number after the last "=" is the answer
   ("The answer is 16 - 3 - 4 = 9" -> 9).

A marked answer (boxed or phrased) that is not a plain number -- an expression, a
tuple, a radical, a complex number: ``\\sqrt{51}``, ``3\\sqrt{13}``, ``6 - 5i``,
``(6,31,-1)`` -- reads as no answer at all, in both modes: a number reader never turns a
non-number into a number (MATH-style answers want ``answer=math``, readers.py).

``mode="flexible"`` tries strict first, then, when nothing is marked, takes the last
number in the text. All results are canonical strings from ``normalize_number``.

Free-text answers (translation) are read by ``extract_output_text``: the ``<Output>``
block's text, with the fallbacks listed there.
"""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction
from typing import Iterable

INVALID = "[invalid]"

# Full-width digits, signs and separators -> ASCII; Unicode minus -> "-".
_FULLWIDTH_TO_ASCII = str.maketrans(
    "０１２３４５６７８９－．，＋−", "0123456789-.,+-"
)
_LATEX_FRACTION_RE = re.compile(r"\\[dt]?frac\s*\{\s*([^{}]*?)\s*\}\s*\{\s*([^{}]*?)\s*\}")
_MIXED_FRACTION_RE = re.compile(r"(?<=\d)(?=\\[dt]?frac)")
_LATEX_THOUSANDS_RE = re.compile(r"(?<=\d)(?:\{,\}|\\,)(?=\d{3})")
_CURRENCY_RE = re.compile(r"\\?[$¥￥€£]")

# One number: optional minus (not a subtraction like "5-3"), integer part with
# optional "," thousands groups, optional decimals or a leading-dot decimal,
# optional "/denominator" for simple fractions.
_NUMBER_RE = re.compile(
    r"(?P<sign>(?<![0-9A-Za-z)\]}])-)?"
    r"(?P<value>(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)"
    r"(?:/(?P<denominator>\d+)(?!\d|\.\d))?"
)

_OUTPUT_OPEN_RE = re.compile(r"<output>", re.IGNORECASE)
_OUTPUT_CLOSE_RE = re.compile(r"</output>", re.IGNORECASE)
_BOXED_RE = re.compile(r"\\boxed\s*\{")

_ANSWER_PHRASE_RE = re.compile(
    r"(?:\b(?:the\s+)?(?:final\s+)?answer(?:\*\*)?\s*(?:is\b|[:：])"
    r"|(?:最终)?答案\s*(?:是|为|為|[:：]))"
    r"[\s*:：]*",
    re.IGNORECASE,
)
# How far after an answer phrase the number may start ("is **$18**" is fine,
# "is not obvious; 16 - 3 ..." is not an answer).
_PHRASE_MAX_GAP = 16
_MAX_FRACTION_DECIMALS = 6


def _clean(text: str) -> str:
    """ASCII-fy digits and strip LaTeX/currency decoration around numbers."""
    text = text.translate(_FULLWIDTH_TO_ASCII)
    text = _MIXED_FRACTION_RE.sub(" ", text)  # "1\\frac{4}{5}" stays two numbers, not 14/5
    text = _LATEX_FRACTION_RE.sub(r"\1/\2", text)
    text = _LATEX_THOUSANDS_RE.sub(",", text)
    return _CURRENCY_RE.sub("", text)


def _canonical_decimal(value: Decimal) -> str:
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


def _canonical_fraction(value: Fraction) -> str:
    """Short exact decimal when there is one ("3/4" -> "0.75"), else "p/q"."""
    denominator, twos, fives = value.denominator, 0, 0
    while denominator % 2 == 0:
        denominator, twos = denominator // 2, twos + 1
    while denominator % 5 == 0:
        denominator, fives = denominator // 5, fives + 1
    if denominator == 1 and max(twos, fives) <= _MAX_FRACTION_DECIMALS:
        return _canonical_decimal(Decimal(value.numerator) / Decimal(value.denominator))
    return f"{value.numerator}/{value.denominator}"


def _canonical_match(match: re.Match) -> str:
    value = Decimal(match["value"].replace(",", ""))
    if match["sign"]:
        value = -value
    denominator = match["denominator"]
    if denominator is None:
        return _canonical_decimal(value)
    if int(denominator) == 0:
        return match.group(0).replace(",", "")
    return _canonical_fraction(Fraction(value) / int(denominator))


def normalize_number(s: str) -> str | None:
    """Canonical string for the first number in ``s``; None if there is none.

    "$2,125" -> "2125", "１８" -> "18", "18.00 dollars" -> "18", "0.50" -> "0.5",
    ".5" -> "0.5", "40%" -> "40", "3/4" -> "0.75", "1/3" -> "1/3".
    """
    if s is None:
        return None
    match = _NUMBER_RE.search(_clean(str(s)))
    return _canonical_match(match) if match else None


def _last_number(text: str) -> str | None:
    matches = list(_NUMBER_RE.finditer(_clean(text)))
    return _canonical_match(matches[-1]) if matches else None


def _last_plain_number(block: str) -> str | None:
    """The last number of an <Output> block (a marked answer); NOT_A_NUMBER when it is
    part of an expression ("<Output>3\\sqrt{13}</Output>")."""
    block = _DECORATION_RE.sub(" ", _clean(block))
    matches = list(_NUMBER_RE.finditer(block))
    if not matches:
        return None
    last = matches[-1]
    if _EXPRESSION_END_RE.search(block, 0, last.start()) or _EXPRESSION_TAIL_RE.match(block, last.end()):
        return NOT_A_NUMBER
    return _canonical_match(last)


def _boxed_contents(text: str) -> list[str]:
    """Contents of every ``\\boxed{...}``, braces balanced; unclosed runs to the end."""
    contents = []
    for opening in _BOXED_RE.finditer(text):
        depth, start = 1, opening.end()
        for position in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[position], 0)
            if depth == 0:
                contents.append(text[start:position])
                break
        else:
            contents.append(text[start:])
    return contents


# A marked answer that is not a number. Distinct from None (nothing marked), so that a
# model's "\boxed{\sqrt{51}}" never falls through to "the last number in the text".
NOT_A_NUMBER = "<not a number>"
# Decoration that may surround a number without making it something else.
_DECORATION_RE = re.compile(r"\\(?:text|mathrm|textbf|mathbf)\s*\{[^{}]*\}|\\[,;:! %]|\^\s*\{?\\circ\}?|\\(?:left|right)\b")
# Right before the number: a LaTeX command or a power/subscript means it is part of an
# expression ("\sqrt{51}", "x^3 + 3x - 6", "-\pi/6").
_EXPRESSION_HEAD_RE = re.compile(r"\\[A-Za-z]|[\^_]|[A-Za-z]\s*[-+*/]")
# Right after it: another command, an operator with an operand, a glued one-letter symbol
# (5i, 2x) or a comma and another number (a tuple).
_EXPRESSION_TAIL_RE = re.compile(
    r"\s*\\[A-Za-z]|\s*[-+*/^_×÷·]\s*[\w\\(]|\s+\d+/\d|[A-Za-z](?![A-Za-z])|\s*,\s*(?:-?\d|\\[A-Za-z])|[\^_]")
# The same, ending right where the number starts (a block's last number: "\\sqrt{51}").
_EXPRESSION_END_RE = re.compile(
    r"(?:\\[A-Za-z]+\s*\{?|[\^_]\s*\{?|[A-Za-z]\s*[-+*/^]\s*|\}\s*\{\s*|\d\s*,\s*)$")
_SENTENCE_END_RE = re.compile(r"\.(?=\s|$)|[。；;\n]")


def _number_at_start(span: str, max_gap: int | None = None) -> str | None:
    """The number that ``span`` (a boxed content, or what follows an answer phrase) gives:
    its canonical string, NOT_A_NUMBER when the first number is part of an expression,
    None when no number starts within ``max_gap`` characters (None: anywhere)."""
    span = _DECORATION_RE.sub(" ", _clean(span))
    match = _NUMBER_RE.search(span)
    if match is None or (max_gap is not None and match.start() > max_gap):
        return None
    equals = span.rfind("=")
    if equals > match.start():  # "16 - 3 - 4 = 9": the value after the last "="
        return _number_at_start(span[equals + 1:], None)
    if _EXPRESSION_HEAD_RE.search(span[:match.start()]) or _EXPRESSION_TAIL_RE.match(span, match.end()):
        return NOT_A_NUMBER
    return _canonical_match(match)


_EQUATION_LHS_RE = re.compile(r"[A-Za-z].*[-+*/^]|[-+*/^].*[A-Za-z]")


def _last_boxed_answer(text: str) -> str | None:
    for content in reversed(_boxed_contents(text)):
        left, equals, right = content.rpartition("=")
        if equals and _EQUATION_LHS_RE.search(left):  # "5x - 7y + 4 = 0": an equation, not "x = 12"
            return NOT_A_NUMBER
        answer = _number_at_start(right)
        if answer is not None:
            return answer
    return None


def _last_phrase_answer(text: str) -> str | None:
    for phrase in reversed(list(_ANSWER_PHRASE_RE.finditer(text))):
        sentence = _SENTENCE_END_RE.split(text[phrase.end():], maxsplit=1)[0]
        answer = _number_at_start(sentence, _PHRASE_MAX_GAP)
        if answer is not None:
            return answer
    return None


def _marked_answer(text: str) -> str | None:
    """A boxed answer, else an answer phrase, in ``text`` (NOT_A_NUMBER: marked, not a number)."""
    return _last_boxed_answer(text) or _last_phrase_answer(text)


def _last_output_block(text: str) -> str | None:
    openings = list(_OUTPUT_OPEN_RE.finditer(text))
    if not openings:
        return None
    block = text[openings[-1].end():]
    closing = _OUTPUT_CLOSE_RE.search(block)
    return block[: closing.start()] if closing else block


def extract_answer(text: str, mode: str = "flexible") -> str | None:
    """Normalised numeric answer from a model generation, or None.

    See the module docstring for the precedence rules of both modes.
    """
    if mode not in ("strict", "flexible"):
        raise ValueError(f"mode must be 'strict' or 'flexible', got {mode!r}")
    if not text:
        return None
    text = text.translate(_FULLWIDTH_TO_ASCII)
    output_block = _last_output_block(text)
    if output_block is not None:
        answer = _marked_answer(output_block) or _last_plain_number(output_block)
        if answer is not None:
            return None if answer == NOT_A_NUMBER else answer
    answer = _marked_answer(text)
    if answer is None and mode == "flexible":
        answer = _last_number(text)
    return None if answer == NOT_A_NUMBER else answer


def number_stand_in(text: str) -> str:
    """A short text that ``extract_answer`` reads exactly as it reads ``text``, in both modes.

    A request store keeps it in place of a completion that may not be committed (a model
    restating an MGSM question quotes test data), so a run resumed from that store scores
    every finished problem exactly as before. Strict mode found something: flexible finds
    the same (it tries strict first), and a marked Output block carries it. Only flexible
    found one: the bare number, which strict (no marker) reads as nothing. Neither: "".
    """
    strict = extract_answer(text, "strict")
    if strict is not None:
        return f"<Output>{strict}</Output>"
    return extract_answer(text, "flexible") or ""


def answers_match(pred: str | None, gold: str | int | float) -> bool:
    """True when ``pred`` and ``gold`` are the same number ("2,125" == "2125")."""
    if pred is None or gold is None:
        return False
    pred_number, gold_number = normalize_number(str(pred)), normalize_number(str(gold))
    if pred_number is None or gold_number is None:
        return False
    return Fraction(pred_number) == Fraction(gold_number)


# --- lm-eval glue: custom filter functions, ``filter_fn(resps, docs)`` ---------

def _filter(resps: Iterable[Iterable[str]], mode: str) -> list[list[str]]:
    return [
        [extract_answer(response or "", mode) or INVALID for response in doc_responses]
        for doc_responses in resps
    ]


def strict_filter(resps: Iterable[Iterable[str]], docs: list[dict]) -> list[list[str]]:
    """Per-doc lists of responses -> same shape of strict answers or "[invalid]"."""
    return _filter(resps, "strict")


def flexible_filter(resps: Iterable[Iterable[str]], docs: list[dict]) -> list[list[str]]:
    """Per-doc lists of responses -> same shape of flexible answers or "[invalid]"."""
    return _filter(resps, "flexible")


# --- free-text answers (translation): the text the model marked as its output ---------

_THOUGHT_OPEN_RE = re.compile(r"<thought>", re.IGNORECASE)
_THOUGHT_CLOSE_RE = re.compile(r"</thought>", re.IGNORECASE)
_ANY_TAG_RE = re.compile(r"</?(?:thought|output)>", re.IGNORECASE)
# A label a model puts before the answer line ("Translation: ...", "译文：...").
_OUTPUT_LABEL_RE = re.compile(
    r"^(?:\*\*)?(?:final\s+)?(?:translation|english(?:\s+translation)?|output|answer|译文|翻译)(?:\*\*)?\s*[:：]\s*(?:\*\*)?",
    re.IGNORECASE,
)
_WRAPPING_QUOTES = {'"': '"', "“": "”", "'": "'", "‘": "’", "「": "」"}


def _tidy_output(text: str) -> str:
    """One line, no tags, no label, no quotes wrapped around the whole answer."""
    text = " ".join(_ANY_TAG_RE.sub(" ", text).split())
    text = _OUTPUT_LABEL_RE.sub("", text).strip()
    close = _WRAPPING_QUOTES.get(text[:1])
    # strip only a pair that wraps everything: '"Hi," he said, "bye."' keeps its quotes
    if close and len(text) >= 2 and text.endswith(close) and text[1:-1].count(close) == 0:
        text = text[1:-1].strip()
    return text


def extract_output_text(text: str) -> str:
    """The answer text of a Thought/Output completion; "" when there is none.

    1. The last ``<Output>`` block (closed, or left open at the end) when it is not empty.
    2. Else, after the last ``</Thought>``: the last non-empty line (a model that dropped
       the Output tags usually writes a lead-in line, then the answer).
    3. Else, a ``<Thought>`` that never closed held only reasoning: "".
    4. Else (no tags at all): the whole text.
    The result is one line: tags and an "Output:"/"Translation:" label removed,
    whitespace collapsed, a pair of quotes around the whole answer dropped.
    """
    if not text:
        return ""
    block = _last_output_block(text)
    if block is not None and block.strip():
        return _tidy_output(block)
    closings = list(_THOUGHT_CLOSE_RE.finditer(text))
    if closings:
        after = _OUTPUT_OPEN_RE.sub("", text[closings[-1].end():])
        lines = [line for line in after.splitlines() if _tidy_output(line)]
        return _tidy_output(lines[-1]) if lines else ""
    if _THOUGHT_OPEN_RE.search(text):
        return ""
    return _tidy_output(text)


def output_text_filter(resps: Iterable[Iterable[str]], docs: list[dict]) -> list[list[str]]:
    """lm-eval filter: per-doc lists of responses -> the same shape of output texts."""
    return [[extract_output_text(response or "") for response in doc_responses] for doc_responses in resps]


# --- multiple choice: a letter A-J ------------------------------------------------------

_LETTER = r"\(?\s*(?:\\text\{\s*)?\(?([A-J])\)?(?:\s*\})?\)?(?=\s*(?:$|[).,:;!?*\]}$。，、]|\n|\s+[-–—]))"
_CHOICE_PHRASE_RE = re.compile(
    r"(?:\b(?:the\s+)?(?:correct\s+|best\s+|final\s+|right\s+)?(?:answer|option|choice)(?:\*\*)?"
    r"(?:\s+(?:is|would\s+be|should\s+be))?\s*(?:[:：]|\bis\b)?"
    r"|(?:最终)?答案\s*(?:是|为|為|[:：])?|选(?:项)?)"
    r"[\s*:：$]*" + _LETTER,
    re.IGNORECASE,
)
_BOXED_LETTER_RE = re.compile(r"^\s*(?:\\text\{\s*)?\(?([A-J])\)?(?:\s*\})?\s*$")
_BARE_LETTER_RE = re.compile(r"\(([A-J])\)")


def extract_choice(text: str) -> str | None:
    """The letter (A-J) a multiple-choice completion answers, or None.

    First hit wins: the last <Output> block (a letter alone, or a phrase in it); the last
    ``\\boxed{B}`` / ``\\boxed{\\text{(B)}}``; the last answer phrase ("The answer is (B)",
    "Answer: B", "the correct option is B", "答案是 B", "选 B"); then the last "(B)" in the
    text. Letters are upper-case only: "the answer is a prime" is not A.
    """
    if not text:
        return None
    text = text.translate(_FULLWIDTH_TO_ASCII)
    block = _last_output_block(text)
    if block is not None:
        alone = _BOXED_LETTER_RE.match(_tidy_output(block) or "")
        found = alone.group(1) if alone else _choice_in(block)
        if found is not None:
            return found
    return _choice_in(text)


def _choice_in(text: str) -> str | None:
    for content in reversed(_boxed_contents(text)):
        if match := _BOXED_LETTER_RE.match(content):
            return match.group(1)
    phrases = [m.group(1) for m in _CHOICE_PHRASE_RE.finditer(text) if m.group(1).isupper()]
    if phrases:
        return phrases[-1]
    bare = [m.group(1) for m in _BARE_LETTER_RE.finditer(text)]
    return bare[-1] if bare else None
