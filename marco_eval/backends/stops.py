"""Stop strings: the one rule both backends follow (search/policy.Continue.stop).

The rule is vLLM's (its detokenizer's stop-string check), so the two backends end a
request on the same token:

- The text searched is the completion decoded so far, never the prompt. It grows
  incrementally, and only by whole characters: a character that byte fallback splits over
  several tokens (a CJK character is often three) is added once its last byte arrives.
  The prompt's last few tokens are decoded with it only so that the first generated
  token's leading space comes out as it will in the whole text.
- After each token, a stop string is looked for only where it could end in the text that
  token added; of several, the first listed wins. The request ends on that token, which
  stays in the generation with the stop string's other tokens.

vLLM's engine applies the rule itself (`vllm_stop_args`); the transformers backend applies
it here, with one `StopText` per row: two decodes of a few tokens a step, whatever the
length of the completion or of the stop strings.
"""

from __future__ import annotations

from typing import Callable, Sequence

# Prompt tokens decoded before the first generated one, for its leading space: vLLM's
# INITIAL_INCREMENTAL_DETOKENIZATION_OFFSET, so both backends see the same first characters.
PROMPT_CONTEXT = 5
PARTIAL = "\ufffd"  # what decoding gives for the bytes of a character not yet complete


def completed_stop(text: str, added: int, stops: Sequence[str]) -> str | None:
    """The first of `stops` found in `text` ending within its last `added` characters.

    Args:
        text: the completion's text so far (or its tail, at least the longest stop string
            minus one character longer than `added`).
        added: how many characters at its end the last token added.
        stops: the request's stop strings, in their order.
    Returns:
        That stop string, or None.
    """
    for stop in stops:
        if text.find(stop, max(0, len(text) - added - len(stop) + 1)) != -1:
            return stop
    return None


class StopText:
    """One row's completion text, decoded incrementally, and its stop strings (module
    docstring): `add(token)` after every generated token says whether one was completed."""

    def __init__(self, decode: Callable[[Sequence[int]], str], stops: Sequence[str], prefix: Sequence[int]):
        """Args:
            decode: the policy's decode (special tokens skipped).
            stops: the request's stop strings.
            prefix: the request's prompt and path ids; only the last PROMPT_CONTEXT are read.
        """
        self.decode, self.stops = decode, tuple(stops)
        self.keep = max(map(len, self.stops), default=1) - 1  # characters a stop may start before a token's text
        self.ids = list(prefix[-PROMPT_CONTEXT:])
        self.read = len(self.ids)  # ids[:read] are decoded already; they give the next token its context
        self.tail = ""  # the completion's last `keep` characters

    def add(self, token: int) -> str | None:
        """The stop string `token` completes, or None.

        Args:
            token: the row's next generated token.
        Returns:
            The first stop string (in the request's order) whose text ends in what this
            token added, else None.
        """
        self.ids.append(token)
        before = self.decode(self.ids[:self.read])
        after = self.decode(self.ids)
        if len(after) <= len(before) or after.endswith(PARTIAL):
            return None  # no whole character yet: its bytes are still arriving
        added = after[len(before):]
        del self.ids[:self.read]  # what was decoded before is context enough for the next token
        self.read = len(self.ids)
        text = self.tail + added
        self.tail = text[-self.keep:] if self.keep else ""
        return completed_stop(text, len(added), self.stops)


def vllm_stop_args(stops: Sequence[str]) -> dict:
    """SamplingParams arguments under which vLLM's engine applies the rule: the stop
    strings, kept in the output like the rest of the completing token's text."""
    return {"stop": list(stops), "include_stop_str_in_output": True}
