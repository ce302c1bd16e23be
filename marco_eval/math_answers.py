"""Math answers (MATH-500, AIME, Minerva): read as lm-eval's `math_verify` metric reads them.

lm-eval's minerva_math tasks score a completion with HF math-verify: `verify(parse(gold),
parse(completion))`, where `parse` finds the completion's final answer itself (the last
``\\boxed{}``, else a "final answer is" phrase, else the last LaTeX or plain expression) and
turns it into sympy. A vote must group rollouts the way that scorer would call them equal,
so this reader calls the same `parse` on the same whole text, then keys each answer:

1. its canonical print: evaluated (``\\sqrt{117}`` -> ``3*sqrt(13)``), exact decimals as
   fractions (``0.5`` -> ``1/2``), sets sorted; forms that print alike share a key;
2. where printing cannot decide (``x^2-1`` and ``(x-1)(x+1)``, ``x = 5`` and ``5``), an
   answer that math-verify's `verify` calls equal to an earlier one takes that one's key.

So a reader remembers the answers it has read: make one per search (`MathAnswerReader()`).
The key shown is the LaTeX that math-verify extracted from the first rollout of its group
(``\\sqrt{51}``), which `parse(f"${key}$")` reads back.

Timeouts: math-verify bounds `parse` and `verify` with `signal.alarm`, which works only on
the main thread. There we pass its own timeouts; on any other thread (a replica's worker,
a test runner's) the call runs in a daemon thread that is waited on for the same time; a
call past it counts as no answer (it is left to finish in the background).
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import sympy
from math_verify import parse, verify

TIMEOUT_SECONDS = 5  # math-verify's own default for parse and verify


def _bounded(fn: Callable, timeout_keyword: str, *args, failed: Any) -> Any:
    """fn(*args) with math-verify's timeout on the main thread, a watchdog thread elsewhere."""
    if threading.current_thread() is threading.main_thread():
        return fn(*args, **{timeout_keyword: TIMEOUT_SECONDS})
    box: list = []
    worker = threading.Thread(target=lambda: box.append(fn(*args, **{timeout_keyword: None})), daemon=True)
    worker.start()
    worker.join(TIMEOUT_SECONDS)
    return box[0] if box else failed


def parse_answer(text: str) -> list:
    """math-verify's `parse` of a whole completion: [sympy object, extracted string] or []."""
    return _bounded(parse, "parsing_timeout", text, failed=[])


def math_equal(gold: list, target: list) -> bool:
    """math-verify's `verify` of two parsed answers (the order the metric uses: gold first)."""
    return bool(gold) and bool(target) and bool(_bounded(verify, "timeout_seconds", gold, target, failed=False))


def canonical_form(value) -> str:
    """A print of a parsed answer on which equal forms agree where sympy can tell cheaply."""
    if isinstance(value, str):
        return value.strip()
    try:
        value = value.doit()  # math-verify parses unevaluated: sqrt(117) stays sqrt(117)
    except (TypeError, ValueError, AttributeError, NotImplementedError):
        pass
    floats = value.atoms(sympy.Float) if hasattr(value, "atoms") else ()
    if floats:
        value = value.xreplace({f: sympy.nsimplify(f, rational=True) for f in floats})
    return sympy.sstr(value, order="lex")


def _key_of(parsed: list, canonical: str) -> str:
    extracted = next((p for p in reversed(parsed) if isinstance(p, str) and p.strip()), None)
    return extracted.strip() if extracted is not None else canonical


class MathAnswerReader:
    """text -> the answer key of its final math answer, or None when math-verify finds none.

    Keys are shared by answers that print alike or that `verify` calls equal to an earlier
    answer of the same reader (module docstring); one reader per search."""

    def __init__(self):
        self._groups: list[tuple[str, str, list]] = []  # (key, canonical form, parsed), first seen first

    def __call__(self, text: str) -> str | None:
        parsed = parse_answer(text or "")
        if not parsed:
            return None
        canonical = canonical_form(parsed[0])
        for key, form, _ in self._groups:
            if form == canonical:
                return key
        for key, _, earlier in self._groups:
            if math_equal(earlier, parsed):
                return key
        key = _key_of(parsed, canonical)
        self._groups.append((key, canonical, parsed))
        return key


def math_answers_match(pred: str | None, gold: str) -> bool:
    """True when an answer key (or any text holding an answer) and a gold answer are equal
    to math-verify; a bare gold like ``\\frac{1}{2}`` is read as LaTeX."""
    if pred is None or gold is None:
        return False
    return math_equal(_as_latex(str(gold)), _as_latex(str(pred)))


def _as_latex(text: str) -> list:
    """A completion is parsed as it is; a bare answer (no ``$``, no ``\\boxed``) as the math
    inside ``$...$``: unwrapped, math-verify reads ``3\\sqrt{13}`` as 3."""
    if "$" in text or "\\boxed" in text:
        return parse_answer(text)
    return parse_answer(f"${text}$") or parse_answer(text)
