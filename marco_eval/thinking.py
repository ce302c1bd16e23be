"""lm-eval's thinking conventions: what part of a thinking model's completion is its answer.

lm-eval's hf and vllm models (0.4.12+) take `think_end_token` (a string, or a token id
given as digits) and return only what follows its last occurrence, left-stripped; a
trace that never closes is returned whole. Task stop strings (`until`) then apply to that
response, not to the thinking: a few-shot delimiter like "\\n\\n" appears inside any trace,
so lm-eval's vllm model stops generation on EOS only and cuts at `until` afterwards. The
search does the same: with `think_end_token` set it steps through the thinking with no
task stop string, and this module cuts the response out of every finished rollout, the
text the answer reader reads and the text handed back to lm-eval alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence


@dataclass(frozen=True)
class ThinkingSplit:
    """Cuts the response out of a completion (module docstring).

    `token` is the think-end text; `token_id` is set when it was given as a token id (its
    text is then the token's decoded text, used where only text is at hand)."""

    token: str
    token_id: int | None
    until: tuple[str, ...]

    @classmethod
    def build(cls, think_end_token: str, until: Sequence[str], decode_token: Callable[[int], str]) -> ThinkingSplit:
        if think_end_token.isdigit():  # lm-eval's rule: digits name a token id
            token_id = int(think_end_token)
            return cls(decode_token(token_id), token_id, tuple(until))
        return cls(think_end_token, None, tuple(until))

    def response(self, text: str, token_ids: Sequence[int] | None = None,
                 decode: Callable[[Sequence[int]], str] | None = None) -> str:
        """The response of a completion: after the last think end, cut at the first stop.

        Args:
            text: the completion's text.
            token_ids: its token ids; with `decode`, a token-id think end is found among
                them (a special token's text may not survive decoding).
        Returns:
            The text lm-eval's model would return for this completion.
        """
        if self.token_id is not None and token_ids is not None and decode is not None:
            ends = [i for i, t in enumerate(token_ids) if t == self.token_id]
            if ends:
                text = decode(token_ids[ends[-1] + 1:]).lstrip()
        elif self.token and self.token in text:
            text = text.split(self.token)[-1].lstrip()
        for stop in self.until:
            if stop:
                text = text.split(stop)[0]
        return text

    def reading(self, reader: Callable[[str], str | None]) -> Callable[[str], str | None]:
        """`reader` applied to a completion's response, not to its thinking."""
        return lambda text: reader(self.response(text))
